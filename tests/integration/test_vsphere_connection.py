# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vSphere connection against loopback servers and the lab: timeouts, retries with a new login, thumbprint."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import os
import signal
import socket
import ssl
import threading
import time

import pytest

pytest.importorskip('pyVmomi')

from ansible_collections.migratekit.migration.plugins.module_utils import cbt  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere  # noqa: E402
from ansible_collections.migratekit.migration.tests.integration import helpers  # noqa: E402


def in_thread(func, limit):
    """Run ``func`` in a thread; return (elapsed, result or exception); fail (not hang) after ``limit`` s."""
    box = {}

    def run():
        try:
            box['result'] = func()
        except Exception as exc:  # pylint: disable=broad-except
            box['result'] = exc
    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), 'still waiting after %s s: it hangs' % limit
    return time.monotonic() - started, box['result']


class Proxy(object):
    """A TCP forwarder on 127.0.0.1 to the lab's vCenter that can break its connections or stop listening."""

    def __init__(self, port):
        self.upstream = ('127.0.0.1', port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.pairs = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            server = socket.create_connection(self.upstream)
            self.pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def break_connections(self):
        """Reset every open connection (as a vCenter restart or a network blip does)."""
        for pair in self.pairs:
            for sock in pair:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
                    sock.close()
                except OSError:
                    pass
        self.pairs = []

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread (close alone does not)
        self.listener.close()
        self.break_connections()


def lab_connect(lab, port=None, **kwargs):
    vc = lab.vcenter
    kwargs.setdefault('validate_certs', False)
    return vsphere.connect(vc['hostname'], vc['username'], vc['password'], port or vc['port'], **kwargs)


def test_a_server_that_accepts_and_never_answers_fails_the_login_within_the_timeout():
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(8)  # the kernel accepts the TCP connection; nobody ever answers
    port = silent.getsockname()[1]
    try:
        elapsed, error = in_thread(lambda: vsphere.connect('127.0.0.1', 'u', 'p', port, validate_certs=False,
                                                           timeout=1, retries=2), 30)
    finally:
        silent.close()
    assert isinstance(error, vsphere.ConnectionFailedError), error
    assert 'did not answer within 1 s (request_timeout)' in str(error) and elapsed < 10


def test_a_vcenter_that_stops_answering_fails_the_call_not_the_task_forever(lab_factory):
    lab = lab_factory(vms=1, disks=1)
    conn = lab_connect(lab, timeout=2)
    vm = vsphere.find_vm(conn, path=lab.vm('VM0')['path'])
    pid = lab.pids()['vcsim']
    os.kill(pid, signal.SIGSTOP)
    try:
        elapsed, error = in_thread(lambda: vsphere.fetch_properties(conn, vm, ['name'], operation='read VM'), 60)
        print(error)
        assert isinstance(error, vsphere.ConnectionFailedError), error
        assert 'did not answer RetrievePropertiesEx within 2 s' in str(error) and elapsed < 10
        # the module: the task fails with the message
        vc = lab.vcenter
        started = time.monotonic()
        run = helpers.run_module('vmware_cbt_snapshot', {
            'hostname': vc['hostname'], 'port': vc['port'], 'username': vc['username'], 'password': vc['password'],
            'validate_certs': False, 'request_timeout': 2, 'name': 'VM0', 'state': 'absent'}, timeout=120)
        print(run.result.get('msg'))
        assert run.failed and 'did not answer' in run.result['msg'] and time.monotonic() - started < 60
    finally:
        os.kill(pid, signal.SIGCONT)
    assert vsphere.fetch_properties(conn, vm, ['name'])['name'] == 'VM0'
    conn.close()


def test_an_expired_session_is_logged_in_again(lab_factory):
    lab = lab_factory(vms=1, disks=1)
    conn = lab_connect(lab)
    vm = vsphere.find_vm(conn, path=lab.vm('VM0')['path'])
    conn.content.sessionManager.Logout()  # the session is gone, as after vCenter's session timeout
    assert vsphere.find_vm(conn, path=lab.vm('VM0')['path'])._moId == vm._moId
    assert [r['method'] for r in conn.retried] == ['FindByInventoryPath']
    assert 'NotAuthenticated' in conn.retried[0]['error']
    conn.close()


def test_broken_connections_are_retried_for_reads_with_a_new_login_a_bounded_number_of_times(lab_factory):
    lab = lab_factory(vms=1, disks=1)
    proxy = Proxy(lab.vcenter['port'])
    conn = lab_connect(lab, port=proxy.port, retries=2, retry_delay=0.05)
    vm = vsphere.find_vm(conn, path=lab.vm('VM0')['path'])
    proxy.break_connections()
    assert vsphere.fetch_properties(conn, vm, ['name'])['name'] == 'VM0'
    assert len(conn.retried) == 1
    # a call that changes the VM is not sent again after a broken connection: it may have run
    proxy.break_connections()
    with pytest.raises(vsphere.VSphereError) as info:
        cbt.create_snapshot(conn, vm, 'x', vm_name='VM0')
    assert 'CreateSnapshot_Task failed' in str(info.value) and len(conn.retried) == 1
    # refused every time: bounded, then a message
    proxy.stop()
    elapsed, error = in_thread(lambda: vsphere.fetch_properties(conn, vm, ['name'], operation='read VM'), 60)
    print(error)
    assert isinstance(error, vsphere.ConnectionFailedError) and 'after 2 retries with a new login' in str(error)
    assert len(conn.retried) == 3 and elapsed < 10


def test_the_thumbprint_comes_from_the_verified_certificate_only(lab_factory, monkeypatch):
    lab = lab_factory(vms=1, disks=1)
    vc = lab.vcenter
    with open(vc['ca_file']) as handle:
        pem = handle.read()
    assert ssl.get_server_certificate((vc['hostname'], vc['port'])).strip() == pem.strip()
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    expected = ':'.join(digest[i:i + 2] for i in range(0, 40, 2))
    ca = vc['ca_file']
    monkeypatch.setenv('SSL_CERT_FILE', ca)  # the appliance trusts the vCenter's CA
    verified = lab_connect(lab, validate_certs=True)
    assert verified.thumbprint() == expected
    verified.close()
    unverified = lab_connect(lab, validate_certs=False)
    assert unverified.thumbprint() is None
    unverified.close()
    # the module reports it (the roles hand it to the vddk transport)
    args = {'hostname': vc['hostname'], 'port': vc['port'], 'username': vc['username'], 'password': vc['password'],
            'name': 'VM0', 'state': 'absent'}
    run = helpers.run_module('vmware_cbt_snapshot', dict(args, validate_certs=True), env={'SSL_CERT_FILE': ca})
    assert not run.failed and run.result['vcenter_thumbprint'] == expected
    run = helpers.run_module('vmware_cbt_snapshot', dict(args, validate_certs=False))
    assert not run.failed and run.result['vcenter_thumbprint'] is None
