# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared vSphere connection layer of the collection.

Everything a module needs to talk to vSphere goes through here: the connection
options (one argument spec, documented once in the ``vsphere`` doc fragment),
:func:`connect`, :func:`find_vm`, :func:`wait_for_task`, PropertyCollector
based reads (:func:`fetch_properties`, :func:`fetch_many`) and the translation
of pyVmomi faults into typed :class:`VSphereError` exceptions, which carry the
operation, the VM and the disk so that a module reports a failure once, in one
place, with a message a user can act on.

Round trips are kept to a small constant per VM: properties are read with one
``RetrievePropertiesEx`` per batch instead of attribute by attribute (each
attribute access on a pyVmomi managed object is a SOAP call of its own).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import hashlib
import inspect
import socket
import ssl
import time
import traceback

from http.client import HTTPException

try:
    from ansible.module_utils.basic import env_fallback
except ImportError:  # pragma: no cover - only outside Ansible
    env_fallback = None

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

PYVMOMI_IMPORT_ERROR = None
try:
    from pyVmomi import SoapAdapter, vim, vmodl
    from pyVim.connect import SmartConnect
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover - exercised by ansible-test's import test
    vim = vmodl = SmartConnect = SoapAdapter = None
    HAS_PYVMOMI = False
    PYVMOMI_IMPORT_ERROR = traceback.format_exc()

DEFAULT_PORT = 443
TASK_TIMEOUT = 3600
REQUEST_TIMEOUT = 300
CONNECTION_RETRIES = 3
# SOAP methods that only read: repeating one is harmless even when the first
# attempt reached vSphere before the connection broke.
READ_METHOD_PREFIXES = ('Retrieve', 'ContinueRetrieve', 'Find', 'Query', 'Current', 'Fetch', 'Login')


# --------------------------------------------------------------------------
# errors

class VSphereError(MigratekitError):
    """A vSphere operation failed; ``str()`` names the operation, VM and disk.

    ``operation`` is what was being done ("create snapshot 'migratekit'"),
    ``vm`` and ``disk`` name the objects involved (together the subject),
    ``fault`` is the pyVmomi fault (if any), ``details`` is a dict of extra
    result keys for the module to return next to the message.
    """

    def __init__(self, message, operation=None, vm=None, disk=None, fault=None, details=None):
        super(VSphereError, self).__init__(message, operation=operation, details=details)
        self.vm = vm
        self.disk = disk
        self.fault = fault

    @property
    def subject(self):
        where = []
        if self.vm:
            where.append('VM %s' % self.vm)
        if self.disk:
            where.append('disk %s' % self.disk)
        return ', '.join(where) or None

    def located(self, operation=None, vm=None, disk=None):  # pylint: disable=arguments-renamed
        """Fill in operation/VM/disk where they are still unknown; return self."""
        self.operation = self.operation or operation
        self.vm = self.vm or vm
        self.disk = self.disk or disk
        return self


class MissingLibraryError(VSphereError):
    """pyVmomi is not importable on the host running the module."""


class InvalidParameterError(VSphereError):
    """A parameter is missing or wrong; the message names it."""


class ConnectionFailedError(VSphereError):
    """The vSphere endpoint cannot be reached (network, TLS, not a vSphere)."""


class AuthenticationError(VSphereError):
    """vSphere refused the user name or password."""


class VMNotFoundError(VSphereError):
    """No VM matches the given name, path, uuid or moid."""


class AmbiguousVMError(VSphereError):
    """More than one VM matches; the message lists them."""


class TaskFailedError(VSphereError):
    """A vSphere task ended in error; the message is the task's fault."""


class APIFaultError(VSphereError):
    """A vSphere API call raised a fault."""


# --------------------------------------------------------------------------
# options

