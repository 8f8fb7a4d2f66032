# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of power.py (the vmware_vm_power logic) on a fake VM and clock."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import power
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import TaskFailedError


class FakeVM(object):
    _moId = 'vm-1'

    def __init__(self, off_after_polls=None, tools=True):
        self.state = 'poweredOn'
        self.polls = 0
        self.off_after_polls = off_after_polls
        self.tools = tools
        self.calls = []

    def ShutdownGuest(self):
        self.calls.append('shutdown')
        if not self.tools:
            raise RuntimeError('ToolsUnavailable')

    def PowerOffVM_Task(self):
        self.calls.append('poweroff')
        self.state = 'poweredOff'
        return 'task'


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def fake(monkeypatch):
    def power_state(conn, vm, name):
        vm.polls += 1
        if vm.off_after_polls is not None and vm.polls >= vm.off_after_polls:
            vm.state = 'poweredOff'
        return 'VM', vm.state
    monkeypatch.setattr(power, 'power_state', power_state)
    monkeypatch.setattr(power, 'wait_for_task', lambda *a, **k: None)


def test_guest_shutdown_is_enough(fake):
    vm, clock = FakeVM(off_after_polls=3), Clock()
    assert power.power_off(None, vm, 'VM', 60, False, sleep=clock.sleep, clock=clock) == 'guest_shutdown'
    assert vm.calls == ['shutdown']


def test_timeout_without_force_fails_and_leaves_vm_running(fake):
    vm, clock = FakeVM(), Clock()
    with pytest.raises(TaskFailedError, match='did not shut down within 5 s'):
        power.power_off(None, vm, 'VM', 5, False, sleep=clock.sleep, clock=clock)
    assert vm.calls == ['shutdown'] and vm.state == 'poweredOn'
    assert clock.now <= 5.0 + 1e-9


def test_timeout_with_force_powers_off(fake):
    vm, clock = FakeVM(), Clock()
    assert power.power_off(None, vm, 'VM', 5, True, sleep=clock.sleep, clock=clock) == 'power_off'
    assert vm.calls == ['shutdown', 'poweroff']


def test_no_tools_with_force_powers_off_without_waiting(fake):
    vm, clock = FakeVM(tools=False), Clock()
    assert power.power_off(None, vm, 'VM', 300, True, sleep=clock.sleep, clock=clock) == 'power_off'
    assert clock.now == 0.0


def test_no_tools_without_force_names_the_cause(fake):
    vm, clock = FakeVM(tools=False), Clock()
    with pytest.raises(TaskFailedError, match='cannot be asked'):
        power.power_off(None, vm, 'VM', 300, False, sleep=clock.sleep, clock=clock)
