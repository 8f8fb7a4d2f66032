# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of vsphere.py on stubbed pyVmomi objects (no server)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import socket
import ssl
from types import SimpleNamespace

import pytest
from pyVmomi import vim, vmodl

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.migratekit.migration.plugins.module_utils import vsphere

PC = vmodl.query.PropertyCollector
SECRET = 'pa55-unit-secret'


# --------------------------------------------------------------------------
# options

def test_argument_spec_env_fallbacks_and_no_log(monkeypatch):
    monkeypatch.setenv('VMWARE_HOST', 'vc.example.com')
    monkeypatch.setenv('VMWARE_USER', 'admin')
    monkeypatch.setenv('VMWARE_PASSWORD', SECRET)
    monkeypatch.setenv('VMWARE_PORT', '8989')
    monkeypatch.setenv('VMWARE_VALIDATE_CERTS', 'no')
    monkeypatch.setenv('VMWARE_PROXY_HOST', 'proxy.example.com')
    monkeypatch.setenv('VMWARE_PROXY_PORT', '3128')
    result = ArgumentSpecValidator(vsphere.CONNECTION_SPEC.argument_spec).validate({})
    assert result.error_messages == []
    assert result.validated_parameters == {'hostname': 'vc.example.com', 'username': 'admin', 'password': SECRET,
                                           'port': 8989, 'validate_certs': False, 'request_timeout': 300,
                                           'connection_retries': 3,
                                           'proxy_host': 'proxy.example.com', 'proxy_port': 3128}
    assert SECRET in result._no_log_values


def test_argument_spec_defaults(monkeypatch):
    for name in ('VMWARE_HOST', 'VMWARE_USER', 'VMWARE_PASSWORD', 'VMWARE_PORT', 'VMWARE_VALIDATE_CERTS',
                 'VMWARE_PROXY_HOST', 'VMWARE_PROXY_PORT'):
        monkeypatch.delenv(name, raising=False)
    params = ArgumentSpecValidator(vsphere.CONNECTION_SPEC.argument_spec).validate({}).validated_parameters
    assert params['port'] == 443 and params['validate_certs'] is True
    assert params['proxy_host'] is None and params['proxy_port'] is None


@pytest.mark.parametrize('user, password', [('user', 'pass'), ('admin', 'pwd')])
def test_community_vmware_aliases(user, password):
    result = ArgumentSpecValidator(vsphere.CONNECTION_SPEC.argument_spec).validate(
        {'hostname': 'vc', user: 'admin', password: SECRET})
    assert result.error_messages == []
    options = vsphere.CONNECTION_SPEC.options(result.validated_parameters)
    assert (options.username, options.password) == ('admin', SECRET)


# --------------------------------------------------------------------------
# errors

def test_fault_message_uses_msg_and_file():
    assert vsphere.fault_message(vim.fault.FileFault(msg='Error caused by file', file='x-ctk.vmdk')) == \
        'FileFault: Error caused by file (file x-ctk.vmdk)'
    assert vsphere.fault_message(vim.fault.InvalidLogin()) == 'InvalidLogin'
    fault = vmodl.fault.SystemError(faultMessage=[vmodl.LocalizableMessage(key='k', message='from message')])
    assert vsphere.fault_message(fault) == 'SystemError: from message'
    assert vsphere.fault_message(ValueError('plain')) == 'ValueError: plain'


def test_error_str_names_operation_vm_and_disk():
    error = vsphere.TaskFailedError('datastore full', operation="create snapshot 'm'", vm='VM0', disk='Hard disk 1')
    assert str(error) == "create snapshot 'm' of VM VM0, disk Hard disk 1 failed: datastore full"
    assert str(vsphere.VSphereError('x', vm='VM0')) == 'VM VM0: x'
    wrapped = vsphere.fault_error(vmodl.fault.ManagedObjectNotFound(msg='gone'), 'read', vm='VM0')
    assert isinstance(wrapped, vsphere.VMNotFoundError)
    # a typed error is located, not wrapped twice
    assert vsphere.fault_error(error, 'other', vm='VM1') is error and error.vm == 'VM0'


# --------------------------------------------------------------------------
# connect

class FakeStub(object):
    def __init__(self):
        self.requestModifierList = []

    def send(self, text):
        for modifier in self.requestModifierList:
            text = modifier(text)
        return text