# The connection options, documented in the ``vsphere`` doc fragment.
CONNECTION_SPEC = ArgumentSpec(dict(
    hostname=dict(type='str', fallback=(env_fallback, ['VMWARE_HOST'])),
    username=dict(type='str', aliases=['user', 'admin'], fallback=(env_fallback, ['VMWARE_USER'])),
    password=dict(type='str', aliases=['pass', 'pwd'], no_log=True, fallback=(env_fallback, ['VMWARE_PASSWORD'])),
    port=dict(type='int', default=DEFAULT_PORT, fallback=(env_fallback, ['VMWARE_PORT'])),
    validate_certs=dict(type='bool', default=True, fallback=(env_fallback, ['VMWARE_VALIDATE_CERTS'])),
    request_timeout=dict(type='int', default=REQUEST_TIMEOUT),
    connection_retries=dict(type='int', default=CONNECTION_RETRIES),
    proxy_host=dict(type='str', fallback=(env_fallback, ['VMWARE_PROXY_HOST'])),
    proxy_port=dict(type='int', fallback=(env_fallback, ['VMWARE_PROXY_PORT'])),
))

VM_SELECTOR_OPTIONS = ['name', 'path', 'uuid', 'moid']

# The options that select one VM, documented in the ``vsphere.vm`` doc fragment.
VM_SPEC = ArgumentSpec(dict(
    name=dict(type='str'),
    path=dict(type='str'),
    folder=dict(type='str'),
    uuid=dict(type='str'),
    moid=dict(type='str'),
    datacenter=dict(type='str'),
), mutually_exclusive=[VM_SELECTOR_OPTIONS], required_one_of=[VM_SELECTOR_OPTIONS], required_by={'folder': 'name'})

# What a module talking to vSphere needs besides Ansible.
LIBRARIES = (('pyVmomi', PYVMOMI_IMPORT_ERROR),)


def connect_with(options):
    """:func:`connect` with the connection options of a module (:data:`CONNECTION_SPEC`)."""
    return connect(hostname=options.hostname, username=options.username, password=options.password,
                   port=options.port, validate_certs=options.validate_certs,
                   timeout=options.request_timeout, retries=options.connection_retries,
                   proxy_host=options.proxy_host, proxy_port=options.proxy_port)


def find_vm_with(conn, options):
    """:func:`find_vm` with the VM selector options of a module (:data:`VM_SPEC`).

    ``folder`` with ``name`` (community.vmware's way) is the path ``<folder>/<name>``.
    """
    if options.folder:
        folder = options.folder.strip('/')
        if options.datacenter and not folder.startswith(options.datacenter + '/'):
            folder = '%s/%s' % (options.datacenter, folder)  # a folder relative to the datacenter, as vm/prod
        return find_vm(conn, path='/%s/%s' % (folder, options.name), datacenter=options.datacenter)
    return find_vm(conn, name=options.name, path=options.path, uuid=options.uuid, moid=options.moid,
                   datacenter=options.datacenter)


def describe_selector(name=None, path=None, uuid=None, moid=None, datacenter=None):
    """Human form of a VM selector, for messages before the VM is known."""
    for key, value in (('name', name), ('path', path), ('uuid', uuid), ('moid', moid)):
        if value:
            text = '%s=%s' % (key, value)
            if datacenter and key in ('name', 'uuid'):
                text += ' in datacenter %s' % datacenter
            return text
    return '(no VM selected)'


def require_pyvmomi():
    if not HAS_PYVMOMI:
        raise MissingLibraryError('the pyVmomi Python library is required on the host running the module (%s)'
                                  % ''.join((PYVMOMI_IMPORT_ERROR or '').strip().splitlines()[-1:]),
                                  operation='import pyVmomi')


# --------------------------------------------------------------------------
# faults

