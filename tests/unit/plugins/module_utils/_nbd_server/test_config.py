# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A server's configuration from the module options, and its command line (no file, no process)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbdkit
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server import config as config_mod
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.nbd_server_fakes import (
    SECRET, THUMB, validate, vddk_params,
)


def test_vddk_argv_full():
    config = validate(vddk_params(compression='zlib', config='/etc/vddk.cfg', port=443))
    argv = nbdkit.build_argv(config, password_file='/run/mk/c1/.disk-2000.sock.password.x1')
    assert argv == [
        'nbdkit', '--log=stderr', '-U', '/run/mk/c1/disk-2000.sock', '-P', '/run/mk/c1/disk-2000.sock.pid', '-r',
        'vddk', 'libdir=/opt/vddk', 'server=vcenter.example.com', 'port=443', 'user=admin@vsphere.local',
        'password=+/run/mk/c1/.disk-2000.sock.password.x1', 'thumbprint=' + THUMB, 'vm=moref=vm-42',
        'snapshot=snapshot-7', 'file=[datastore1] vm0/vm0.vmdk', 'transports=nbdssl:nbd', 'compression=zlib',
        'config=/etc/vddk.cfg',
    ]


def test_vddk_argv_never_holds_the_password():
    config = validate(vddk_params())
    argv = nbdkit.build_argv(config, password_file='/x/pw')
    assert not any(SECRET in arg for arg in argv)
    assert 'password=+/x/pw' in argv
    # minimal: no optional parameters
    assert not any(arg.startswith(('compression=', 'config=', 'single-link', 'port=')) for arg in argv)


def test_vddk_is_always_readonly_and_needs_a_password_file():
    config = validate(vddk_params())
    assert '-r' in nbdkit.build_argv(config, '/x/pw')
    with pytest.raises(nbdkit.NbdkitConfigError):
        nbdkit.build_argv(config, None)
    with pytest.raises(nbdkit.NbdkitConfigError, match='readonly'):
        validate(vddk_params(readonly=False))


def test_vddk_moref_forms_and_transports():
    config = validate(vddk_params(vm_moref='moref=vm-7', snapshot_moref=None, transports='hotadd:nbd'))
    argv = nbdkit.build_argv(config, '/x/pw')
    assert 'vm=moref=vm-7' in argv and 'transports=hotadd:nbd' in argv
    assert not any(arg.startswith('snapshot=') for arg in argv)


@pytest.mark.parametrize('over, needle', [
    (dict(password=None), 'password'),
    (dict(thumbprint='nope'), 'thumbprint'),
    (dict(vm_moref='vm 42'), 'vm_moref'),
    (dict(snapshot_moref='a=b'), 'snapshot_moref'),
    (dict(backing_file='vm0/vm0.vmdk'), 'backing_file'),
    (dict(compression='lzma'), 'compression'),
    (dict(socket='relative.sock'), 'socket'),
    (dict(socket='/' + 'x' * 120), 'socket'),
    (dict(proxy_host='proxy.example.com', proxy_port=3128),
     'proxy_host: the vddk transport cannot go through an HTTP proxy (got proxy.example.com:3128)'),
])
def test_vddk_bad_input_names_the_parameter(over, needle):
    with pytest.raises(nbdkit.NbdkitConfigError) as info:
        validate(vddk_params(**over))
    assert needle in str(info.value)
    assert SECRET not in str(info.value)


def test_file_argv_readonly_default_and_filters():
    config = validate(dict(socket='/s/d.sock', path='/img/disk.img', format='raw', filters=[
        {'name': 'error', 'params': {'error-rate': '10%', 'error': 'EIO'}},
        {'name': 'delay', 'params': {'rdelay': '2ms'}},
    ]))
    assert nbdkit.build_argv(config) == [
        'nbdkit', '--log=stderr', '-U', '/s/d.sock', '-P', '/s/d.sock.pid', '-r',
        '--filter=error', '--filter=delay', 'file', 'file=/img/disk.img',
        'error=EIO', 'error-rate=10%', 'rdelay=2ms',
    ]


def test_file_argv_writable_pidfile_threads():
    config = validate(dict(socket='/s/d.sock', path='/img/disk.img', format='raw', readonly=False,
                                  pidfile='/p/x.pid', threads=4, nbdkit_path='/usr/sbin/nbdkit'))
    argv = nbdkit.build_argv(config)
    assert argv[0] == '/usr/sbin/nbdkit' and '-r' not in argv
    assert argv[argv.index('-P') + 1] == '/p/x.pid' and argv[argv.index('-t') + 1] == '4'


@pytest.mark.parametrize('filters', [[{'params': {}}], [{'name': 'a b'}], [{'name': 'rate', 'params': 'x'}],
                                     [{'name': 'rate', 'params': {'a b': 1}}]])
def test_bad_filters(filters):
    with pytest.raises(nbdkit.NbdkitConfigError, match='filters'):
        validate(dict(socket='/s/d.sock', path='/i', format='raw', filters=filters))


def test_file_needs_path():
    with pytest.raises(nbdkit.NbdkitConfigError, match='path'):
        validate(dict(socket='/s/d.sock'))


def test_uri_quotes_the_socket_path():
    assert nbdkit.socket_uri('/a/b.sock') == 'nbd+unix:///?socket=/a/b.sock'
    assert nbdkit.socket_uri('/a b/c&d.sock') == 'nbd+unix:///?socket=/a%20b/c%26d.sock'


def test_comparable_argv_masks_the_password_file():
    assert nbdkit.comparable_argv(['vddk', 'password=+/tmp/x1']) == ['vddk', 'password=+*']


def test_vddk_reads_the_whole_chain_of_the_snapshot_backing():
    """file= is the snapshot's backing descriptor, never opened as a single link (single_link is gone)."""
    argv = nbdkit.build_argv(validate(vddk_params()), password_file='/x/pw')
    assert 'file=[datastore1] vm0/vm0.vmdk' in argv and not any('single-link' in arg for arg in argv)
    assert 'single_link' not in nbdkit.SERVER_SPEC.argument_spec


def test_reexec_comparable_leaves_out_what_the_vddk_reexec_changes():
    built = ['nbdkit', '-U', '/s/v.sock', 'vddk', 'user=u', 'password=+/s/.v.sock.password.x', 'file=[ds] a.vmdk']
    reexeced = ['nbdkit', '-U', '/s/v.sock', 'vddk', 'user=u', 'file=[ds] a.vmdk', 'password=-3', 'reexeced_=']
    assert nbdkit.comparable_argv(reexeced) != nbdkit.comparable_argv(built)
    assert config_mod.reexec_comparable(reexeced) == config_mod.reexec_comparable(built)
    assert config_mod.reexec_comparable(reexeced) != config_mod.reexec_comparable(built[:-1] + ['file=[ds] b.vmdk'])
