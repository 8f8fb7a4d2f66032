# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every module says in which release it came: 0.1.0 for the first release's, the next minor for newer ones."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import importlib
import os

import pytest
import yaml

MODULES_DIR = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'plugins', 'modules')
GALAXY = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'galaxy.yml')
# The modules of 0.1.0 (changelogs/fragments: vmware-cbt-snapshot, nbd-incremental-copy, vma-progress,
# roles); nbd_disk_server is the renamed nbdkit_server, so a new name since then.
FIRST_RELEASE = {'vmware_cbt_snapshot', 'nbd_incremental_copy', 'vma_progress', 'vma_progress_info', 'vmware_vm_power'}
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(MODULES_DIR, '*.py'))
                 if not os.path.basename(path).startswith('_'))


def _version(text):
    return tuple(int(part) for part in str(text).split('.'))


@pytest.mark.parametrize('name', MODULES)
def test_version_added(name):
    module = importlib.import_module('ansible_collections.migratekit.migration.plugins.modules.' + name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    with open(GALAXY) as handle:
        current = _version(yaml.safe_load(handle)['version'])
    next_minor = (current[0], current[1] + 1, 0)
    assert 'version_added' in doc, name
    expected = (0, 1, 0) if name in FIRST_RELEASE else next_minor
    assert _version(doc['version_added']) == expected, (name, doc['version_added'])
    for option, spec in doc['options'].items():
        if 'version_added' in spec:  # an option newer than its module
            assert _version(doc['version_added']) < _version(spec['version_added']) <= next_minor, (name, option)