def fault_message(exc):
    """The most useful text of a pyVmomi fault (or any exception)."""
    text = None
    msg = getattr(exc, 'msg', None)
    if msg:
        text = msg
    else:
        for message in getattr(exc, 'faultMessage', None) or []:
            if getattr(message, 'message', None):
                text = message.message
                break
    name = type(exc).__name__
    if HAS_PYVMOMI and isinstance(exc, vmodl.MethodFault):
        name = exc._wsdlName
    if not text:
        text = str(exc) if not (HAS_PYVMOMI and isinstance(exc, vmodl.MethodFault)) else ''
    file_name = getattr(exc, 'file', None)
    if file_name and file_name not in text:
        text = '%s (file %s)' % (text, file_name) if text else 'file %s' % file_name
    return '%s: %s' % (name, text) if text else name


def fault_error(exc, operation, vm=None, disk=None, error_class=None):
    """Wrap an exception raised by pyVmomi into a typed VSphereError."""
    if isinstance(exc, VSphereError):
        return exc.located(operation, vm, disk)
    if error_class is None:
        error_class = APIFaultError
        if HAS_PYVMOMI and isinstance(exc, vmodl.fault.ManagedObjectNotFound):
            error_class = VMNotFoundError
        elif HAS_PYVMOMI and isinstance(exc, (vim.fault.NotAuthenticated, vim.fault.InvalidLogin)):
            error_class = AuthenticationError
        elif isinstance(exc, (socket.error, ssl.SSLError)):
            error_class = ConnectionFailedError
    fault = exc if HAS_PYVMOMI and isinstance(exc, vmodl.MethodFault) else None
    return error_class(fault_message(exc), operation=operation, vm=vm, disk=disk, fault=fault)


# --------------------------------------------------------------------------
# connection

