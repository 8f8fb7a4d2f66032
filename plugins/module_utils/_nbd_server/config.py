# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one NBD server is to serve and the command line that serves it (pure: no file, no process).

Owns the errors of the server code, the validation of a module's options
into a configuration dict, and :func:`build_argv`, which never puts the vddk
password in argv (the plugin reads ``password=+FILE``).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
from urllib.parse import quote

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

TRANSPORTS = ('file', 'vddk')
FORMATS = ('vmdk', 'raw')
AIO_MODES = ('auto', 'io_uring', 'threads')
COMPRESSIONS = ('none', 'zlib', 'fastlz', 'skipz')
PASSWORD_MARK = '.password.'
RECORD_SUFFIX = '.server.json'
THUMBPRINT_RE = re.compile(r'^([0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$')
MOREF_RE = re.compile(r'^[A-Za-z0-9_.:-]+$')
FILTER_NAME_RE = re.compile(r'^[A-Za-z0-9_-]+$')
PARAM_KEY_RE = re.compile(r'^[A-Za-z0-9_.-]+$')


class NbdkitError(MigratekitError):
    """A server could not be configured, started or stopped.

    ``operation`` (``configure``, ``start``, ``stop``) and ``obj`` (the socket)
    name what failed; the module adds the server(s) as the subject.
    """

    phrase = 'nbd_disk_server: cannot {operation}{subject}: {message}'

    def __init__(self, message, operation='configure', obj=None):
        super(NbdkitError, self).__init__(message, operation=operation)
        self.obj = obj


class NbdkitConfigError(NbdkitError):
    """Bad input: detected before anything is started."""


class NbdkitStartError(NbdkitError):
    """nbdkit did not start, or its socket did not answer in time."""

    def __init__(self, message, obj=None):
        super(NbdkitStartError, self).__init__(message, 'start', obj)


class NbdkitStopError(NbdkitError):
    """A server did not stop."""

    def __init__(self, message, obj=None):
        super(NbdkitStopError, self).__init__(message, 'stop', obj)

# ---------------------------------------------------------------- pure parts


def socket_uri(path):
    """The NBD URI of a unix socket, as libnbd parses it."""
    return 'nbd+unix:///?socket=' + quote(path, safe='/')


def default_pidfile(socket_path):
    return socket_path + '.pid'


def default_logfile(socket_path):
    return socket_path + '.log'


def default_recordfile(socket_path):
    """Where the collection records what it started on ``socket_path`` (see :func:`server_record`)."""
    return socket_path + RECORD_SUFFIX


def normalize_moref(value, prefix):
    """``vm-12``, ``moref=vm-12`` -> ``vm-12``; reject anything with spaces or ``=``."""
    if value is None:
        return None
    value = str(value).strip()
    if value.startswith('moref='):
        value = value[len('moref='):]
    if not value or not MOREF_RE.match(value):
        raise NbdkitConfigError('%s: expected a managed object reference like "%s-42", got %r'
                                % ('vm_moref' if prefix == 'vm' else 'snapshot_moref', prefix, value))
    return value


def normalize_filters(filters):
    """Validate ``[{name, params}]`` and return it as a list of ``(name, [(k, v)])``."""
    result = []
    for index, item in enumerate(filters or []):
        if isinstance(item, str):
            item = {'name': item}
        if not isinstance(item, dict) or not item.get('name'):
            raise NbdkitConfigError('filters[%d]: expected a dict with a "name" (and optional "params"), got %r'
                                    % (index, item))
        name = str(item['name'])
        if not FILTER_NAME_RE.match(name):
            raise NbdkitConfigError('filters[%d]: %r is not an nbdkit filter name' % (index, name))
        params = item.get('params') or {}
        if not isinstance(params, dict):
            raise NbdkitConfigError('filters[%d] (%s): params must be a dict of key: value' % (index, name))
        pairs = []
        for key in sorted(params):
            if not PARAM_KEY_RE.match(str(key)):
                raise NbdkitConfigError('filters[%d] (%s): %r is not a valid parameter name' % (index, name, key))
            value = params[key]
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            pairs.append((str(key), str(value)))
        result.append((name, pairs))
    return result


