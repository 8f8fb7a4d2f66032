# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""community.vmware's names work through ansible-playbook against the lab.

One play as a community.vmware user writes it: the connection in
``module_defaults`` for ``group/migratekit.migration.vmware`` with ``user``/``pass``,
the proxy from ``VMWARE_PROXY_HOST``/``VMWARE_PROXY_PORT`` (a real HTTP CONNECT
proxy on loopback in front of the simulator), ``folder`` + ``name``, the power
state ``powered-off``; nbd_disk_server in the same block takes the group's options.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import socket
import textwrap
import threading

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    PYTHON,
    run_playbook,
    write_image,
)

pytest.importorskip('pyVmomi')

from pyVim.connect import Disconnect  # noqa: E402

from ansible_collections.migratekit.migration.plugins.module_utils import vsphere  # noqa: E402


class ConnectProxy(object):
    """An HTTP proxy that only tunnels (CONNECT host:port), recording each tunnel's target."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.tunnels = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        method, target = head.split(b'\r\n', 1)[0].split()[:2]
        if method != b'CONNECT':
            client.sendall(b'HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n')
            client.close()
            return
        host, port = target.decode().rsplit(':', 1)
        self.tunnels.append((host, int(port)))
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/migratekit.migration.vmware:
      hostname: "%(hostname)s"
      port: %(port)d
      user: "%(username)s"
      pass: "%(password)s"
      validate_certs: false
  tasks:
%(tasks)s
"""


def play(tmp_path, vcenter, tasks):
    path = tmp_path / 'community.yml'
    path.write_text(PLAY % dict(vcenter, tasks=textwrap.indent(textwrap.dedent(tasks), '    ')))
    return str(path)


def test_module_defaults_aliases_folder_and_power_state(lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=1, disk_size=1 << 20)
    image = write_image(str(tmp_path / 'disk.img'), 1 << 20)
    socket_path = tmp_path / 'disk.sock'
    playbook = play(tmp_path, lab.vcenter, """\
        - name: Power the VM off hard, found by folder and name
          migratekit.migration.vmware_vm_power:
            folder: /DC0/vm
            name: VM0
            state: powered-off
          register: power
        - name: The NBD server takes the group's options (file transport, no vCenter)
          migratekit.migration.nbd_disk_server:
            socket: "%(socket)s"
            path: "%(image)s"
            format: raw
          register: server
        - name: Stop it
          migratekit.migration.nbd_disk_server:
            socket: "%(socket)s"
            state: stopped
        - name: Show the results
          ansible.builtin.debug:
            msg: "RESULT {{ power.method }} {{ power.power_state }} {{ server.uri }}"
        """ % dict(socket=socket_path, image=image))
    run = run_playbook([playbook, '-i', 'localhost,', '-e', 'ansible_python_interpreter=' + PYTHON])
    assert run.returncode == 0, run.stdout[-6000:]
    assert 'RESULT power_off poweredOff nbd+unix:///?socket=%s' % socket_path in run.stdout
    si = lab.connect()
    try:
        assert si.content.searchIndex.FindByInventoryPath('/DC0/vm/VM0').runtime.powerState == 'poweredOff'
    finally:
        Disconnect(si)
    assert not os.path.exists(str(socket_path))


def test_proxy_from_the_environment(lab, tmp_path):
    """VMWARE_PROXY_HOST/PORT: the API connection is tunnelled through the proxy, or, with a pyVmomi
    whose proxy support is broken (8.0.3.0.1), the task fails saying so before connecting."""
    vcenter = lab.vcenter
    playbook = play(tmp_path, vcenter, """\
        - name: Plan a shutdown through the proxy
          migratekit.migration.vmware_vm_power:
            path: /DC0/vm/VM0
            state: shutdown-guest
          check_mode: true
          register: power
        - name: Show the result
          ansible.builtin.debug:
            msg: "RESULT {{ power.vm.moid }}"
        """)
    proxy = ConnectProxy()
    try:
        run = run_playbook([playbook, '-i', 'localhost,', '-e', 'ansible_python_interpreter=' + PYTHON],
                           env={'VMWARE_PROXY_HOST': '127.0.0.1', 'VMWARE_PROXY_PORT': str(proxy.port)})
    finally:
        proxy.close()
    if vsphere._proxy_is_broken():  # pylint: disable=protected-access
        assert run.returncode != 0 and 'cannot connect through an HTTP proxy (pyvmomi issue 1090' in run.stdout
        assert proxy.tunnels == []
    else:
        assert run.returncode == 0, run.stdout[-6000:]
        assert 'RESULT %s' % lab.vm('VM0')['moid'] in run.stdout
        assert proxy.tunnels and set(proxy.tunnels) == {(vcenter['hostname'], vcenter['port'])}