class FakeSI(object):
    def __init__(self):
        self._stub = FakeStub()
        self.content = None

    def RetrieveContent(self):
        self._stub.send('<RetrieveServiceContent/>')
        return SimpleNamespace(propertyCollector=None, searchIndex=None, rootFolder=None)


def test_connect_passes_a_verifying_context_and_counts_soap_calls(monkeypatch):
    seen = {}

    def smart_connect(**kwargs):
        seen.update(kwargs)
        return FakeSI()

    monkeypatch.setattr(vsphere, 'SmartConnect', smart_connect)
    monkeypatch.setattr(vsphere, '_proxy_is_broken', lambda: False)
    conn = vsphere.connect('127.0.0.1', 'admin', SECRET, port=8989, validate_certs=True)
    assert seen['sslContext'].verify_mode == ssl.CERT_REQUIRED and seen['disableSslCertValidation'] is False
    assert seen['port'] == 8989 and seen['host'] == '127.0.0.1'
    assert conn.soap_calls == 1
    conn.si._stub.send('<x/>')
    assert conn.soap_calls == 2
    assert seen['httpProxyHost'] is None
    conn = vsphere.connect('vc', 'admin', SECRET, validate_certs=False)
    assert seen['sslContext'].verify_mode == ssl.CERT_NONE and seen['disableSslCertValidation'] is True
    vsphere.connect_with(vsphere.CONNECTION_SPEC.options(hostname='vc', username='admin', password=SECRET,
                                                         proxy_host='proxy.example.com'))
    assert (seen['httpProxyHost'], seen['httpProxyPort']) == ('proxy.example.com', 80)
    vsphere.connect('vc', 'admin', SECRET, proxy_host='proxy.example.com', proxy_port=3128)
    assert (seen['httpProxyHost'], seen['httpProxyPort']) == ('proxy.example.com', 3128)


def test_a_proxy_with_a_pyvmomi_that_cannot_use_one_fails_before_connecting(monkeypatch):
    monkeypatch.setattr(vsphere, 'SmartConnect', lambda **kwargs: pytest.fail('connected'))
    monkeypatch.setattr(vsphere, '_proxy_is_broken', lambda: True)
    with pytest.raises(vsphere.InvalidParameterError, match='proxy_host: pyVmomi .* cannot connect through an HTTP '
                                                            'proxy \\(pyvmomi issue 1090'):
        vsphere.connect('vc', 'admin', SECRET, proxy_host='proxy.example.com')


@pytest.mark.parametrize('raised, error_class, text', [
    (vim.fault.InvalidLogin(msg='Login failure'), vsphere.AuthenticationError,
     'vSphere vc.example.com:443 refused the login of user admin: wrong user name or password'),
    (ConnectionRefusedError(111, 'Connection refused'), vsphere.ConnectionFailedError,
     'cannot reach vc.example.com:443'),
    (ssl.SSLCertVerificationError(1, 'certificate verify failed'), vsphere.ConnectionFailedError,
     'validate_certs: false'),
    (Exception('vc.example.com:443 is down or is not a VIM server'), vsphere.ConnectionFailedError,
     'is not a VIM server'),
    (vim.fault.HostConnectFault(msg='reset by peer'), vsphere.ConnectionFailedError, 'reset by peer'),
])
def test_connect_errors_are_typed_and_never_show_the_password(monkeypatch, raised, error_class, text):
    def smart_connect(**kwargs):
        raise raised
    monkeypatch.setattr(vsphere, 'SmartConnect', smart_connect)
    with pytest.raises(error_class) as info:
        vsphere.connect('vc.example.com', 'admin', SECRET)
    message = str(info.value)
    assert text in message
    assert message.startswith('connect to vSphere vc.example.com:443 as admin failed: ')
    assert SECRET not in message


@pytest.mark.parametrize('missing, env', [('hostname', 'VMWARE_HOST'), ('username', 'VMWARE_USER'),
                                          ('password', 'VMWARE_PASSWORD')])
def test_connect_names_a_missing_option(missing, env):
    args = dict(hostname='vc', username='u', password='p')
    args[missing] = None
    with pytest.raises(vsphere.InvalidParameterError, match='the %s option is required \\(or set %s' % (missing, env)):
        vsphere.connect(**args)


# --------------------------------------------------------------------------
# PropertyCollector reads