class Connection(object):
    """A logged-in vSphere session.

    ``soap_calls`` counts the SOAP requests sent since login (through the
    stub's request modifier hook), so tests and benchmarks can check that the
    number of round trips per VM stays a small constant.

    Every request has the HTTP timeout given to :func:`connect`: a vCenter
    that stops answering fails the call with :class:`ConnectionFailedError`,
    it never hangs it. A call that fails on a transient connection error is
    sent again after a new login, at most ``retries`` times (``retried``
    lists them): any call the connection refused, or whose session vSphere
    no longer knows (NotAuthenticated), since vSphere did not run it; a read
    (:data:`READ_METHOD_PREFIXES`) also after a connection that broke
    mid-call. A call that changes something (CreateSnapshot_Task, ...) is not
    repeated then: it may have run.
    """

    def __init__(self, si, hostname=None, username=None, port=None, password=None, timeout=None,
                 retries=0, retry_delay=1.0, ssl_context=None, validate_certs=True, sleep=time.sleep):
        self.si = si
        self.hostname = hostname
        self.username = username
        self.port = port
        self.timeout = timeout
        self.retries = max(0, int(retries or 0))
        self.retry_delay = retry_delay
        self.validate_certs = validate_certs
        self.retried = []
        self.soap_calls = 0
        self._password = password
        self._ssl_context = ssl_context
        self._sleep = sleep
        self._relogging = False
        self._hung = False            # a call timed out: logging out would wait as long again
        self._thumbprint = None
        stub = getattr(si, '_stub', None)
        modifiers = getattr(stub, 'requestModifierList', None)
        if isinstance(modifiers, list):
            modifiers.append(self._count_request)
        if stub is not None and hasattr(stub, 'InvokeMethod'):
            # the class's method, looked up at each call (so that a later patch of the class still applies)
            self._invoke = lambda mo, info, args, outer=None: type(stub).InvokeMethod(stub, mo, info, args, outer)
            stub.InvokeMethod = self._invoke_with_retries
        self.content = si.RetrieveContent()

    def _count_request(self, request):
        self.soap_calls += 1
        return request

    @property
    def where(self):
        return '%s:%s' % (self.hostname, self.port)

    def _transient(self, exc, method):
        """``'refused'`` / ``'session'`` / ``'broken'`` for an error worth a new login and another try, else None."""
        if isinstance(exc, ConnectionRefusedError):
            return 'refused'
        if HAS_PYVMOMI and isinstance(exc, vim.fault.NotAuthenticated) and method != 'Logout':
            return 'session'
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return None
        if isinstance(exc, (ConnectionError, HTTPException, ssl.SSLEOFError)) \
                and method.startswith(READ_METHOD_PREFIXES):
            return 'broken'
        return None

    def _invoke_with_retries(self, mo, info, args, outerStub=None):
        method = getattr(info, 'wsdlName', None) or getattr(info, 'name', '') or ''
        attempt = 0
        while True:
            try:
                return self._invoke(mo, info, args, outerStub)
            except (socket.timeout, TimeoutError) as exc:
                self._hung = True
                raise ConnectionFailedError('vSphere %s did not answer %s within %s s (request_timeout): %s'
                                            % (self.where, method, self.timeout, exc or 'timed out'))
            except Exception as exc:  # pylint: disable=broad-except
                kind = None if self._relogging else self._transient(exc, method)
                if kind is None or attempt >= self.retries:
                    if kind is not None or isinstance(exc, (ConnectionError, HTTPException, ssl.SSLError)):
                        raise ConnectionFailedError(
                            'vSphere %s: %s failed: %s%s' % (self.where, method, fault_message(exc),
                                                             ' (after %d retries with a new login)' % attempt
                                                             if attempt else ''))
                    raise
                attempt += 1
                self.retried.append({'method': method, 'error': fault_message(exc), 'attempt': attempt})
                self._sleep(min(self.retry_delay * (2 ** (attempt - 1)), 30))
                self._relogin()

    def _relogin(self):
        """A new session on the same stub (its cookie is replaced); failures are left to the retried call."""
        if self._password is None or self.si is None:
            return
        self._relogging = True
        try:
            self.content.sessionManager.Login(userName=self.username, password=self._password)
        except Exception:  # pylint: disable=broad-except
            pass
        finally:
            self._relogging = False

    def thumbprint(self):
        """SHA-1 fingerprint of the vCenter certificate (``AA:BB:...``), or None when it was not verified.

        Read with a TLS handshake that verifies the certificate the way the
        connection did (same context): a fingerprint is only ever given for a
        certificate that was verified.
        """
        if not self.validate_certs or self._ssl_context is None:
            return None
        if self._thumbprint is None:
            try:
                with socket.create_connection((self.hostname, int(self.port)), timeout=self.timeout) as raw:
                    with self._ssl_context.wrap_socket(raw, server_hostname=self.hostname) as tls:
                        der = tls.getpeercert(binary_form=True)
            except (socket.error, ssl.SSLError) as exc:
                raise ConnectionFailedError('cannot read the TLS certificate of %s: %s' % (self.where, exc),
                                            operation='compute the vCenter thumbprint')
            digest = hashlib.sha1(der).hexdigest().upper()
            self._thumbprint = ':'.join(digest[i:i + 2] for i in range(0, len(digest), 2))
        return self._thumbprint

    @property
    def stub(self):
        return self.si._stub

    @property
    def property_collector(self):
        return self.content.propertyCollector

    def close(self):
        """Log out (not after a call timed out: it would wait as long again); errors while logging out are ignored."""
        if self.si is None:
            return
        if self._hung:
            self.si = None
            return
        try:
            # not pyVim's Disconnect(): it re-reads the service content first
            self.content.sessionManager.Logout()
        except Exception:  # pylint: disable=broad-except
            pass
        self.si = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@contextlib.contextmanager
