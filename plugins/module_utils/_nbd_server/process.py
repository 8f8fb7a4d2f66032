# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files and processes of servers: private socket directories, password files, pidfiles, probes.

Everything here touches the file system or /proc; nothing starts a server
(:mod:`.server` does).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import glob
import json
import os
import socket as socket_module
import stat
import tempfile

try:
    import nbd
    HAS_NBD = True
except ImportError:
    nbd = None
    HAS_NBD = False

from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.config import (
    PASSWORD_MARK, RECORD_SUFFIX, NbdkitConfigError, NbdkitError, socket_uri,
)

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


def write_record(path, record):
    """Write ``record`` (JSON) to ``path`` atomically (temporary file, rename), mode 0600."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.record-', dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(record, handle, sort_keys=True)
        os.rename(tmp, path)
    except Exception:
        remove_file(tmp)
        raise


def read_record(path):
    """The record written by :func:`write_record`, or None when it is missing or unreadable."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


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
    """True when ``cmdline`` is an nbdkit or a qemu-nbd serving ``socket_path``."""
    if not cmdline:
        return False
    program = os.path.basename(cmdline[0])
    if 'nbdkit' in program:
        flags, prefix = ('-U', '--unix'), '--unix='
    elif 'qemu-nbd' in program:
        flags, prefix = ('-k', '--socket'), '--socket='
    else:
        return False
    for index, arg in enumerate(cmdline[:-1]):
        if arg in flags and cmdline[index + 1] == socket_path:
            return True
    return (prefix + socket_path) in cmdline


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
        elif name.endswith(RECORD_SUFFIX):
            found.add(path[:-len(RECORD_SUFFIX)])
        elif name.startswith('.') and PASSWORD_MARK in name:
            found.add(os.path.join(directory, name[1:name.index(PASSWORD_MARK)]))
        else:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.add(path)
            except OSError:
                pass
    return sorted(found)
