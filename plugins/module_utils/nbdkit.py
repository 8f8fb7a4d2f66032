# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start and stop nbdkit servers on private unix sockets.

A server serves one disk: a file (a datastore reachable as a directory, and
the lab) or a VMware snapshot disk through nbdkit's vddk plugin. The command
line is built by the pure function :func:`build_argv`; the password of the
vddk plugin never appears in it: it goes into a 0600 file in the socket's
private directory and nbdkit gets ``password=+FILE``.

nbdkit reads ``password=+FILE`` while it parses its parameters (the plugin's
``config`` callback calls ``nbdkit_read_password``, which opens and reads the
file at once; a missing file makes nbdkit exit 1 before it serves anything).
Parameters are parsed before nbdkit binds its socket, forks into the
background and writes its pidfile, so once the socket answers, the file has
been read and is removed. It is also removed on every failure path and, should
one be left over from a killed run, when the server is stopped.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import glob
import os
import re
import signal
import socket as socket_module
import stat
import subprocess
import tempfile
import time

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2
    from urllib import quote

try:
    import nbd
    HAS_NBD = True
except ImportError:
    nbd = None
    HAS_NBD = False

TRANSPORTS = ('file', 'vddk')
COMPRESSIONS = ('none', 'zlib', 'fastlz', 'skipz')
PASSWORD_MARK = '.password.'
THUMBPRINT_RE = re.compile(r'^([0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$')
MOREF_RE = re.compile(r'^[A-Za-z0-9_.:-]+$')
FILTER_NAME_RE = re.compile(r'^[A-Za-z0-9_-]+$')
PARAM_KEY_RE = re.compile(r'^[A-Za-z0-9_.-]+$')


class NbdkitError(Exception):
    """A server could not be configured, started or stopped.

    ``operation`` (``configure``, ``start``, ``stop``) and ``obj`` (the socket)
    name what failed, so the module reports it in one place.
    """

    def __init__(self, message, operation='configure', obj=None):
        super(NbdkitError, self).__init__(message)
        self.message = message
        self.operation = operation
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


def validate(params):
    """Check module parameters; return the normalized configuration dict.

    Raises NbdkitConfigError naming the parameter and what was expected.
    """
    sock = params.get('socket')
    if not sock or not os.path.isabs(sock):
        raise NbdkitConfigError('socket: expected an absolute path, got %r' % (sock,))
    if len(sock.encode('utf-8')) > 107:
        raise NbdkitConfigError('socket: %s is longer than the 107 bytes a unix socket path may have' % sock)
    transport = params.get('transport') or 'file'
    if transport not in TRANSPORTS:
        raise NbdkitConfigError('transport: expected one of %s, got %r' % (', '.join(TRANSPORTS), transport))
    config = {
        'socket': sock,
        'pidfile': params.get('pidfile') or default_pidfile(sock),
        'transport': transport,
        'filters': normalize_filters(params.get('filters')),
        'nbdkit_path': params.get('nbdkit_path') or 'nbdkit',
        'threads': params.get('threads'),
    }
    if not os.path.isabs(config['pidfile']):
        raise NbdkitConfigError('pidfile: expected an absolute path, got %r' % config['pidfile'])
    if params.get('state') == 'stopped':
        return config  # stopping needs the socket (and pidfile) only
    if transport == 'file':
        path = params.get('path')
        if not path:
            raise NbdkitConfigError('path: required with transport file (the disk image to serve)')
        config['path'] = os.path.abspath(path)
        config['readonly'] = True if params.get('readonly') is None else bool(params['readonly'])
        return config
    # vddk
    missing = [name for name in ('server', 'username', 'password', 'thumbprint', 'vm_moref', 'backing_file')
               if not params.get(name)]
    if missing:
        raise NbdkitConfigError('transport vddk needs %s' % ', '.join(missing))
    if params.get('readonly') is False:
        raise NbdkitConfigError('readonly: the vddk transport always serves snapshot disks read-only (-r)')
    thumbprint = params['thumbprint'].strip()
    if not THUMBPRINT_RE.match(thumbprint):
        raise NbdkitConfigError('thumbprint: expected the vCenter certificate fingerprint as hex pairs separated '
                                'by colons (SHA-1, e.g. "AB:CD:..." with 20 pairs), got %r' % thumbprint)
    backing = params['backing_file'].strip()
    if not re.match(r'^\[[^\]]+\] \S', backing):
        raise NbdkitConfigError('backing_file: expected a datastore path like "[datastore1] vm/vm.vmdk", got %r'
                                % backing)
    compression = params.get('compression')
    if compression and compression not in COMPRESSIONS:
        raise NbdkitConfigError('compression: expected one of %s, got %r' % (', '.join(COMPRESSIONS), compression))
    config.update({
        'readonly': True,
        'vddk_libdir': params.get('vddk_libdir'),
        'server': params['server'],
        'port': params.get('port'),
        'username': params['username'],
        'password': params['password'],
        'thumbprint': thumbprint,
        'vm_moref': normalize_moref(params['vm_moref'], 'vm'),
        'snapshot_moref': normalize_moref(params.get('snapshot_moref'), 'snapshot'),
        'backing_file': backing,
        'transports': params.get('transports') or 'nbdssl:nbd',
        'compression': compression,
        'config': params.get('config'),
        'single_link': bool(params.get('single_link')),
    })
    return config


