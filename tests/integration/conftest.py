# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for integration tests against the lab (tests/lab).

    def test_x(lab):            # session lab: 1 VM x 2 disks of 64 MiB
        lab.info                 # lab.json (docs/contracts.md)
        lab.write("VM0", 2000, offset=0, length=4096)

    def test_y(lab_factory):    # a fresh lab of another shape, stopped after the test
        big = lab_factory(vms=2, disks=3, disk_size=128 << 20)

    def test_z(lab, lab_si):    # pyvmomi ServiceInstance logged in to the session lab
        vm = lab_si.content.searchIndex.FindByInventoryPath("/DC0/vm/VM0")

    def test_n(nbdkit):         # nbdkit servers on unix sockets, stopped after the test
        src = nbdkit('src', 'file', path, read_only=True)     # src.uri

    def test_v(vma_receivers):  # the lab's VMA receiver in process, stopped after the test
        receiver = vma_receivers(token='t')                   # receiver.url, receiver.state

Helpers that are not fixtures (running ansible, processes, images) are in
helpers.py next to this file.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import sys

import pytest

LAB_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lab')
if LAB_PATH not in sys.path:
    sys.path.insert(0, LAB_PATH)

from lab import Lab  # noqa: E402
from vma_receiver import VMAReceiver  # noqa: E402

from ansible_collections.migratekit.migration.tests.integration.helpers import NbdkitProcess  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope='session')
def lab(tmp_path_factory):
    """The shared lab: 1 VM (VM0) x 2 disks (2000, 2001) of 64 MiB, torn down at session end."""
    the_lab = Lab.up(str(tmp_path_factory.mktemp('lab')), vms=1, disks=2, disk_size=64 * MiB,
                     watch_pid=os.getpid())
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def lab_factory(tmp_path_factory):
    """make(vms=1, disks=1, disk_size=64 MiB, **Lab.up kwargs) -> a new Lab, stopped after the test."""
    labs = []

    def make(vms=1, disks=1, disk_size=64 * MiB, **kwargs):
        kwargs.setdefault('watch_pid', os.getpid())
        new = Lab.up(str(tmp_path_factory.mktemp('lab')), vms=vms, disks=disks, disk_size=disk_size, **kwargs)
        labs.append(new)
        return new

    try:
        yield make
    finally:
        for one in labs:
            one.down()


@pytest.fixture(scope='session')
def lab_si(lab):
    """A pyvmomi ServiceInstance logged in to the session lab (TLS, certificate not verified)."""
    pytest.importorskip('pyVmomi')
    from pyVim.connect import Disconnect
    si = lab.connect()
    try:
        yield si
    finally:
        try:
            Disconnect(si)
        except Exception:
            pass


@pytest.fixture
def nbdkit(tmp_path):
    """start(name, plugin, *plugin args, read_only=False, filters=()) -> a NbdkitProcess in tmp_path.

    Every server started is stopped after the test.
    """
    started = []

    def start(name, plugin, *args, **kwargs):
        server = NbdkitProcess(tmp_path, name, plugin, *args, **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def vma_receivers(tmp_path):
    """start(token=None) -> the lab's VMA receiver (tests/lab/vma_receiver.py) in process on 127.0.0.1, port 0.

    ``.url`` is its base URL, ``.state.mode`` ok/fail/stall. Every receiver
    started is stopped (mode back to ok first) after the test.
    """
    started = []

    def start(token=None):
        log = tmp_path / ('updates.jsonl' if not started else 'updates-%d.jsonl' % len(started))
        receiver = VMAReceiver(str(log), token=token).start()
        started.append(receiver)
        return receiver

    try:
        yield start
    finally:
        for receiver in started:
            receiver.state.mode = 'ok'
            receiver.stop()
