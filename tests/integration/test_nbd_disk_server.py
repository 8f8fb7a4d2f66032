# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nbd_disk_server for real: Ansible runs the module, qemu-nbd (VMDK chains) and nbdkit (raw) serve, libnbd reads."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.migratekit.migration.tests.integration import helpers

nbd = pytest.importorskip('nbd')

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')


def run_module(args, check=False, diff=False):
    """Run nbd_disk_server through ansible (ad hoc, localhost); return (failed, result)."""
    run = helpers.run_module('nbd_disk_server', args, check=check, diff=diff)
    return run.failed, run.result


def live_nbdkit(socket_path):
    """Live (non-zombie) nbdkit processes serving ``socket_path``."""
    return [pid for pid, _pgid, argv in helpers.live_processes()
            if argv and b'nbdkit' in argv[0] and socket_path.encode() in argv]


def read_all(uri, size):
    handle = nbd.NBD()
    handle.connect_uri(uri)
    try:
        assert handle.get_size() == size
        assert handle.is_read_only()
        data = b''
        while len(data) < size:
            data += handle.pread(min(1 << 20, size - len(data)), len(data))
        handle.shutdown()
        return data
    finally:
        del handle


@pytest.fixture
def image(tmp_path):
    path = tmp_path / 'disk.img'
    data = os.urandom(1 << 20) + b'\0' * (2 << 20) + os.urandom(512 * 1024 + 4096)
    path.write_bytes(data)
    return str(path), data


def test_file_server_lifecycle(tmp_path, image):
    path, data = image
    sock = str(tmp_path / 'run' / 'disk-2000.sock')
    args = {'socket': sock, 'path': path, 'format': 'raw'}

    failed, res = run_module(args, check=True)
    assert not failed and res['changed'] and res['pid'] is None
    assert not live_nbdkit(sock)

    failed, res = run_module(args, diff=True)
    assert not failed and res['changed'] is True, res
    pid = res['pid']
    assert res['uri'] == 'nbd+unix:///?socket=' + sock and res['size_bytes'] == len(data)
    assert oct(os.stat(os.path.dirname(sock)).st_mode & 0o777) == oct(0o700)
    assert live_nbdkit(sock) == [pid]
    assert read_all(res['uri'], len(data)) == data

    failed, res = run_module(args)
    assert not failed and res['changed'] is False and res['pid'] == pid

    # A different command line (a filter) restarts the server.
    failed, res = run_module(dict(args, filters=[{'name': 'delay', 'params': {'rdelay': '1ms'}}]))
    assert not failed and res['changed'] and res['restarted'] and res['pid'] != pid
    assert live_nbdkit(sock) == [res['pid']]
    assert read_all(res['uri'], len(data)) == data

    failed, res = run_module({'socket': sock, 'state': 'stopped'}, check=True)
    assert not failed and res['changed'] and live_nbdkit(sock)

    failed, res = run_module({'socket': sock, 'state': 'stopped'})
    assert not failed and res['changed'] is True
    assert not live_nbdkit(sock)
    assert os.listdir(os.path.dirname(sock)) == []

    failed, res = run_module({'socket': sock, 'state': 'stopped'})
    assert not failed and res['changed'] is False


def test_writable_file_server(tmp_path):
    path = tmp_path / 'target.img'
    path.write_bytes(b'\0' * (1 << 20))
    sock = str(tmp_path / 'run' / 't.sock')
    failed, res = run_module({'socket': sock, 'path': str(path), 'format': 'raw', 'readonly': False})
    assert not failed, res
    try:
        handle = nbd.NBD()
        handle.connect_uri(res['uri'])
        assert not handle.is_read_only()
        handle.pwrite(b'x' * 4096, 8192)
        handle.flush()
        handle.shutdown()
        del handle
    finally:
        run_module({'socket': sock, 'state': 'stopped'})
    assert path.read_bytes()[8192:8192 + 4096] == b'x' * 4096
    assert not live_nbdkit(sock)


def test_start_failure_reports_nbdkit_message_and_leaves_nothing(tmp_path):
    sock = str(tmp_path / 'run' / 'x.sock')
    failed, res = run_module({'socket': sock, 'path': str(tmp_path / 'missing.img'), 'format': 'raw'})
    assert failed
    assert 'cannot start the server on %s' % sock in res['msg'] and 'missing.img' in res['msg']
    assert not live_nbdkit(sock)
    assert sorted(os.listdir(os.path.dirname(sock))) in ([], ['x.sock.log'])


