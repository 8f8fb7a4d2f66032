# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Each module's options are declared once: the module runs its backend's spec, and the backend's
entry point reads exactly the options of that spec (no dead option, no undeclared one)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ast
import inspect
import os
import textwrap

import pytest
import yaml

from ansible_collections.migratekit.migration.plugins.module_utils import cbt, cycle_lock, nbd_copy, nbdkit, power, vma
from ansible_collections.migratekit.migration.plugins.module_utils import preflight, sync_history, vsphere
from ansible_collections.migratekit.migration.plugins.module_utils._argspec import Options
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server import config as nbd_config
from ansible_collections.migratekit.migration.plugins.module_utils._copy import job as copy_job
from ansible_collections.migratekit.migration.plugins.modules import (
    cycle_lock as cycle_lock_module,
    nbd_incremental_copy,
    nbd_disk_server,
    sync_history as sync_history_module,
    sync_state_info,
    vma_progress,
    vma_progress_info,
    vmware_cbt_snapshot,
    vmware_migration_preflight,
    vmware_vm_power,
)

UTILS = os.path.dirname(os.path.abspath(vsphere.__file__))
FRAGMENTS = os.path.join(os.path.dirname(UTILS), 'doc_fragments')

CONNECT = [vsphere.connect_with, vsphere.find_vm_with]

# module, its spec, its entry point, the code that reads the options (the entry point and what it hands them to)
MODULES = [
    (vmware_cbt_snapshot, cbt.CBT_SNAPSHOT_SPEC, cbt.cbt_snapshot_module,
     [cbt.cbt_snapshot_module, cbt.cycle_with, cbt.CbtSnapshot] + CONNECT),
    (vmware_vm_power, power.VM_POWER_SPEC, power.vm_power_module, [power.vm_power_module] + CONNECT),
    (nbd_incremental_copy, nbd_copy.COPY_SPEC, nbd_copy.copy_module,
     [nbd_copy.copy_module, nbd_copy.progress_factory, nbd_copy.progress_file_factory, copy_job.run_copy,
      copy_job._CopyInput, copy_job._commit, copy_job.DiskCopy]),
    (nbd_disk_server, nbdkit.SERVER_SPEC, nbdkit.nbd_disk_server_module,
     [nbdkit.nbd_disk_server_module, nbdkit._server_module, nbdkit.validate, nbd_config._file_config]),
    (vma_progress, vma.PROGRESS_SPEC, vma.post_progress, [vma.post_progress]),
    (vma_progress_info, vma.PROGRESS_INFO_SPEC, vma.read_progress, [vma.read_progress]),
    (vmware_migration_preflight, preflight.PREFLIGHT_SPEC, preflight.preflight_module,
     [preflight.preflight_module, preflight.preflight, preflight.check_vsphere, preflight.check_sources,
      preflight.check_vma] + CONNECT),
    (cycle_lock_module, cycle_lock.LOCK_SPEC, cycle_lock.cycle_lock_module,
     [cycle_lock.cycle_lock_module, cycle_lock.lock, cycle_lock.unlock, cycle_lock._subject]),
    (sync_history_module, sync_history.HISTORY_SPEC, sync_history.sync_history_module,
     [sync_history.sync_history_module]),
    (sync_state_info, sync_history.INFO_SPEC, sync_history.sync_state_info_module,
     [sync_history.sync_state_info_module]),
]
IDS = [module.__name__.rsplit('.', 1)[1] for module, _spec, _entry, _files in MODULES]
OPTIONS_METHODS = set(name for name in dir(Options) if not name.startswith('__'))


def _is_options(node):
    """``options`` or ``self.options``."""
    if isinstance(node, ast.Name):
        return node.id == 'options'
    return (isinstance(node, ast.Attribute) and node.attr == 'options' and isinstance(node.value, ast.Name)
            and node.value.id == 'self')


def options_read(objects):
    """Names the functions and classes ``objects`` read from their options (``options.x``, ``options['x']``)."""
    names = set()
    for obj in objects:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_options(node.value):
                names.add(node.attr)
            elif isinstance(node, ast.Subscript) and _is_options(node.value) and isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names - OPTIONS_METHODS


def documented_options(module):
    doc = yaml.safe_load(module.DOCUMENTATION)
    names = set(doc.get('options') or {})
    for fragment in doc.get('extends_documentation_fragment') or []:
        name, _dot, variant = fragment.split('.', 2)[-1].partition('.')
        with open(os.path.join(FRAGMENTS, name + '.py')) as handle:
            tree = ast.parse(handle.read())
        wanted = variant.upper() if variant else 'DOCUMENTATION'
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and node.targets[0].id == wanted:
                names |= set((yaml.safe_load(node.value.value) or {}).get('options') or {})
    return names


@pytest.mark.parametrize('module, spec, entry, files', MODULES, ids=IDS)
def test_main_runs_the_backend_spec_and_entry(module, spec, entry, files):
    source = inspect.getsource(module.main)
    assert 'run_module(' in source and entry.__name__ in source
    assert len(source.strip().splitlines()) <= 12


@pytest.mark.parametrize('module, spec, entry, files', MODULES, ids=IDS)
def test_entry_point_reads_exactly_the_spec_options(module, spec, entry, files):
    read = options_read(files)
    assert read - set(spec.names) == set(), 'read but not declared'
    unread = set(nbdkit.MODULE_DEFAULTS_ONLY) if module is nbd_disk_server else set()
    assert set(spec.names) - read == unread, 'declared but never read'


@pytest.mark.parametrize('module, spec, entry, files', MODULES, ids=IDS)
def test_documented_options_are_the_spec(module, spec, entry, files):
    assert documented_options(module) == set(spec.names)


def test_options_refuse_unknown_names_and_hide_secrets():
    with pytest.raises(ValueError, match='unknown option hostnam; the options are'):
        power.VM_POWER_SPEC.options(hostnam='vc')
    options = power.VM_POWER_SPEC.options(hostname='vc', password='s3cret')
    assert options.port == 443 and options.state == 'poweredoff'
    assert 's3cret' not in repr(options) and "hostname='vc'" in repr(options)
    with pytest.raises(AttributeError, match="no option 'pasword'"):
        options.pasword
    with pytest.raises(AttributeError):
        options.port = 1
