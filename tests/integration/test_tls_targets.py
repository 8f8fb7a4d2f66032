# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Remote targets over TLS: nbds:// with a pre-shared key, against nbdkit --tls=require on 127.0.0.1.

The copy module writes the whole disk through TLS; a wrong key, or a plain nbd:// URI to a server that
requires TLS, fails before any write with a message that says what to check; the key itself never appears
in the result or the output (only the path of its file, inside the URI).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import binascii
import os
import shutil
import socket
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    ANSIBLE,
    MiB,
    compare,
    digest,
    garbage,
    patterned_chunks,
    run_module,
    write_image,
)

pytest.importorskip('nbd')
pytestmark = pytest.mark.skipif(not (os.path.exists(ANSIBLE) and shutil.which('nbdkit')),
                                reason='needs the venv ansible and nbdkit')
SIZE = 16 * MiB
USER = 'migratekit'


def psk_file(path):
    key = binascii.hexlify(os.urandom(32)).decode()
    with open(path, 'w') as handle:
        handle.write('%s:%s\n' % (USER, key))
    os.chmod(path, 0o600)
    return key


def free_port():
    probe = socket.socket()
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def tls_target(tmp_path):
    """A target image served by nbdkit over TCP on 127.0.0.1, TLS required, PSK file made here."""
    image = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    keys = str(tmp_path / 'server.psk')
    key = psk_file(keys)
    port = free_port()
    pidfile = str(tmp_path / 'tls.pid')
    proc = subprocess.Popen(['nbdkit', '--exit-with-parent', '-f', '-i', '127.0.0.1', '-p', str(port), '-P', pidfile,
                             '--tls=require', '--tls-psk=' + keys, 'file', image], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(pidfile):
        assert proc.poll() is None and time.monotonic() < deadline, 'nbdkit with TLS did not start'
        time.sleep(0.02)
    client_keys = str(tmp_path / 'client.psk')
    shutil.copy(keys, client_keys)
    os.chmod(client_keys, 0o600)
    try:
        yield {'image': image, 'port': port, 'key': key, 'client_keys': client_keys,
               'uri': 'nbds://%s@127.0.0.1:%d/?tls-psk-file=%s' % (USER, port, client_keys)}
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def source(tmp_path, nbdkit):
    image = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 7, count=10))
    return image, nbdkit('src', 'file', image, read_only=True)


def copy(source_server, target_uri, tmp_path):
    return run_module('nbd_incremental_copy', {
        'source': source_server.uri, 'target': target_uri, 'sync_type': 'full', 'connections': 1,
        'state_file': str(tmp_path / 'state.json'), 'vm_uuid': 'vm-tls', 'disk_key': 2000, 'change_id': '52 aa/1'})


def test_a_full_copy_to_an_nbds_target_with_a_psk(tls_target, source, tmp_path):
    image, server = source
    run = copy(server, tls_target['uri'], tmp_path)
    assert not run.failed, run.stdout
    compare(image, tls_target['image'])   # asserts qemu-img compare says identical
    assert tls_target['key'] not in run.stdout + run.stderr


def test_a_wrong_key_fails_before_any_write_and_says_what_to_check(tls_target, source, tmp_path):
    _image, server = source
    before = digest(tls_target['image'])
    wrong = str(tmp_path / 'wrong.psk')
    wrong_key = psk_file(wrong)
    run = copy(server, tls_target['uri'].replace(tls_target['client_keys'], wrong), tmp_path)
    assert run.failed
    assert 'cannot connect to the target' in run.result['msg'] and 'TLS handshake failed' in run.result['msg']
    assert 'tls-psk-file' in run.result['msg']
    assert digest(tls_target['image']) == before
    assert not os.path.exists(str(tmp_path / 'state.json'))
    for key in (tls_target['key'], wrong_key):
        assert key not in run.stdout + run.stderr


def test_a_plain_uri_to_a_server_that_requires_tls_is_refused_with_the_way_out(tls_target, source, tmp_path):
    _image, server = source
    before = digest(tls_target['image'])
    run = copy(server, 'nbd://127.0.0.1:%d/' % tls_target['port'], tmp_path)
    assert run.failed
    assert 'the server requires TLS: use an nbds://' in run.result['msg']
    assert digest(tls_target['image']) == before