def test_shared_socket_directory_is_refused(tmp_path, image):
    shared = tmp_path / 'shared'
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    failed, res = run_module({'socket': str(shared / 'x.sock'), 'path': image[0], 'format': 'raw'})
    assert failed and 'private' in res['msg']
    assert not live_nbdkit(str(shared / 'x.sock'))


def test_vddk_failure_removes_the_password_file(tmp_path):
    """No VDDK here: nbdkit fails to load the plugin; the secret file must be gone, the secret unseen."""
    secret = 'vddk-integration-secret-42'
    run_dir = tmp_path / 'run'
    sock = str(run_dir / 'v.sock')
    failed, res = run_module({'socket': sock, 'transport': 'vddk', 'server': '127.0.0.1', 'username': 'u',
                              'password': secret, 'thumbprint': ':'.join(['AA'] * 20), 'vm_moref': 'vm-1',
                              'snapshot_moref': 'snapshot-1', 'backing_file': '[ds] vm/vm.vmdk', 'timeout': 20})
    assert failed
    assert secret not in json.dumps(res)
    leftovers = [n for n in os.listdir(str(run_dir)) if '.password.' in n]
    assert leftovers == []
    for name in os.listdir(str(run_dir)):
        assert secret not in (run_dir / name).read_text(errors='replace')


def test_nbdkit_reads_password_files_before_serving(tmp_path):
    """What makes removing the password file right after startup safe.

    nbdkit reads ``password=+FILE`` while parsing its parameters, before it
    binds the socket: with a missing file it exits 1 and never serves. The
    curl plugin reads passwords with the same nbdkit_read_password() as the
    vddk plugin (which needs VMware's VDDK, absent here).
    """
    if subprocess.run(['nbdkit', 'curl', '--dump-plugin'], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, check=False).returncode != 0:
        pytest.skip('nbdkit curl plugin not installed')
    sock = str(tmp_path / 'c.sock')
    proc = subprocess.run(['nbdkit', '-U', sock, 'curl', 'url=http://127.0.0.1:9/x',
                           'password=+' + str(tmp_path / 'absent')],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=30, check=False)
    assert proc.returncode == 1 and 'absent' in proc.stderr
    assert not os.path.exists(sock)


def test_stop_every_server_in_a_directory(tmp_path, image):
    run_dir = tmp_path / 'run'
    socks = [str(run_dir / ('%d.sock' % key)) for key in (2000, 2001)]
    for sock in socks:
        failed, res = run_module({'socket': sock, 'path': image[0], 'format': 'raw'})
        assert not failed, res
    assert all(live_nbdkit(sock) for sock in socks)
    (run_dir / 'stale.sock.pid').write_text(u'999999999\n')
    failed, res = run_module({'socket_dir': str(run_dir), 'state': 'stopped'}, check=True)
    assert not failed and res['changed'] and all(live_nbdkit(sock) for sock in socks)
    failed, res = run_module({'socket_dir': str(run_dir), 'state': 'stopped'})
    assert not failed and res['changed'], res
    assert sorted(r['socket'] for r in res['stopped']) == sorted(socks + [str(run_dir / 'stale.sock')])
    assert not any(live_nbdkit(sock) for sock in socks)
    assert os.listdir(str(run_dir)) == []
    failed, res = run_module({'socket_dir': str(run_dir), 'state': 'stopped'})
    assert not failed and res['changed'] is False
    failed, res = run_module({'socket_dir': str(tmp_path / 'missing'), 'state': 'stopped'})
    assert not failed and res['changed'] is False
    failed, res = run_module({'socket_dir': str(run_dir), 'state': 'started'})
    assert failed and 'only for state=stopped' in res['msg']


FAKE_VDDK_NBDKIT = r'''#!/bin/bash
# Stand-in for "nbdkit ... vddk ... password=+FILE": record what nbdkit would
# read from the password file, then serve 1 MiB of memory on the same socket.
set -eu
marker=%(marker)s
while [ $# -gt 0 ]; do
  case "$1" in
    -U) sock=$2; shift ;;
    -P) pidfile=$2; shift ;;
    password=+*) pwfile=${1#password=+} ;;
  esac
  shift
done
stat -c %%a "$pwfile" > "$marker.mode"
cat "$pwfile" > "$marker.content"
exec nbdkit --log=stderr -U "$sock" -P "$pidfile" -r memory 1M
'''


