# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMDK chain check of the file transport, and the qemu-nbd command line."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbdkit
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.nbd_server_fakes import validate

FLAT = '''# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="%(type)s"

# Extent description
RW 8192 %(kind)s "%(extent)s" 0
'''

needs_qemu = pytest.mark.skipif(shutil.which('qemu-img') is None, reason='qemu-img is not installed')


def descriptor(directory, name='vm.vmdk', type='monolithicFlat', kind='FLAT', extent='vm-flat.vmdk', extra=''):
    path = directory / name
    path.write_text(FLAT % dict(type=type, kind=kind, extent=extent) + extra)
    return str(path)


def test_flat_descriptor_and_its_extent(tmp_path):
    path = descriptor(tmp_path)
    (tmp_path / 'vm-flat.vmdk').write_bytes(b'')
    assert nbdkit.check_chain(path, str(tmp_path)) == [path, str(tmp_path / 'vm-flat.vmdk')]


@pytest.mark.parametrize('make, needle', [
    (descriptor, 'extent %s/vm-flat.vmdk, which is missing'),
    (lambda d: descriptor(d, type='vmfsPassthroughRawDeviceMap', kind='VMFSRDM', extent='vm-rdmp.vmdk'),
     'raw device mapping'),
    (lambda d: (d / 'vm.vmdk').write_bytes(b'\x00' * 512) and str(d / 'vm.vmdk'), 'is not a VMDK descriptor'),
    (lambda d: str(d / 'nothere.vmdk'), 'cannot be read'),
    (lambda d: descriptor(d, extent='../outside-flat.vmdk'), 'outside the datastore mount'),
])
def test_unreadable_descriptors_fail_naming_the_file(tmp_path, make, needle):
    ds = tmp_path / 'ds'
    ds.mkdir()
    (tmp_path / 'outside-flat.vmdk').write_bytes(b'')
    path = make(ds)
    with pytest.raises(nbdkit.NbdkitConfigError) as info:
        nbdkit.check_chain(path, str(ds), disk='Hard disk 1')
    message = str(info.value)
    assert needle.replace('%s', str(ds)) in message and 'Hard disk 1' in message and 'path' in message


def test_delta_without_its_parent_or_with_a_parent_outside(tmp_path):
    ds = tmp_path / 'ds'
    ds.mkdir()
    extra = 'parentFileNameHint="vm.vmdk"\n'
    child = descriptor(ds, name='vm-000001.vmdk', type='vmfsSparse', kind='VMFSSPARSE', extent='vm-000001-delta.vmdk',
                       extra=extra)
    text = open(child).read().replace('parentCID=ffffffff', 'parentCID=12345678')
    open(child, 'w').write(text)
    (ds / 'vm-000001-delta.vmdk').write_bytes(b'')
    with pytest.raises(nbdkit.NbdkitConfigError, match='parent .*vm.vmdk, which is missing'):
        nbdkit.check_chain(child, str(ds))
    open(child, 'w').write(text.replace('"vm.vmdk"', '"/vmfs/volumes/other/vm.vmdk"'))
    with pytest.raises(nbdkit.NbdkitConfigError, match='parent /vmfs/volumes/other/vm.vmdk outside the datastore'):
        nbdkit.check_chain(child, str(ds))


@needs_qemu
def test_a_qemu_chain_is_checked_through_the_sparse_child(tmp_path):
    base, child = str(tmp_path / 'vm.vmdk'), str(tmp_path / 'vm-000001.vmdk')
    subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', base, '1M'])
    subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', 'vm.vmdk', '-F', 'vmdk', child])
    assert nbdkit.check_chain(child, str(tmp_path)) == [child, base, str(tmp_path / 'vm-flat.vmdk')]
    os.remove(str(tmp_path / 'vm-flat.vmdk'))
    with pytest.raises(nbdkit.NbdkitConfigError, match='vm-flat.vmdk, which is missing'):
        nbdkit.check_chain(child, str(tmp_path))


def test_qemu_nbd_argv_and_refusals(tmp_path):
    path = descriptor(tmp_path)
    (tmp_path / 'vm-flat.vmdk').write_bytes(b'')
    config = validate(dict(socket='/s/d.sock', path=path, datastore_dir=str(tmp_path), connections=2, aio='threads'))
    assert nbdkit.server_program(config) == 'qemu-nbd'
    assert nbdkit.build_argv(config) == [
        'qemu-nbd', '--read-only', '--persistent', '--shared=2', '--socket=/s/d.sock', '--pid-file=/s/d.sock.pid',
        '--fork', '--format=vmdk', path]
    throttled = nbdkit.build_argv(validate(dict(socket='/s/d.sock', path=path, read_bps_limit=65536)))
    assert 'throttle-group,id=migratekit0,x-bps-read=65536' in throttled
    assert throttled[-1].endswith('file.file.filename=' + path)
    for over, needle in ((dict(readonly=False), 'readonly'), (dict(filters=[{'name': 'delay'}]), 'filters'),
                         (dict(threads=2), 'threads'), (dict(connections=0), 'connections')):
        with pytest.raises(nbdkit.NbdkitConfigError, match=needle):
            validate(dict(dict(socket='/s/d.sock', path=path), **over))
    assert nbdkit.is_our_server(nbdkit.build_argv(config), '/s/d.sock')
    assert not nbdkit.is_our_server(nbdkit.build_argv(config), '/s/other.sock')


def test_aio_threads_by_default_and_auto_follows_the_kernel(tmp_path, monkeypatch):
    path = descriptor(tmp_path)
    (tmp_path / 'vm-flat.vmdk').write_bytes(b'')
    from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server import config as nbd_config
    for usable, expected in ((True, ['--aio=io_uring']), (False, [])):
        monkeypatch.setattr(nbd_config, 'io_uring_usable', lambda: usable)
        argv = nbdkit.build_argv(validate(dict(socket='/s/d.sock', path=path, aio='auto')))
        assert [arg for arg in argv if arg.startswith('--aio')] == expected
    # the default: qemu's thread pool, which works everywhere (io_uring hung qemu-nbd on a kernel that takes it)
    assert not [arg for arg in nbdkit.build_argv(validate(dict(socket='/s/d.sock', path=path)))
                if arg.startswith('--aio')]
    assert '--aio=io_uring' in nbdkit.build_argv(validate(dict(socket='/s/d.sock', path=path, aio='io_uring')))
    assert isinstance(nbd_config.io_uring_usable(), bool)