def build_argv(config, password_file=None):
    """The nbdkit command line for ``config`` (from :func:`validate`).

    Pure: no file is touched. For vddk, ``password_file`` is the path of the
    file holding the password; the password itself is never part of argv.
    """
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
        if config.get('single_link'):
            argv.append('single-link=true')
    for _name, pairs in config.get('filters', []):
        argv.extend('%s=%s' % pair for pair in pairs)
    return argv


def comparable_argv(argv):
    """argv with the (temporary) password file name masked, to compare servers."""
    return [re.sub(r'^password=\+.*$', 'password=+*', arg) for arg in argv]


# ------------------------------------------------------------- file system

def ensure_private_dir(directory, create=True):
    """Make sure ``directory`` exists, is ours and is mode 0700.

    A directory we create is made 0700. An existing one that others can enter
    (/tmp, a shared directory) is refused rather than changed.
    Returns True when it was created.
    """
    try:
        st = os.stat(directory)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise NbdkitConfigError('socket directory %s: %s' % (directory, exc))
        if not create:
            return False
        try:
            os.makedirs(directory, 0o700)
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise NbdkitConfigError('socket directory %s: cannot create it: %s' % (directory, exc))
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise NbdkitConfigError('socket directory %s is not a directory' % directory)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise NbdkitConfigError('socket directory %s must be private to this user (mode 0700, owner uid %d), it is '
                                'mode %04o owned by uid %d: use a dedicated directory'
                                % (directory, os.geteuid(), stat.S_IMODE(st.st_mode), st.st_uid))
    return False


def write_password_file(directory, socket_path, password):
    """Write ``password`` to a new 0600 file in ``directory``; return its path."""
    fd, path = tempfile.mkstemp(prefix='.%s%s' % (os.path.basename(socket_path), PASSWORD_MARK), dir=directory)
    try:
        os.fchmod(fd, 0o600)
        data = password.encode('utf-8') if not isinstance(password, bytes) else password
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except Exception:
        os.close(fd)
        remove_file(path)
        raise
    os.close(fd)
    return path


def password_files(socket_path):
    directory = os.path.dirname(socket_path)
    prefix = '.%s%s' % (glob.escape(os.path.basename(socket_path)), PASSWORD_MARK)
    pattern = os.path.join(glob.escape(directory), prefix + '*')
    return glob.glob(pattern)


def remove_file(path):
    """Remove ``path`` if it exists; return True when something was removed."""
    try:
        os.unlink(path)
        return True
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


# --------------------------------------------------------------- processes