def test_vddk_start_reads_the_password_file_then_removes_it(tmp_path):
    """The vddk start path end to end, with a stand-in for the proprietary plugin."""
    secret = 'p@ss word; $(not a command)'
    marker = str(tmp_path / 'seen')
    fake = tmp_path / 'nbdkit-vddk-standin'
    fake.write_text(FAKE_VDDK_NBDKIT % {'marker': marker})
    fake.chmod(0o755)
    sock = str(tmp_path / 'run' / 'v.sock')
    args = {'socket': sock, 'transport': 'vddk', 'server': 'vcenter.example.com', 'username': 'u',
            'password': secret, 'thumbprint': ':'.join(['AA'] * 20), 'vm_moref': 'vm-7',
            'snapshot_moref': 'snapshot-9', 'backing_file': '[ds1] vm/vm.vmdk', 'nbdkit_path': str(fake)}
    failed, res = run_module(args)
    try:
        assert not failed, res
        with open(marker + '.content') as handle:
            assert handle.read() == secret
        with open(marker + '.mode') as handle:
            assert handle.read().strip() == '600'
        assert secret not in json.dumps(res)
        assert [n for n in os.listdir(os.path.dirname(sock)) if '.password.' in n] == []
        assert res['size_bytes'] == 1 << 20 and live_nbdkit(sock)
        argv = res['argv']
        assert argv[0] == str(fake) and 'vm=moref=vm-7' in argv and 'snapshot=snapshot-9' in argv
        assert 'file=[ds1] vm/vm.vmdk' in argv and '-r' in argv
        assert any(a.startswith('password=+' + os.path.dirname(sock) + '/.v.sock.password.') for a in argv)
    finally:
        os.remove(marker + '.content')
        run_module({'socket': sock, 'state': 'stopped'})
    assert not live_nbdkit(sock)
    assert os.listdir(os.path.dirname(sock)) == []


# Stand-in for nbdkit's vddk plugin re-exec (nbdkit plugins/vddk/reexec.c): when
# LD_LIBRARY_PATH lacks libdir, the plugin re-executes nbdkit from
# /proc/self/cmdline, with every password= parameter replaced by password=-FD
# (an unlinked temporary file holding the password) and reexeced_=<the old
# LD_LIBRARY_PATH> appended. The process that then serves (and whose pid is in
# the pidfile) has that command line, not the one that was run.
REEXEC_VDDK_NBDKIT = r"""#!/bin/bash
set -eu
case " $* " in
  *" reexeced_="*) ;;
  *)
    args=()
    for arg in "$@"; do
      case "$arg" in
        password=+*) pwfile=${arg#password=+} ;;
        password=*) ;;
        *) args+=("$arg") ;;
      esac
    done
    tmp=$(mktemp)
    cat "$pwfile" > "$tmp"
    exec 3<"$tmp"
    rm -f "$tmp"
    exec -a nbdkit /bin/bash "$0" "${args[@]}" password=-3 reexeced_=
    ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    -U) sock=$2; shift ;;
    -P) pidfile=$2; shift ;;
  esac
  shift
done
# become the server in the background, as nbdkit does (fork, then the pidfile)
(
  nbdkit --exit-with-parent -f -U "$sock" -r memory 1M &
  child=$!
  trap 'kill $child; exit 0' TERM
  echo $BASHPID > "$pidfile"
  wait
) </dev/null >/dev/null &
"""


def test_a_reexeced_vddk_server_is_recognised_by_its_socket_and_pidfile(tmp_path):
    """A second run keeps the server the vddk plugin re-executed (another argv): socket, pidfile and record."""
    fake = tmp_path / 'nbdkit-reexec'
    fake.write_text(REEXEC_VDDK_NBDKIT)
    fake.chmod(0o755)
    sock = str(tmp_path / 'run' / 'v.sock')
    args = {'socket': sock, 'transport': 'vddk', 'server': 'vcenter.example.com', 'username': 'u',
            'password': 'secret', 'thumbprint': ':'.join(['AA'] * 20), 'vm_moref': 'vm-7',
            'snapshot_moref': 'snapshot-9', 'backing_file': '[ds1] vm/vm.vmdk', 'nbdkit_path': str(fake)}
    failed, first = run_module(args)
    try:
        assert not failed, first
        assert first['changed'] and first['size_bytes'] == 1 << 20
        with open('/proc/%d/cmdline' % first['pid'], 'rb') as handle:
            live = handle.read().split(b'\0')
        assert b'reexeced_=' in live and b'password=-3' in live and sock.encode() in live  # the re-exec happened
        failed, second = run_module(args)
        assert not failed, second
        assert second['changed'] is False and second['restarted'] is False and second['pid'] == first['pid']
        # what it serves changed (another snapshot): that one is restarted
        failed, third = run_module(dict(args, snapshot_moref='snapshot-10'))
        assert not failed, third
        assert third['changed'] and third['restarted'] and third['pid'] != first['pid']
    finally:
        run_module({'socket': sock, 'state': 'stopped'})
    assert not live_nbdkit(sock)
    assert os.listdir(os.path.dirname(sock)) == []