def validate(options):
    """Check module parameters; return the normalized configuration dict.

    ``options`` are the module's (:data:`..nbdkit.SERVER_SPEC`). Raises
    NbdkitConfigError naming the parameter and what was expected.
    """
    sock = options.socket
    if not sock or not os.path.isabs(sock):
        raise NbdkitConfigError('socket: expected an absolute path, got %r' % (sock,))
    if len(sock.encode('utf-8')) > 107:
        raise NbdkitConfigError('socket: %s is longer than the 107 bytes a unix socket path may have' % sock)
    transport = options.transport or 'file'
    if transport not in TRANSPORTS:
        raise NbdkitConfigError('transport: expected one of %s, got %r' % (', '.join(TRANSPORTS), transport))
    config = {
        'socket': sock,
        'pidfile': options.pidfile or default_pidfile(sock),
        'transport': transport,
        'filters': normalize_filters(options.filters),
        'nbdkit_path': options.nbdkit_path or 'nbdkit',
        'threads': options.threads,
    }
    if not os.path.isabs(config['pidfile']):
        raise NbdkitConfigError('pidfile: expected an absolute path, got %r' % config['pidfile'])
    if options.state == 'stopped':
        return config  # stopping needs the socket (and pidfile) only
    if transport == 'file':
        return _file_config(options, config)
    # vddk
    missing = [name for name in ('server', 'username', 'password', 'thumbprint', 'vm_moref', 'backing_file')
               if not options[name]]
    if missing:
        raise NbdkitConfigError('transport vddk needs %s' % ', '.join(missing))
    if options.proxy_host:
        raise NbdkitConfigError('proxy_host: the vddk transport cannot go through an HTTP proxy (got %s:%s): VDDK '
                                'connects to vCenter and the ESXi hosts directly; leave proxy_host out of this task '
                                '(module_defaults may give it) or serve the disk with transport=file'
                                % (options.proxy_host, options.proxy_port or 80))
    if options.readonly is False:
        raise NbdkitConfigError('readonly: the vddk transport always serves snapshot disks read-only (-r)')
    thumbprint = options.thumbprint.strip()
    if not THUMBPRINT_RE.match(thumbprint):
        raise NbdkitConfigError('thumbprint: expected the vCenter certificate fingerprint as hex pairs separated '
                                'by colons (SHA-1, e.g. "AB:CD:..." with 20 pairs), got %r' % thumbprint)
    backing = options.backing_file.strip()
    if not re.match(r'^\[[^\]]+\] \S', backing):
        raise NbdkitConfigError('backing_file: expected a datastore path like "[datastore1] vm/vm.vmdk", got %r'
                                % backing)
    compression = options.compression
    if compression and compression not in COMPRESSIONS:
        raise NbdkitConfigError('compression: expected one of %s, got %r' % (', '.join(COMPRESSIONS), compression))
    config.update({
        'readonly': True,
        'vddk_libdir': options.vddk_libdir,
        'server': options.server,
        'port': options.port,
        'username': options.username,
        'password': options.password,
        'thumbprint': thumbprint,
        'vm_moref': normalize_moref(options.vm_moref, 'vm'),
        'snapshot_moref': normalize_moref(options.snapshot_moref, 'snapshot'),
        'backing_file': backing,
        'transports': options.transports or 'nbdssl:nbd',
        'compression': compression,
        'config': options.config,
    })
    if options.read_bps_limit:
        raise NbdkitConfigError('read_bps_limit: only for transport file with format vmdk (qemu-nbd)')
    return config


def _file_config(options, config):
    """transport file: a VMDK chain through qemu-nbd (read-only), or a raw image through nbdkit's file plugin."""
    from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.vmdk import check_chain

    path = options.path
    if not path:
        raise NbdkitConfigError('path: required with transport file (the disk to serve: the snapshot\'s backing '
                                'descriptor on the datastore mount, or a raw image with format raw)')
    fmt = options.format or 'vmdk'
    if fmt not in FORMATS:
        raise NbdkitConfigError('format: expected one of %s, got %r' % (', '.join(FORMATS), fmt))
    config.update(path=os.path.abspath(path), format=fmt)
    root = options.datastore_dir
    if root and not os.path.isabs(root):
        raise NbdkitConfigError('datastore_dir: expected an absolute path (the datastore mount), got %r' % root)
    if fmt == 'raw':
        if options.read_bps_limit:
            raise NbdkitConfigError('read_bps_limit: only for format vmdk (qemu-nbd)')
        config['readonly'] = True if options.readonly is None else bool(options.readonly)
        return config
    if options.readonly is False:
        raise NbdkitConfigError('readonly: format vmdk serves the snapshot\'s frozen chain, always read-only')
    if config['filters']:
        raise NbdkitConfigError('filters: nbdkit filters apply to the nbdkit servers (format raw, transport vddk); '
                                'format vmdk is served by qemu-nbd')
    if options.threads:
        raise NbdkitConfigError('threads: an nbdkit option; format vmdk is served by qemu-nbd (see connections)')
    if options.read_bps_limit is not None and options.read_bps_limit < 1:
        raise NbdkitConfigError('read_bps_limit: expected a positive number of bytes per second, got %r'
                                % options.read_bps_limit)
    if options.connections < 1:
        raise NbdkitConfigError('connections: expected at least 1, got %r' % options.connections)
    aio = options.aio or 'threads'
    if aio not in AIO_MODES:
        raise NbdkitConfigError('aio: expected one of %s, got %r' % (', '.join(AIO_MODES), aio))
    if aio == 'auto':
        aio = 'io_uring' if io_uring_usable() else 'threads'
    config.update(readonly=True, qemu_nbd_path=options.qemu_nbd_path or 'qemu-nbd', aio=aio,
                  connections=options.connections, read_bps_limit=options.read_bps_limit,
                  datastore_dir=root, chain=check_chain(config['path'], root, disk=options.disk))
    return config


