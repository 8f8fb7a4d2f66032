# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module shell: argument validation, one fail_json with the typed error, warnings, diff."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import cbt
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere
from ansible_collections.migratekit.migration.plugins.modules import vmware_cbt_snapshot

SECRET = 'module-unit-secret'
BASE = dict(hostname='vc', username='admin', password=SECRET, validate_certs=False, name='VM0',
            extents_dir='/tmp/x')


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def fake(params, check_mode=False):
        seen.append((params, check_mode))
        return {'changed': True, 'vm': {'name': 'VM0'}, 'snapshot': None, 'disks': [], 'skipped_disks': [],
                'diff': {'before': {}, 'after': {}}, 'warnings': ['disk x skipped']}

    monkeypatch.setattr(vmware_cbt_snapshot, 'cbt_snapshot_module', fake)
    return seen


def test_passes_params_and_check_mode_and_reports_warnings(run_module, calls):
    out = run_module(vmware_cbt_snapshot, dict(BASE, mode='incremental', targets={'2000': 'nbd://t'}), check_mode=True)
    assert not out.failed and out.result['changed'] is True
    params, check_mode = calls[0]
    assert check_mode is True and params['mode'] == 'incremental' and params['snapshot_name'] == 'migratekit'
    assert out.warnings == ['disk x skipped'] and 'warnings' not in out.result
    assert 'diff' in out.result


def test_diff_only_with_diff_mode(run_module, calls):
    out = run_module(vmware_cbt_snapshot, BASE, diff=False)
    assert 'diff' not in out.result


@pytest.mark.parametrize('args, message', [
    (dict(BASE, path='/DC0/vm/VM0'), 'mutually exclusive'),
    (dict((k, v) for k, v in BASE.items() if k != 'name'), 'one of the following is required: name, path, uuid, moid'),
    (dict((k, v) for k, v in BASE.items() if k != 'extents_dir'), 'state is present but all of the following are '
                                                                  'missing: extents_dir'),
    (dict(BASE, mode='sometimes'), 'value of mode must be one of'),
])
def test_bad_input_fails_before_connecting(run_module, calls, args, message):
    out = run_module(vmware_cbt_snapshot, args)
    assert out.failed and message in out.result['msg']
    assert calls == []


def test_absent_needs_no_extents_dir(run_module, calls):
    args = dict((k, v) for k, v in BASE.items() if k != 'extents_dir')
    out = run_module(vmware_cbt_snapshot, dict(args, state='absent'))
    assert not out.failed


def test_typed_error_is_reported_once_with_details(run_module, monkeypatch):
    def fail(params, check_mode=False):
        raise vsphere.AmbiguousVMError('2 VMs match: ...', operation='find VM name=VM0',
                                       details={'matches': [{'moid': 'vm-1'}, {'moid': 'vm-2'}]})
    monkeypatch.setattr(vmware_cbt_snapshot, 'cbt_snapshot_module', fail)
    out = run_module(vmware_cbt_snapshot, BASE)
    assert out.failed and out.result['msg'] == 'find VM name=VM0 failed: 2 VMs match: ...'
    assert out.result['matches'][1]['moid'] == 'vm-2'


def test_unexpected_error_is_a_failure_with_traceback(run_module, monkeypatch):
    def boom(params, check_mode=False):
        raise KeyError('x')
    monkeypatch.setattr(vmware_cbt_snapshot, 'cbt_snapshot_module', boom)
    out = run_module(vmware_cbt_snapshot, BASE)
    assert out.failed and 'failed unexpectedly: KeyError' in out.result['msg'] and 'exception' in out.result


def test_missing_pyvmomi_is_a_clear_failure(run_module, monkeypatch, calls):
    monkeypatch.setattr(vmware_cbt_snapshot, 'LIBRARIES', [('pyVmomi', 'ImportError: No module named pyVmomi')])
    out = run_module(vmware_cbt_snapshot, BASE)
    assert out.failed and 'Failed to import the required Python library (pyVmomi)' in out.result['msg']


def test_wrong_credentials_message_names_host_and_user_only(run_module, monkeypatch):
    from pyVmomi import vim

    def smart_connect(**kwargs):
        raise vim.fault.InvalidLogin(msg='Login failure')
    monkeypatch.setattr(vsphere, 'SmartConnect', smart_connect)
    out = run_module(vmware_cbt_snapshot, dict(BASE, port=8989))
    assert out.failed
    assert out.result['msg'] == ('connect to vSphere vc:8989 as admin failed: vSphere vc:8989 refused the login of '
                                 'user admin: wrong user name or password')
    assert SECRET not in json.dumps(out.result)


def test_module_options_match_cbt_snapshot_options():
    spec = vmware_cbt_snapshot.CBT_SNAPSHOT_SPEC.argument_spec
    assert set(cbt.CYCLE_SPEC.names) <= set(spec)
    assert spec['password']['no_log'] is True