# ---------------------------------------------------------------- VMDK chains through qemu-nbd

def live_qemu_nbd(socket_path):
    return [pid for pid, _pgid, argv in helpers.live_processes()
            if argv and b'qemu-nbd' in argv[0] and ('--socket=' + socket_path).encode() in argv]


@pytest.fixture
def chain(tmp_path):
    """A datastore directory with vm.vmdk (flat, data) <- vm-000001.vmdk (a delta with more data): (ds, top, raw)."""
    ds = tmp_path / 'ds'
    (ds / 'vm').mkdir(parents=True)
    base, top = str(ds / 'vm' / 'vm.vmdk'), str(ds / 'vm' / 'vm-000001.vmdk')
    size = 4 << 20
    subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', base, str(size)])
    first, second = os.urandom(65536), os.urandom(65536)
    for data, offset, image in ((first, 0, base), (second, 2 << 20, None)):
        if image is None:
            subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', 'vm.vmdk', '-F', 'vmdk', top])
            image = top
        src = str(tmp_path / 'w')
        with open(src, 'wb') as handle:
            handle.write(data)
        subprocess.check_call(['qemu-io', '-f', 'vmdk', '-c', 'write -q -s %s %d %d' % (src, offset, len(data)), image])
    raw = bytearray(size)
    raw[0:65536] = first
    raw[2 << 20:(2 << 20) + 65536] = second
    return str(ds), top, bytes(raw)


@pytest.mark.skipif(shutil.which('qemu-nbd') is None, reason='qemu-nbd is not installed')
def test_vmdk_chain_lifecycle(tmp_path, chain):
    ds, top, raw = chain
    sock = str(tmp_path / 'run' / 'disk-2000.sock')
    args = {'socket': sock, 'path': top, 'datastore_dir': ds, 'connections': 2}
    failed, res = run_module(args, check=True)
    assert not failed and res['changed'] and res['pid'] is None and not live_qemu_nbd(sock)
    failed, res = run_module(args, diff=True)
    assert not failed and res['changed'] is True and res['server'] == 'qemu-nbd', res
    assert res['chain'][:2] == [top, os.path.join(ds, 'vm', 'vm.vmdk')]
    assert oct(os.stat(os.path.dirname(sock)).st_mode & 0o777) == oct(0o700)
    pid = res['pid']
    assert live_qemu_nbd(sock) == [pid] and res['size_bytes'] == len(raw)
    assert read_all(res['uri'], len(raw)) == raw
    # block status and multi-conn, as the copy uses them
    handle = nbd.NBD()
    handle.add_meta_context('base:allocation')
    handle.connect_uri(res['uri'])
    assert handle.can_meta_context('base:allocation') and handle.can_multi_conn()
    handle.shutdown()
    # idempotent; another limit restarts it
    failed, res = run_module(args)
    assert not failed and res['changed'] is False and res['pid'] == pid
    failed, res = run_module(dict(args, read_bps_limit=1 << 30))
    assert not failed and res['changed'] and res['restarted'] and res['pid'] != pid
    assert live_qemu_nbd(sock) == [res['pid']]
    # stop; then the directory sweep finds nothing left
    failed, res = run_module({'socket': sock, 'state': 'stopped'})
    assert not failed and res['changed'] and not live_qemu_nbd(sock)
    assert os.listdir(os.path.dirname(sock)) == []
    failed, res = run_module({'socket_dir': os.path.dirname(sock), 'state': 'stopped'})
    assert not failed and res['changed'] is False


@pytest.mark.skipif(shutil.which('qemu-nbd') is None, reason='qemu-nbd is not installed')
def test_a_chain_the_transport_cannot_read_fails_before_anything_starts(tmp_path, chain):
    ds, top, _raw = chain
    run = tmp_path / 'run'
    os.remove(os.path.join(ds, 'vm', 'vm-flat.vmdk'))
    failed, res = run_module({'socket': str(run / 'd.sock'), 'path': top, 'datastore_dir': ds,
                              'disk': 'VM0 Hard disk 1 (key 2000)'})
    assert failed and 'cannot serve VM0 Hard disk 1 (key 2000) (%s)' % top in res['msg'], res['msg']
    assert 'vm-flat.vmdk, which is missing' in res['msg'] and os.path.join(ds, 'vm', 'vm.vmdk names') in res['msg']
    assert not run.exists(), 'nothing was created'
    failed, res = run_module({'socket': str(run / 'd.sock'), 'path': top, 'datastore_dir': str(tmp_path / 'other')})
    assert failed and 'outside the datastore mount' in res['msg']
