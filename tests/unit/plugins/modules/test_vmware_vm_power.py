# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module shell: argument validation, one fail_json with the typed error, diff."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import power
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere
from ansible_collections.migratekit.migration.plugins.modules import vmware_vm_power

SECRET = 'power-unit-secret'
BASE = dict(hostname='vc', username='admin', password=SECRET, validate_certs=False, name='VM0')


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake(params, check_mode=False):
        seen.append((params, check_mode))
        return {'changed': True, 'power_state': 'poweredOff', 'power_state_before': 'poweredOn',
                'method': 'guest_shutdown', 'vm': {'name': 'VM0', 'moid': 'vm-1'}, 'elapsed': 0.5,
                'diff': {'before': {'power_state': 'poweredOn'}, 'after': {'power_state': 'poweredOff'}}}

    monkeypatch.setattr(vmware_vm_power, 'vm_power_module', fake)
    return seen


def test_passes_params_and_check_mode(run_module, calls):
    out = run_module(vmware_vm_power, dict(BASE, force=True), check_mode=True)
    assert not out.failed and out.result['method'] == 'guest_shutdown'
    params, check_mode = calls[0]
    assert check_mode is True and params['force'] is True
    assert params['state'] == 'poweredoff' and params['shutdown_timeout'] == 300
    assert 'diff' in out.result


def test_diff_only_with_diff_mode(run_module, calls):
    out = run_module(vmware_vm_power, BASE, diff=False)
    assert 'diff' not in out.result


@pytest.mark.parametrize('args, message', [
    (dict(BASE, uuid='4213'), 'mutually exclusive'),
    (dict((k, v) for k, v in BASE.items() if k != 'name'), 'one of the following is required: name, path, uuid, moid'),
    (dict(BASE, state='suspended'), 'value of state must be one of'),
])
def test_bad_input_fails_before_connecting(run_module, calls, args, message):
    out = run_module(vmware_vm_power, args)
    assert out.failed and message in out.result['msg']
    assert calls == []


def test_negative_shutdown_timeout_fails_before_connecting(run_module, monkeypatch):
    def connect(*args, **kwargs):
        raise AssertionError('connected')
    monkeypatch.setattr(power, 'connect_with', connect)
    out = run_module(vmware_vm_power, dict(BASE, shutdown_timeout=-1))
    assert out.failed and out.result['msg'] == 'vmware_vm_power: shutdown_timeout must be 0 or more seconds, got -1'


def test_typed_error_is_reported_once_with_the_operation_and_vm(run_module, monkeypatch):
    def fail(params, check_mode=False):
        raise vsphere.TaskFailedError('the guest did not shut down within 5 s and force is false',
                                      operation='power off', vm='VM0')
    monkeypatch.setattr(vmware_vm_power, 'vm_power_module', fail)
    out = run_module(vmware_vm_power, BASE)
    assert out.failed
    assert out.result['msg'] == 'power off of VM VM0 failed: the guest did not shut down within 5 s and force is false'


def test_unexpected_error_is_a_failure_with_traceback(run_module, monkeypatch):
    def boom(params, check_mode=False):
        raise KeyError('x')
    monkeypatch.setattr(vmware_vm_power, 'vm_power_module', boom)
    out = run_module(vmware_vm_power, BASE)
    assert out.failed and 'vmware_vm_power failed unexpectedly: KeyError' in out.result['msg']
    assert 'exception' in out.result


def test_missing_pyvmomi_is_a_clear_failure(run_module, monkeypatch, calls):
    monkeypatch.setattr(vmware_vm_power, 'LIBRARIES', [('pyVmomi', 'ImportError: No module named pyVmomi')])
    out = run_module(vmware_vm_power, BASE)
    assert out.failed and 'Failed to import the required Python library (pyVmomi)' in out.result['msg']
    assert calls == []


def test_wrong_credentials_message_names_host_and_user_only(run_module, monkeypatch):
    from pyVmomi import vim

    def smart_connect(**kwargs):
        raise vim.fault.InvalidLogin(msg='Login failure')
    monkeypatch.setattr(vsphere, 'SmartConnect', smart_connect)
    out = run_module(vmware_vm_power, dict(BASE, port=8989))
    assert out.failed
    assert out.result['msg'] == ('connect to vSphere vc:8989 as admin failed: vSphere vc:8989 refused the login of '
                                 'user admin: wrong user name or password')
    assert SECRET not in json.dumps(out.result)