def io_uring_usable():
    """True when this kernel lets this process use io_uring (not disabled by sysctl or a seccomp profile).

    Asks the kernel itself: io_uring_setup(1, params) returns a file descriptor
    (closed at once) or fails with ENOSYS (no io_uring) or EPERM (forbidden).
    """
    try:
        with open('/proc/sys/kernel/io_uring_disabled') as handle:
            if handle.read().strip() not in ('', '0'):
                return False
    except (IOError, OSError):
        pass
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
        fd = libc.syscall(425, 1, params)  # __NR_io_uring_setup in the generic syscall table (x86_64, arm64, ...)
    except Exception:  # pylint: disable=broad-except
        return False
    if fd < 0:
        return False
    os.close(fd)
    return True


def server_program(config):
    """``qemu-nbd`` for a VMDK chain, ``nbdkit`` otherwise."""
    return 'qemu-nbd' if config.get('transport') == 'file' and config.get('format') == 'vmdk' else 'nbdkit'


def _qemu_opt(value):
    return value.replace(',', ',,')


def build_qemu_nbd_argv(config):
    """qemu-nbd serving a VMDK chain read-only: block status (base:allocation) and multi-conn come with it."""
    argv = [config['qemu_nbd_path'], '--read-only', '--persistent', '--shared=%d' % int(config['connections']),
            '--socket=' + config['socket'], '--pid-file=' + config['pidfile'], '--fork']
    if config.get('aio') and config['aio'] != 'threads':
        argv.append('--aio=' + config['aio'])
    if config.get('read_bps_limit'):
        argv.extend(['--object', 'throttle-group,id=migratekit0,x-bps-read=%d' % int(config['read_bps_limit']),
                     '--image-opts', 'driver=throttle,throttle-group=migratekit0,file.driver=vmdk,'
                     'file.file.driver=file,file.file.filename=' + _qemu_opt(config['path'])])
    else:
        argv.extend(['--format=vmdk', config['path']])
    return argv


def build_argv(config, password_file=None):
    """The nbdkit command line for ``config`` (from :func:`validate`).

    Pure: no file is touched. For vddk, ``password_file`` is the path of the
    file holding the password; the password itself is never part of argv.
    """
    if server_program(config) == 'qemu-nbd':
        return build_qemu_nbd_argv(config)
    argv = [config['nbdkit_path'], '--log=stderr', '-U', config['socket'], '-P', config['pidfile']]
    if config.get('readonly', True):
        argv.append('-r')
    if config.get('threads'):
        argv.extend(['-t', str(int(config['threads']))])
    for name, _pairs in config.get('filters', []):
        argv.append('--filter=' + name)
    if config['transport'] == 'file':
        argv.extend(['file', 'file=' + config['path']])
    else:
        if not password_file:
            raise NbdkitConfigError('password: the vddk transport needs a password file')
        argv.append('vddk')
        if config.get('vddk_libdir'):
            argv.append('libdir=' + config['vddk_libdir'])
        argv.append('server=' + config['server'])
        if config.get('port'):
            argv.append('port=%d' % int(config['port']))
        argv.append('user=' + config['username'])
        argv.append('password=+' + password_file)
        argv.append('thumbprint=' + config['thumbprint'])
        argv.append('vm=moref=' + config['vm_moref'])
        if config.get('snapshot_moref'):
            argv.append('snapshot=' + config['snapshot_moref'])
        argv.append('file=' + config['backing_file'])
        argv.append('transports=' + config['transports'])
        if config.get('compression'):
            argv.append('compression=' + config['compression'])
        if config.get('config'):
            argv.append('config=' + config['config'])
    for _name, pairs in config.get('filters', []):
        argv.extend('%s=%s' % pair for pair in pairs)
    return argv


def comparable_argv(argv):
    """argv with the (temporary) password file name masked, to compare servers."""
    return [re.sub(r'^password=\+.*$', 'password=+*', arg) for arg in argv]


def server_record(config):
    """What identifies the server ``config`` asks for, recorded next to its pidfile when it starts.

    A running server is recognised by its socket and pidfile, and whether it
    serves what is asked by this record, not by its argv: nbdkit's vddk
    plugin re-executes nbdkit with another command line when LD_LIBRARY_PATH
    lacks its libdir (plugins/vddk/reexec.c: the ``password=`` parameters are
    replaced by ``password=-FD`` of a temporary file, and ``reexeced_=`` is
    appended), so the live process's argv is not the one that was run.
    """
    return {'program': server_program(config), 'socket': config['socket'], 'pidfile': config['pidfile'],
            'argv': comparable_argv(build_argv(config, password_file='*'))}


def reexec_comparable(argv):
    """argv without what nbdkit's vddk re-exec changes (``password=...``, ``reexeced_=...``).

    Only for servers started before the record file existed: see :func:`server_record`.
    """
    return [arg for arg in argv or [] if not arg.startswith(('password=', 'reexeced_='))]