def read_pidfile(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise NbdkitError('cannot read pidfile %s: %s' % (path, exc), 'inspect', path)
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 1 else None


def process_cmdline(pid):
    """argv of a live (non-zombie) process, or None."""
    try:
        with open('/proc/%d/status' % pid) as handle:
            for line in handle:
                if line.startswith('State:'):
                    if line.split()[1] in ('Z', 'X'):
                        return None
                    break
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return [part.decode('utf-8', 'replace') for part in raw.rstrip(b'\0').split(b'\0')]


def is_our_server(cmdline, socket_path):
    """True when ``cmdline`` is an nbdkit serving ``socket_path``."""
    if not cmdline or 'nbdkit' not in os.path.basename(cmdline[0]):
        return False
    for index, arg in enumerate(cmdline[:-1]):
        if arg in ('-U', '--unix') and cmdline[index + 1] == socket_path:
            return True
    return ('--unix=' + socket_path) in cmdline


def process_alive(pid):
    return process_cmdline(pid) is not None


def probe(socket_path):
    """Return the export size when the server on ``socket_path`` answers an NBD handshake.

    Raises OSError / nbd.Error when it does not. Without libnbd, checks the
    server's greeting only and returns None for the size.
    """
    if HAS_NBD:
        handle = nbd.NBD()
        try:
            handle.connect_uri(socket_uri(socket_path))
            size = handle.get_size()
            handle.shutdown()
        finally:
            close = getattr(handle, 'close', None)  # libnbd >= 1.16; older ones close in __del__
            if close is not None:
                close()
            del handle
        return size
    conn = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    try:
        conn.settimeout(5)
        conn.connect(socket_path)
        greeting = b''
        while len(greeting) < 8:
            chunk = conn.recv(8 - len(greeting))
            if not chunk:
                break
            greeting += chunk
    finally:
        conn.close()
    if greeting != b'NBDMAGIC':
        raise OSError(errno.EPROTO, 'not an NBD server (greeting %r)' % greeting)
    return None


def read_log(path, limit=4000):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode('utf-8', 'replace').strip()
    except (IOError, OSError):
        return ''


def sockets_in(directory):
    """Sockets of servers (running or left over) in ``directory``, from their pidfiles and socket files."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise NbdkitError('cannot list %s: %s' % (directory, exc), 'inspect', directory)
    found = set()
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith('.pid'):
            found.add(path[:-len('.pid')])
        elif name.startswith('.') and PASSWORD_MARK in name:
            found.add(os.path.join(directory, name[1:name.index(PASSWORD_MARK)]))
        else:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.add(path)
            except OSError:
                pass
    return sorted(found)


def stop_all(directory, timeout=60.0, check_mode=False):
    """Stop every server whose socket or pidfile is in ``directory``; return ``(changed, [results])``."""
    changed = False
    results = []
    for sock in sockets_in(directory):
        server = NbdkitServer({'socket': sock, 'pidfile': default_pidfile(sock), 'transport': None},
                              timeout=timeout)
        one_changed, result = server.ensure_stopped(check_mode=check_mode)
        changed = changed or one_changed
        if one_changed:
            results.append(result)
    return changed, results


class NbdkitServer(object):
    """One nbdkit server, identified by its socket (and pidfile)."""

    def __init__(self, config, timeout=60.0, sleep=time.sleep, clock=time.monotonic):
        self.config = config
        self.socket = config['socket']
        self.pidfile = config['pidfile']
        self.logfile = default_logfile(self.socket)
        self.directory = os.path.dirname(self.socket)
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock

    # ---------------------------------------------------------- inspection

    def running(self):
        """``(pid, cmdline)`` of our live server on this socket, or ``(None, None)``."""
        pid = read_pidfile(self.pidfile)
        if pid is None:
            return None, None
        cmdline = process_cmdline(pid)
        if cmdline is None or not is_our_server(cmdline, self.socket):
            return None, None
        return pid, cmdline

    def result(self, pid=None, argv=None, size=None):
        return {
            'socket': self.socket,
            'uri': socket_uri(self.socket),
            'pidfile': self.pidfile,
            'log_file': self.logfile,
            'pid': pid,
            'argv': argv,
            'size_bytes': size,
            'transport': self.config.get('transport'),
        }

    # -------------------------------------------------------------- start

    def ensure_started(self, check_mode=False):
        """Start the server unless the same one already runs; return ``(changed, result)``."""
        ensure_private_dir(self.directory, create=not check_mode)
        pid, cmdline = self.running()
        desired = comparable_argv(build_argv(self.config, password_file='*'))
        restarted = False
        if pid is not None:
            if comparable_argv(cmdline) == desired:
                try:
                    size = probe(self.socket)
                except Exception:  # a live process whose socket is gone: restart it
                    size = False
                if size is not False:
                    result = self.result(pid, cmdline, size)
                    result['restarted'] = False
                    return False, result
            if check_mode:
                result = self.result(pid, cmdline)
                result['restarted'] = True
                return True, result
            self._stop_pid(pid)
            restarted = True
        elif os.path.exists(self.socket):
            st = os.lstat(self.socket)
            if not stat.S_ISSOCK(st.st_mode):
                raise NbdkitConfigError('socket %s exists and is not a socket' % self.socket, obj=self.socket)
            try:
                probe(self.socket)
                answering = True
            except Exception:
                answering = False
            if answering:
                raise NbdkitStartError('socket %s is served by a process this module did not start (no live nbdkit '
                                       'in pidfile %s): stop it or choose another socket'
                                       % (self.socket, self.pidfile), self.socket)
        if check_mode:
            result = self.result(None, comparable_argv(build_argv(self.config, password_file='*')))
            result['restarted'] = restarted
            return True, result
        self._cleanup_files()
        pid, argv, size = self._start()
        result = self.result(pid, argv, size)
        result['restarted'] = restarted
        return True, result

    def _start(self):
        password_file = None
        try:
            if self.config['transport'] == 'vddk':
                password_file = write_password_file(self.directory, self.socket, self.config['password'])
            argv = build_argv(self.config, password_file)
            log_fd = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with open(os.devnull, 'rb') as devnull_in, open(os.devnull, 'wb') as devnull_out:
                    try:
                        proc = subprocess.Popen(argv, stdin=devnull_in, stdout=devnull_out, stderr=log_fd,
                                                close_fds=True, cwd='/')
                    except OSError as exc:
                        raise NbdkitStartError('cannot run %s: %s' % (argv[0], exc), self.socket)
            finally:
                os.close(log_fd)
            size = self._wait_ready(proc)
            pid = read_pidfile(self.pidfile)
            return pid, argv, size
        except Exception:
            self._kill_leftover()
            raise
        finally:
            # Safe as soon as nbdkit answered (see the module docstring), and on every failure.
            if password_file:
                remove_file(password_file)

    def _wait_ready(self, proc):
        deadline = self._clock() + self.timeout
        last_error = None
        parent_rc = None
        while True:
            if parent_rc is None:
                parent_rc = proc.poll()
                if parent_rc is not None and parent_rc != 0:
                    raise NbdkitStartError('nbdkit exited with status %d: %s'
                                           % (parent_rc, read_log(self.logfile) or 'no message'), self.socket)
            if parent_rc == 0:
                pid = read_pidfile(self.pidfile)
                if pid is not None:
                    if not process_alive(pid):
                        raise NbdkitStartError('nbdkit (pid %d) exited right after starting: %s'
                                               % (pid, read_log(self.logfile) or 'no message'), self.socket)
                    try:
                        return probe(self.socket)
                    except Exception as exc:  # not answering yet
                        last_error = exc
            if self._clock() > deadline:
                if parent_rc is None:
                    proc.kill()
                    proc.wait()
                raise NbdkitStartError('nbdkit did not answer on %s within %ss (%s): %s'
                                       % (self.socket, self.timeout, last_error or 'no pidfile',
                                          read_log(self.logfile) or 'no message'), self.socket)
            self._sleep(0.05)

    def _kill_leftover(self):
        pid = read_pidfile(self.pidfile)
        if pid is not None and is_our_server(process_cmdline(pid), self.socket):
            try:
                self._stop_pid(pid)
            except NbdkitError:
                pass
        self._cleanup_files(keep_log=True)

    # --------------------------------------------------------------- stop

    def ensure_stopped(self, check_mode=False):
        """Stop the server and remove its files; return ``(changed, result)``."""
        pid, cmdline = self.running()
        leftovers = [path for path in [self.socket, self.pidfile] + password_files(self.socket)
                     if os.path.lexists(path)]
        changed = pid is not None or bool(leftovers)
        if check_mode:
            return changed, self.result(pid, cmdline)
        if pid is not None:
            self._stop_pid(pid)
        self._cleanup_files()
        return changed, self.result(pid, cmdline)

    def _stop_pid(self, pid):
        for sig, wait in ((signal.SIGTERM, self.timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    return
                raise NbdkitStopError('cannot signal nbdkit pid %d: %s' % (pid, exc), self.socket)
            deadline = self._clock() + wait
            while self._clock() < deadline:
                if not process_alive(pid):
                    return
                self._sleep(0.05)
        if process_alive(pid):
            raise NbdkitStopError('nbdkit pid %d did not exit after SIGKILL' % pid, self.socket)

    def _cleanup_files(self, keep_log=False):
        paths = [self.socket, self.pidfile] + password_files(self.socket)
        if not keep_log:
            paths.append(self.logfile)
        for path in paths:
            try:
                remove_file(path)
            except OSError as exc:
                raise NbdkitError('cannot remove %s: %s' % (path, exc), 'clean up', self.socket)


# ---------------------------------------------------------------- the module

def argument_spec():
    """The nbdkit_server module's options (documented in its DOCUMENTATION)."""
    return dict(
        state=dict(type='str', choices=['started', 'stopped'], default='started'),
        socket=dict(type='path'),
        socket_dir=dict(type='path'),
        pidfile=dict(type='path'),
        transport=dict(type='str', choices=list(TRANSPORTS), default='file'),
        path=dict(type='path'),
        readonly=dict(type='bool', default=True),
        vddk_libdir=dict(type='path'),
        server=dict(type='str'),
        port=dict(type='int'),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
        thumbprint=dict(type='str'),
        vm_moref=dict(type='str'),
        snapshot_moref=dict(type='str'),
        backing_file=dict(type='str'),
        transports=dict(type='str', default='nbdssl:nbd'),
        compression=dict(type='str', choices=list(COMPRESSIONS)),
        config=dict(type='path'),
        single_link=dict(type='bool', default=False),
        filters=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True),
            params=dict(type='dict', default={}),
        )),
        threads=dict(type='int'),
        nbdkit_path=dict(type='path', default='nbdkit'),
        timeout=dict(type='float', default=60.0),
    )


