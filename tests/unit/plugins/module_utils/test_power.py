# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of power.py (the vmware_vm_power logic) on a fake VM and clock."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import power
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere
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


class PowerOnVM(FakeVM):
    def __init__(self, state):
        super(PowerOnVM, self).__init__()
        self.state = state

    def PowerOnVM_Task(self):
        self.calls.append('poweron')
        self.state = 'poweredOn'
        return 'task'


@pytest.mark.parametrize('state, before, shutdown_timeout, method, after', [
    ('poweredoff', 'poweredOn', 300, 'guest_shutdown', 'poweredOff'),
    ('poweredoff', 'poweredOn', 0, 'power_off', 'poweredOff'),
    ('poweredoff', 'suspended', 300, 'power_off', 'poweredOff'),
    ('poweredoff', 'poweredOff', 300, 'none', 'poweredOff'),
    ('poweredon', 'poweredOff', 300, 'power_on', 'poweredOn'),
    ('poweredon', 'poweredOn', 300, 'none', 'poweredOn'),
])
def test_check_mode_reports_the_method_and_changes_nothing(fake, state, before, shutdown_timeout, method, after):
    vm = PowerOnVM(before)
    result = power.run(None, vm, state=state, shutdown_timeout=shutdown_timeout, force=True, check_mode=True)
    assert vm.calls == [] and vm.state == before
    assert result['method'] == method and result['changed'] is (method != 'none')
    assert result['power_state_before'] == before and result['power_state'] == after
    assert result['diff'] == {'before': {'power_state': before}, 'after': {'power_state': after}}
    assert result['vm'] == {'name': 'VM', 'moid': 'vm-1'}


def test_power_on_runs_the_task_and_reads_the_state_again(fake):
    vm = PowerOnVM('poweredOff')
    result = power.run(None, vm, state='poweredon')
    assert vm.calls == ['poweron']
    assert result['changed'] is True and result['method'] == 'power_on' and result['power_state'] == 'poweredOn'


def test_vm_already_off_is_left_alone(fake):
    vm = PowerOnVM('poweredOff')
    result = power.run(None, vm, state='poweredoff', force=True)
    assert vm.calls == [] and result['changed'] is False and result['method'] == 'none'


def test_module_finds_the_vm_keeps_a_given_connection_open_and_times_the_task(fake, monkeypatch):
    vm, clock, selectors = PowerOnVM('poweredOn'), Clock(), []

    def find_vm(conn, **selector):
        selectors.append(selector)
        clock.now += 1.25
        return vm
    monkeypatch.setattr(vsphere, 'find_vm', find_vm)
    monkeypatch.setattr(power, 'connect_with', lambda options: pytest.fail('connected'))
    params = dict(hostname='vc', username='u', password='p', port=443, validate_certs=False, name='VM0', path=None,
                  uuid=None, moid=None, datacenter='DC0', state='poweredoff', shutdown_timeout=60, force=False)
    result = power.vm_power_module(power.VM_POWER_SPEC.options(params), check_mode=True, conn=object(), clock=clock)
    assert selectors == [dict(name='VM0', path=None, uuid=None, moid=None, datacenter='DC0')]
    assert result['method'] == 'guest_shutdown' and result['elapsed'] == 1.25


@pytest.mark.parametrize('state, before, method', [
    ('powered-off', 'poweredOn', 'power_off'),        # community.vmware: a hard power off, at once
    ('shutdown-guest', 'poweredOn', 'guest_shutdown'),
    ('powered-on', 'poweredOff', 'power_on'),
])
def test_community_vmware_power_states(fake, monkeypatch, state, before, method):
    vm = PowerOnVM(before)
    monkeypatch.setattr(vsphere, 'find_vm', lambda conn, **selector: vm)
    params = dict(hostname='vc', username='u', password='p', name='VM0', state=state)
    result = power.vm_power_module(power.VM_POWER_SPEC.options(params), check_mode=True, conn=object())
    assert result['method'] == method and vm.calls == []


@pytest.mark.parametrize('folder, datacenter, path', [
    ('/DC0/vm/prod', None, '/DC0/vm/prod/VM0'),
    ('/DC0/vm/prod/', 'DC0', '/DC0/vm/prod/VM0'),
    ('vm/prod', 'DC0', '/DC0/vm/prod/VM0'),     # relative to the datacenter, as community.vmware takes it
])
def test_folder_and_name_are_a_path(fake, monkeypatch, folder, datacenter, path):
    vm, selectors = PowerOnVM('poweredOff'), []

    def find_vm(conn, **selector):
        selectors.append(selector)
        return vm
    monkeypatch.setattr(vsphere, 'find_vm', find_vm)
    params = dict(hostname='vc', username='u', password='p', name='VM0', folder=folder, datacenter=datacenter)
    power.vm_power_module(power.VM_POWER_SPEC.options(params), check_mode=True, conn=object())
    assert selectors == [dict(path=path, datacenter=datacenter)]