def _default_socket_timeout(timeout):
    """pyVmomi's SmartConnect first reads the API versions over a connection of its own, without a timeout:
    the process-wide default socket timeout covers it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def connect(hostname=None, username=None, password=None, port=DEFAULT_PORT, validate_certs=True,
            timeout=REQUEST_TIMEOUT, retries=CONNECTION_RETRIES, retry_delay=1.0, sleep=time.sleep,
            proxy_host=None, proxy_port=None):
    """Log in to vCenter/ESXi; return a :class:`Connection`.

    Errors are typed: :class:`InvalidParameterError` for a missing option,
    :class:`AuthenticationError` for wrong credentials (naming host and user,
    never the password), :class:`ConnectionFailedError` for network and TLS
    problems, a vCenter that does not answer within ``timeout`` seconds, or
    one that refused the connection ``retries`` + 1 times. With
    ``proxy_host``, the HTTPS connection is tunnelled through that HTTP proxy
    (CONNECT; ``proxy_port`` defaults to 80).
    """
    require_pyvmomi()
    for option, value, env in (('hostname', hostname, 'VMWARE_HOST'),
                               ('username', username, 'VMWARE_USER'),
                               ('password', password, 'VMWARE_PASSWORD')):
        if value is None or value == '':
            raise InvalidParameterError('the %s option is required (or set %s in the environment)'
                                        % (option, env), operation='connect to vSphere')
    if timeout is not None and timeout <= 0:
        raise InvalidParameterError('request_timeout: expected a positive number of seconds, got %r' % timeout,
                                    operation='connect to vSphere')
    if retries is not None and retries < 0:
        raise InvalidParameterError('connection_retries: expected 0 or more, got %r' % retries,
                                    operation='connect to vSphere')
    port = int(port or DEFAULT_PORT)
    attempt = 0
    while True:
        try:
            return _connect_once(hostname, username, password, port, validate_certs, timeout, retries, retry_delay,
                                 proxy_host, proxy_port)
        except _Refused as refused:
            if attempt >= (retries or 0):
                raise refused.error
            attempt += 1
            sleep(min(retry_delay * (2 ** (attempt - 1)), 30))


class _Refused(Exception):
    """The connection was refused: worth another try (``error`` is what to raise after the last one)."""

    def __init__(self, error):
        super(_Refused, self).__init__(str(error))
        self.error = error


def _connect_once(hostname, username, password, port, validate_certs, timeout, retries, retry_delay,  # pylint: disable=too-many-arguments
                  proxy_host=None, proxy_port=None):
    where = '%s:%d' % (hostname, port)
    operation = 'connect to vSphere %s as %s' % (where, username)
    if proxy_host and _proxy_is_broken():
        raise InvalidParameterError('proxy_host: pyVmomi %s cannot connect through an HTTP proxy (pyvmomi issue 1090: '
                                    'every proxied request fails); install another pyvmomi (9.1.1.0 works)'
                                    % _pyvmomi_version(), operation=operation)
    if validate_certs:
        # pyVmomi silently skips verification for localhost unless it is given
        # a context; certificate validation on means on, whatever the host.
        ssl_context = ssl.create_default_context()
    else:
        ssl_context = ssl._create_unverified_context()  # pylint: disable=protected-access
    try:
        with _default_socket_timeout(timeout):
            si = SmartConnect(host=hostname, user=username, pwd=password, port=port,
                              sslContext=ssl_context, disableSslCertValidation=not validate_certs,
                              httpConnectionTimeout=timeout,
                              httpProxyHost=proxy_host or None, httpProxyPort=int(proxy_port or 80))
            return Connection(si, hostname=hostname, username=username, port=port, password=password,
                              timeout=timeout, retries=retries, retry_delay=retry_delay, ssl_context=ssl_context,
                              validate_certs=validate_certs)
    except vim.fault.InvalidLogin:
        raise AuthenticationError('vSphere %s refused the login of user %s: wrong user name or password'
                                  % (where, username), operation=operation)
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionFailedError('the TLS certificate of %s cannot be verified (%s); install its CA or set '
                                    'validate_certs: false' % (where, getattr(exc, 'verify_message', None) or exc),
                                    operation=operation)
    except vim.fault.HostConnectFault as exc:
        raise ConnectionFailedError('cannot reach %s: %s' % (where, fault_message(exc)), operation=operation)
    except VSphereError as exc:
        raise exc.located(operation)
    except vmodl.MethodFault as exc:
        raise fault_error(exc, operation)
    except (socket.timeout, TimeoutError) as exc:
        raise ConnectionFailedError('vSphere %s did not answer within %s s (request_timeout): %s'
                                    % (where, timeout, exc or 'timed out'), operation=operation)
    except ConnectionRefusedError as exc:
        raise _Refused(ConnectionFailedError('cannot reach %s: %s' % (where, exc), operation=operation))
    except (socket.error, ssl.SSLError) as exc:
        raise ConnectionFailedError('cannot reach %s: %s' % (where, exc), operation=operation)
    except Exception as exc:  # pylint: disable=broad-except
        # SmartConnect raises a bare Exception when the endpoint is not vSphere
        if isinstance(getattr(exc, '__context__', None), ConnectionRefusedError):
            raise _Refused(ConnectionFailedError('cannot reach %s: %s' % (where, exc), operation=operation))
        raise ConnectionFailedError('cannot reach %s: %s' % (where, exc), operation=operation)


def _proxy_is_broken():
    """pyVmomi 8.0.3.0.1 calls its HTTPProxyConnection without the port it requires (pyvmomi issue 1090)."""
    proxy_connection = getattr(SoapAdapter, 'HTTPProxyConnection', None)
    if proxy_connection is None:
        return False
    port = inspect.signature(proxy_connection.__call__).parameters.get('port')
    return port is not None and port.default is inspect.Parameter.empty


def _pyvmomi_version():
    try:
        from importlib.metadata import version
        return version('pyvmomi')
    except Exception:  # pylint: disable=broad-except
        return '(unknown version)'


# --------------------------------------------------------------------------
# PropertyCollector reads

def _object_spec(obj, select_set=None, skip=False):
    return vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=skip, selectSet=select_set or [])


def _property_spec(obj_type, paths):
    return vmodl.query.PropertyCollector.PropertySpec(type=obj_type, pathSet=list(paths), all=False)


def retrieve(conn, object_specs, property_specs):
    """Run one RetrievePropertiesEx (plus continuation pages); return ObjectContent list."""
    collector = conn.property_collector
    spec = vmodl.query.PropertyCollector.FilterSpec(objectSet=list(object_specs), propSet=list(property_specs))
    result = collector.RetrievePropertiesEx(specSet=[spec], options=vmodl.query.PropertyCollector.RetrieveOptions())
    objects = []
    while result is not None:
        objects.extend(result.objects or [])
        token = getattr(result, 'token', None)
        if not token:
            break
        result = collector.ContinueRetrievePropertiesEx(token=token)
    return objects


def _content_to_dict(content, paths):
    props = dict((path, None) for path in paths)
    for prop in content.propSet or []:
        props[prop.name] = prop.val
    missing = dict((m.path, m.fault) for m in (getattr(content, 'missingSet', None) or []))
    return props, missing


def fetch_many(conn, requests, operation='read properties', vm=None):
    """Read properties of several objects in one round trip.

    ``requests`` is a list of ``(managed_object, [property paths])``; objects
    of the same type share one property spec (the paths are merged). Returns
    ``{moid: {path: value}}``; unset properties are None.
    """
    by_type = {}
    for obj, paths in requests:
        by_type.setdefault(type(obj), [])
        for path in paths:
            if path not in by_type[type(obj)]:
                by_type[type(obj)].append(path)
    try:
        contents = retrieve(conn, [_object_spec(obj) for obj, _paths in requests],
                            [_property_spec(obj_type, paths) for obj_type, paths in by_type.items()])
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm)
    result = {}
    for content in contents:
        props, missing = _content_to_dict(content, by_type.get(type(content.obj), []))
        for path, fault in missing.items():
            if HAS_PYVMOMI and isinstance(fault, vim.fault.NoPermission):
                raise APIFaultError('no permission to read %s of %s (%s)'
                                    % (path, content.obj._moId, fault_message(fault)),
                                    operation=operation, vm=vm)
        result[content.obj._moId] = props
    return result


def fetch_properties(conn, obj, paths, operation='read properties', vm=None):
    """Read ``paths`` of one managed object in one round trip; return a dict."""
    result = fetch_many(conn, [(obj, paths)], operation=operation, vm=vm)
    if obj._moId not in result:
        raise VMNotFoundError('object %s no longer exists' % obj._moId, operation=operation, vm=vm)
    return result[obj._moId]


# --------------------------------------------------------------------------
# finding a VM

def _vm_traversal_specs():
    """TraversalSpecs from a folder or datacenter down to every VM (vApps included)."""
    TraversalSpec = vmodl.query.PropertyCollector.TraversalSpec
    SelectionSpec = vmodl.query.PropertyCollector.SelectionSpec
    to_folder = SelectionSpec(name='folderTraversal')
    to_datacenter = SelectionSpec(name='datacenterTraversal')
    to_vapp = SelectionSpec(name='vappTraversal')
    folder = TraversalSpec(name='folderTraversal', type=vim.Folder, path='childEntity', skip=False,
                           selectSet=[to_folder, to_datacenter, to_vapp])
    datacenter = TraversalSpec(name='datacenterTraversal', type=vim.Datacenter, path='vmFolder', skip=False,
                               selectSet=[to_folder])
    vapp_vms = TraversalSpec(name='vappVmTraversal', type=vim.VirtualApp, path='vm', skip=False)
    vapp = TraversalSpec(name='vappTraversal', type=vim.VirtualApp, path='resourcePool', skip=False,
                         selectSet=[to_vapp, SelectionSpec(name='vappVmTraversal')])
    return [folder, datacenter, vapp, vapp_vms]


def list_vms(conn, root, paths=('name', 'config.uuid', 'config.instanceUuid'), operation='list VMs'):
    """All VMs below ``root`` (folder or datacenter) with ``paths``, in one round trip."""
    try:
        contents = retrieve(conn, [_object_spec(root, select_set=_vm_traversal_specs(), skip=True)],
                            [_property_spec(vim.VirtualMachine, paths)])
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation)
    vms = []
    for content in contents:
        if not isinstance(content.obj, vim.VirtualMachine):
            continue
        props, _missing = _content_to_dict(content, paths)
        vms.append((content.obj, props))
    return vms


def _normalize_uuid(value):
    return (value or '').replace('-', '').replace(' ', '').lower()


def _describe_matches(matches):
    return ', '.join('%s (moid %s, uuid %s, instance uuid %s)' % (
        props.get('name'), obj._moId, props.get('config.uuid'), props.get('config.instanceUuid'))
        for obj, props in matches)


def find_datacenter(conn, datacenter):
    """The datacenter named (or inventory-pathed) ``datacenter``."""
    operation = 'find datacenter %s' % datacenter
    try:
        found = conn.content.searchIndex.FindByInventoryPath(inventoryPath=datacenter)
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation)
    if not isinstance(found, vim.Datacenter):
        raise VMNotFoundError('no datacenter at inventory path %r' % datacenter, operation=operation)
    return found


def find_vm(conn, name=None, path=None, uuid=None, moid=None, datacenter=None):
    """Return the one ``vim.VirtualMachine`` the selector matches.

    Exactly one of ``name``, ``path`` (inventory path such as ``/DC0/vm/VM0``),
    ``uuid`` (BIOS or instance uuid) or ``moid`` is used; ``datacenter``
    restricts name and uuid searches. Name and uuid searches read the names
    and uuids of all VMs in scope with one PropertyCollector call, so they
    detect duplicates: an ambiguous selector raises :class:`AmbiguousVMError`
    listing every match; no match raises :class:`VMNotFoundError`.
    """
    require_pyvmomi()
    selector = describe_selector(name, path, uuid, moid, datacenter)
    operation = 'find VM %s' % selector
    given = [key for key, value in (('name', name), ('path', path), ('uuid', uuid), ('moid', moid)) if value]
    if len(given) != 1:
        raise InvalidParameterError('exactly one of name, path, uuid or moid selects the VM, got %s'
                                    % (', '.join(given) or 'none'), operation=operation)
    if moid:
        vm = vim.VirtualMachine(moid, conn.stub)
        return vm  # existence is checked by the first property read (ManagedObjectNotFound)
    if path:
        try:
            found = conn.content.searchIndex.FindByInventoryPath(inventoryPath=path)
        except Exception as exc:  # pylint: disable=broad-except
            raise fault_error(exc, operation)
        if found is None:
            raise VMNotFoundError('no VM at inventory path %s (expected /<datacenter>/vm/[<folder>/]<name>)'
                                  % path, operation=operation)
        if not isinstance(found, vim.VirtualMachine):
            raise VMNotFoundError('inventory path %s is a %s, not a VM' % (path, found._wsdlName),
                                  operation=operation)
        return found
    root = find_datacenter(conn, datacenter) if datacenter else conn.content.rootFolder
    vms = list_vms(conn, root, operation=operation)
    if name:
        matches = [(obj, props) for obj, props in vms if props.get('name') == name]
    else:
        wanted = _normalize_uuid(uuid)
        matches = [(obj, props) for obj, props in vms
                   if wanted in (_normalize_uuid(props.get('config.uuid')),
                                 _normalize_uuid(props.get('config.instanceUuid')))]
        # an instance uuid match is unique; prefer it over BIOS uuid clones
        exact = [m for m in matches if _normalize_uuid(m[1].get('config.instanceUuid')) == wanted]
        if exact:
            matches = exact
    if not matches:
        scope = ' in datacenter %s' % datacenter if datacenter else ''
        raise VMNotFoundError('no VM with %s%s' % ('name %s' % name if name else 'uuid %s' % uuid, scope),
                              operation=operation)
    if len(matches) > 1:
        raise AmbiguousVMError('%d VMs match: %s; select one by path, instance uuid or moid%s'
                               % (len(matches), _describe_matches(matches),
                                  '' if datacenter else ' (or add datacenter)'),
                               operation=operation, details={'matches': [
                                   {'name': p.get('name'), 'moid': o._moId, 'uuid': p.get('config.uuid'),
                                    'instance_uuid': p.get('config.instanceUuid')} for o, p in matches]})
    return matches[0][0]


# --------------------------------------------------------------------------
# tasks

def wait_for_task(conn, task, operation, vm=None, disk=None, timeout=TASK_TIMEOUT, sleep=time.sleep):
    """Wait for ``task``; return its result or raise :class:`TaskFailedError`.

    Polls ``info`` with one PropertyCollector read per poll, backing off from
    50 ms to 2 s; a fast task costs one round trip. The error message is the
    task's fault message.
    """
    deadline = time.time() + timeout
    delay = 0.05
    while True:
        sleep(delay)
        info = fetch_properties(conn, task, ['info'], operation=operation, vm=vm)['info']
        state = getattr(info, 'state', None)
        if state == 'success':
            return info.result
        if state == 'error':
            fault = info.error
            raise TaskFailedError(fault_message(fault) if fault is not None else 'the task failed without a fault',
                                  operation=operation, vm=vm, disk=disk, fault=fault)
        if time.time() > deadline:
            raise TaskFailedError('the task %s did not finish within %d s (state %s)'
                                  % (task._moId, timeout, state), operation=operation, vm=vm, disk=disk)
        delay = min(delay * 2, 2.0)