def nbdkit_server_module(params, check_mode=False):
    """The whole nbdkit_server module: start or stop one server, or stop every server in ``socket_dir``.

    Returns the result (with ``changed`` and a ``diff`` the module drops
    outside diff mode); raises NbdkitError.
    """
    state = params['state']
    if params['socket_dir']:
        if state != 'stopped':
            raise NbdkitConfigError('socket_dir is only for state=stopped; give socket to start a server',
                                    obj=params['socket_dir'])
        changed, stopped = stop_all(params['socket_dir'], timeout=params['timeout'], check_mode=check_mode)
        return dict(changed=changed, state=state, stopped=stopped)
    server = NbdkitServer(validate(params), timeout=params['timeout'])
    before_pid, before_argv = server.running()
    if state == 'started':
        changed, result = server.ensure_started(check_mode=check_mode)
    else:
        changed, result = server.ensure_stopped(check_mode=check_mode)
    result.update(changed=changed, state=state)
    result['diff'] = {
        'before': {'state': 'started' if before_pid else 'stopped',
                   'argv': comparable_argv(before_argv) if before_argv else None},
        'after': {'state': state,
                  'argv': comparable_argv(result['argv']) if state == 'started' and result['argv'] else None},
    }
    return result


def error_message(exc, params):
    """The module's one failure message: the operation and the server(s) it concerned."""
    if params.get('socket_dir'):
        what = 'the servers in %s' % params['socket_dir']
    else:
        what = 'the server on %s' % (exc.obj or params.get('socket'))
    return 'nbdkit_server: cannot %s %s: %s' % (exc.operation, what, exc.message)