def content(obj, **props):
    return PC.ObjectContent(obj=obj, propSet=[vmodl.DynamicProperty(name=k.replace('__', '.'), val=v)
                                              for k, v in props.items()])


class FakeCollector(object):
    """RetrievePropertiesEx double: answers ``pages`` (lists of ObjectContent) one by one via tokens."""

    def __init__(self, pages, tokens=True):
        self.pages = list(pages)
        self.tokens = tokens
        self.calls = []

    def _answer(self):
        objects = self.pages.pop(0)
        more = self.tokens and self.pages
        return PC.RetrieveResult(objects=objects, token='t%d' % len(self.pages) if more else None)

    def RetrievePropertiesEx(self, specSet, options):
        self.calls.append(('RetrievePropertiesEx', specSet))
        return self._answer()

    def ContinueRetrievePropertiesEx(self, token):
        self.calls.append(('ContinueRetrievePropertiesEx', token))
        return self._answer()


class FakeSearchIndex(object):
    def __init__(self, paths):
        self.paths = paths
        self.calls = []

    def FindByInventoryPath(self, inventoryPath):
        self.calls.append(inventoryPath)
        return self.paths.get(inventoryPath)


class FakeConn(object):
    def __init__(self, pages=(), paths=None, tokens=True):
        self.content = SimpleNamespace(propertyCollector=FakeCollector(pages, tokens),
                                       searchIndex=FakeSearchIndex(paths or {}),
                                       rootFolder=vim.Folder('group-d1'))
        self.stub = None

    @property
    def property_collector(self):
        return self.content.propertyCollector


def test_fetch_many_is_one_call_and_follows_tokens():
    vm = vim.VirtualMachine('vm-1')
    snap = vim.vm.Snapshot('snapshot-2')
    conn = FakeConn(pages=[[content(vm, name='VM0')], [content(snap, config__hardware__device=[])]])
    got = vsphere.fetch_many(conn, [(vm, ['name', 'snapshot']), (snap, ['config.hardware.device'])])
    assert got == {'vm-1': {'name': 'VM0', 'snapshot': None}, 'snapshot-2': {'config.hardware.device': []}}
    calls = conn.property_collector.calls
    assert [c[0] for c in calls] == ['RetrievePropertiesEx', 'ContinueRetrievePropertiesEx']
    spec = calls[0][1][0]
    assert [o.obj for o in spec.objectSet] == [vm, snap]
    assert sorted(p.type.__name__ for p in spec.propSet) == ['vim.VirtualMachine', 'vim.vm.Snapshot']


def test_fetch_properties_wraps_faults():
    class Broken(FakeCollector):
        def RetrievePropertiesEx(self, specSet, options):
            raise vmodl.fault.ManagedObjectNotFound(msg='The object has already been deleted')
    conn = FakeConn()
    conn.content.propertyCollector = Broken([])
    with pytest.raises(vsphere.VMNotFoundError, match='read VM properties of VM vm-9 failed: .*already been deleted'):
        vsphere.fetch_properties(conn, vim.VirtualMachine('vm-9'), ['name'], operation='read VM properties', vm='vm-9')


# --------------------------------------------------------------------------
# find_vm

def inventory():
    return [[
        content(vim.VirtualMachine('vm-1'), name='VM0', config__uuid='4213-aaaa', config__instanceUuid='5013-0001'),
        content(vim.VirtualMachine('vm-2'), name='VM1', config__uuid='4213-bbbb', config__instanceUuid='5013-0002'),
        content(vim.VirtualMachine('vm-3'), name='dup', config__uuid='4213-cccc', config__instanceUuid='5013-0003'),
        content(vim.VirtualMachine('vm-4'), name='dup', config__uuid='4213-cccc', config__instanceUuid='5013-0004'),
    ]]


def test_find_vm_by_name_is_one_traversal_call():
    conn = FakeConn(pages=inventory())
    assert vsphere.find_vm(conn, name='VM1')._moId == 'vm-2'
    calls = conn.property_collector.calls
    assert len(calls) == 1
    spec = calls[0][1][0]
    assert spec.objectSet[0].obj == conn.content.rootFolder and spec.objectSet[0].skip is True
    assert {t.name for t in spec.objectSet[0].selectSet} >= {'folderTraversal', 'datacenterTraversal'}


def test_find_vm_ambiguous_name_lists_the_matches():
    with pytest.raises(vsphere.AmbiguousVMError) as info:
        vsphere.find_vm(FakeConn(pages=inventory()), name='dup')
    message = str(info.value)
    assert message.startswith('find VM name=dup failed: 2 VMs match: ')
    assert 'vm-3' in message and 'vm-4' in message and '5013-0004' in message
    assert [m['moid'] for m in info.value.details['matches']] == ['vm-3', 'vm-4']


def test_find_vm_by_uuid_bios_or_instance():
    assert vsphere.find_vm(FakeConn(pages=inventory()), uuid='4213-AAAA')._moId == 'vm-1'
    assert vsphere.find_vm(FakeConn(pages=inventory()), uuid='5013-0004')._moId == 'vm-4'
    with pytest.raises(vsphere.AmbiguousVMError):
        vsphere.find_vm(FakeConn(pages=inventory()), uuid='4213-cccc')


def test_find_vm_not_found_names_the_selector():
    with pytest.raises(vsphere.VMNotFoundError, match='find VM name=nope failed: no VM with name nope'):
        vsphere.find_vm(FakeConn(pages=inventory()), name='nope')


def test_find_vm_in_datacenter_starts_there():
    dc = vim.Datacenter('datacenter-2')
    conn = FakeConn(pages=inventory(), paths={'DC1': dc})
    assert vsphere.find_vm(conn, name='VM0', datacenter='DC1')._moId == 'vm-1'
    assert conn.property_collector.calls[0][1][0].objectSet[0].obj == dc
    with pytest.raises(vsphere.VMNotFoundError, match='no datacenter at inventory path'):
        vsphere.find_vm(FakeConn(pages=inventory()), name='VM0', datacenter='DC9')


def test_find_vm_by_path_and_moid():
    vm = vim.VirtualMachine('vm-7')
    conn = FakeConn(paths={'/DC0/vm/VM0': vm, '/DC0/vm': vim.Folder('group-v3')})
    assert vsphere.find_vm(conn, path='/DC0/vm/VM0') is vm
    with pytest.raises(vsphere.VMNotFoundError, match='is a Folder, not a VM'):
        vsphere.find_vm(conn, path='/DC0/vm')
    with pytest.raises(vsphere.VMNotFoundError, match='no VM at inventory path /DC0/vm/gone'):
        vsphere.find_vm(conn, path='/DC0/vm/gone')
    assert vsphere.find_vm(conn, moid='vm-9')._moId == 'vm-9'
    assert conn.property_collector.calls == []


def test_find_vm_needs_exactly_one_selector():
    with pytest.raises(vsphere.InvalidParameterError, match='exactly one of'):
        vsphere.find_vm(FakeConn(), name='a', moid='vm-1')


# --------------------------------------------------------------------------
# wait_for_task

def task_conn(*infos):
    task = vim.Task('task-1')
    return task, FakeConn(pages=[[content(task, info=info)] for info in infos], tokens=False)


def test_wait_for_task_polls_until_success():
    task, conn = task_conn(vim.TaskInfo(state='running', key='k', task=vim.Task('task-1'), descriptionId='d',
                                        cancelled=False, cancelable=False),
                           vim.TaskInfo(state='success', result='done', key='k', task=vim.Task('task-1'),
                                        descriptionId='d', cancelled=False, cancelable=False))
    sleeps = []
    assert vsphere.wait_for_task(conn, task, 'op', sleep=sleeps.append) == 'done'
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


def test_wait_for_task_raises_the_task_fault_message():
    task, conn = task_conn(vim.TaskInfo(state='error', key='k', task=vim.Task('task-1'), descriptionId='d',
                                        cancelled=False, cancelable=False,
                                        error=vim.fault.FileFault(msg='Insufficient disk space', file='[ds] x')))
    with pytest.raises(vsphere.TaskFailedError) as info:
        vsphere.wait_for_task(conn, task, "create snapshot 'migratekit'", vm='VM0', sleep=lambda s: None)
    assert str(info.value) == ("create snapshot 'migratekit' of VM VM0 failed: "
                               "FileFault: Insufficient disk space (file [ds] x)")
    assert isinstance(info.value.fault, vim.fault.FileFault)


def test_socket_errors_become_connection_errors():
    error = vsphere.fault_error(socket.timeout('timed out'), 'read')
    assert isinstance(error, vsphere.ConnectionFailedError)
