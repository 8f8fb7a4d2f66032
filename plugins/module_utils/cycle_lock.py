# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One cycle per VM at a time: a lock on the appliance held from a cycle's first task to its last.

The lock is an ``flock`` on a file in the state directory. A cycle runs as
many module processes, none of which lives as long as the cycle, so the lock
is held by a small holder process that this module starts: it inherits the
locked file descriptor and keeps it until the cycle releases the lock, or
until the process that runs the cycle is gone (ansible-playbook when the
appliance is the controller, the SSH session when it is reached over SSH),
so a killed playbook never leaves a VM locked: a lock whose holder died is
free again, and the next cycle takes it. The file's content says who holds
it (token, start, cycle, the playbook's pid and command line), for the
message of a cycle that finds it taken.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

HOLDER_MARK = 'migratekit-cycle-lock-holder'
DEFAULT_MAX_HOLD = 86400

# The holder: keeps the inherited descriptor (and so the flock) until SIGTERM,
# until the watched process is gone (or its pid reused), or past the deadline.
HOLDER = r'''
import os, signal, sys, time
fd, watch, born, deadline = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
signal.signal(signal.SIGTERM, lambda *args: os._exit(0))
def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (IOError, OSError):
        return False
    return fields[0] not in ('Z', 'X') and fields[19] == born
while True:
    if watch and not alive(watch):
        break
    if deadline and time.time() > deadline:
        break
    time.sleep(0.5)
'''

LOCK_SPEC = ArgumentSpec(dict(
    path=dict(type='path', required=True),
    state=dict(type='str', choices=['locked', 'unlocked'], default='locked'),
    token=dict(type='str', no_log=False),
    owner=dict(type='dict', default={}),
    max_hold=dict(type='int', default=DEFAULT_MAX_HOLD),
), required_if=[('state', 'unlocked', ['token'])])

LIBRARIES = ()


class CycleLockError(MigratekitError):
    """The lock could not be taken (another cycle holds it) or handled."""


# ---------------------------------------------------------------- /proc

def _stat_fields(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()
    except (IOError, OSError):
        return None


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return [part.decode('utf-8', 'replace') for part in handle.read().rstrip(b'\0').split(b'\0')]
    except (IOError, OSError):
        return []


def process_alive(pid, born=None):
    """True when ``pid`` runs (not a zombie) and, with ``born``, is the process that started then."""
    fields = _stat_fields(pid) if pid else None
    if not fields or fields[0] in ('Z', 'X'):
        return False
    return born is None or fields[19] == born


def cycle_process(pid=None):
    """``(pid, start time, argv)`` of the process that runs this cycle, or ``(None, None, [])``.

    Walking up from ``pid`` (this process): the topmost ansible-playbook (or
    ansible) process when the appliance is the controller, else the nearest
    sshd, the session of the controller's connection.
    """
    ansible = sshd = None
    current = pid or os.getpid()
    while current and current > 1:
        fields = _stat_fields(current)
        if fields is None:
            break
        argv = _cmdline(current)
        names = [os.path.basename(part) for part in argv[:2]]
        if any(name.startswith('ansible-playbook') or name == 'ansible' for name in names):
            ansible = (current, fields[19], argv)
        elif sshd is None and argv and os.path.basename(argv[0]).startswith('sshd'):
            sshd = (current, fields[19], argv)
        current = int(fields[1])
    return ansible or sshd or (None, None, [])


# ---------------------------------------------------------------- the lock file

def _open(path):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700, exist_ok=True)  # cycles of other VMs may create it meanwhile
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CycleLockError('cannot open the lock file %s: %s' % (path, exc.strerror or exc),
                             operation='take the cycle lock')


def read_holder(path):
    """What the lock file says about its holder (a dict, empty when unreadable)."""
    try:
        with open(path) as handle:
            info = json.load(handle)
    except (IOError, OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _write_holder(fd, info):
    data = json.dumps(info, sort_keys=True).encode('utf-8') + b'\n'
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)


def describe_holder(info):
    """The running cycle, as a person reads it: what, since when, which process."""
    owner = info.get('owner') or {}
    parts = []
    if owner.get('cycle'):
        parts.append(str(owner['cycle']))
    if info.get('watch_pid'):
        parts.append('pid %s (%s)' % (info['watch_pid'], ' '.join(info.get('watch_argv') or [])[:200]))
    if owner.get('job_id'):
        parts.append('job %s' % owner['job_id'])
    text = ', '.join(parts) or 'a cycle that left no details'
    return '%s, since %s' % (text, info.get('started') or 'an unknown time')


def _held_error(path, subject):
    info = read_holder(path)
    return CycleLockError('another cycle holds %s: %s. This cycle changed nothing; run it again when that one '
                          'has ended (a lock whose cycle died is free again)' % (path, describe_holder(info)),
                          operation='take the cycle lock', subject=subject, details={'holder': info})


def _try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise


def _mark_released(path, info):
    """Say in the lock file that its cycle ended and released it (the next cycle has nothing to clean up)."""
    info = dict(info, released=datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'))
    fd = os.open(path, os.O_RDWR)
    try:
        _write_holder(fd, info)
    finally:
        os.close(fd)


def _take_over(fd, path, timeout=5.0):
    """Take a lock whose cycle is gone but whose holder has not noticed yet (it looks twice a second)."""
    info = read_holder(path)
    watch_pid, holder = info.get('watch_pid'), info.get('holder_pid')
    if not watch_pid or process_alive(watch_pid, info.get('watch_born')):
        return False
    if holder and process_alive(holder) and HOLDER_MARK in _cmdline(holder):
        os.kill(holder, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _try_lock(fd):
            return True
        time.sleep(0.05)
    return False


def _subject(options):
    vm = (options.owner or {}).get('vm')
    return 'VM %s' % vm if vm else None


def lock(options, check_mode=False, now=None, watch=None):
    """Take the lock of ``options.path`` for this cycle; the result names the token that releases it.

    Taking it again with the same token changes nothing. ``watch`` is
    ``(pid, start time, argv)`` of the cycle's process (default: found by
    :func:`cycle_process`).
    """
    path = options.path
    info = read_holder(path)
    if options.token and info.get('token') == options.token and process_alive(info.get('holder_pid')):
        return dict(changed=False, path=path, previous='held', **info)
    # how the cycle before this one ended: a released lock means it cleaned up after itself
    previous = 'released' if info.get('released') else ('interrupted' if info else 'none')
    fd = _open(path)
    try:
        if not _try_lock(fd) and not _take_over(fd, path):
            raise _held_error(path, _subject(options))
        if check_mode:
            return dict(changed=True, path=path, token=None, owner=options.owner, previous=previous)
        watch_pid, born, argv = watch or cycle_process()
        deadline = 0.0 if watch_pid else time.time() + max(0, options.max_hold)
        info = {
            'token': options.token or uuid.uuid4().hex,
            'owner': options.owner or {},
            'started': (now or datetime.datetime.utcnow()).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'watch_pid': watch_pid,
            'watch_born': born,
            'watch_argv': argv[:8],
            'host': os.uname()[1],
        }
        _write_holder(fd, info)
        try:
            with open(os.devnull, 'r+b') as devnull:
                holder = subprocess.Popen(
                    [sys.executable, '-c', HOLDER, HOLDER_MARK, str(fd), str(watch_pid or 0), str(born or ''),
                     str(deadline)], pass_fds=(fd,), stdin=devnull, stdout=devnull, stderr=devnull, cwd='/',
                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise CycleLockError('cannot start the lock holder: %s' % exc, operation='take the cycle lock',
                                 subject=_subject(options))
        info['holder_pid'] = holder.pid
        _write_holder(fd, info)
        return dict(changed=True, path=path, previous=previous, **info)
    finally:
        os.close(fd)  # the holder keeps the lock through its own copy of the descriptor


def unlock(options, check_mode=False, timeout=10.0):
    """Release the lock when ``options.token`` holds it; someone else's lock is left alone."""
    path = options.path
    info = read_holder(path)
    holder = info.get('holder_pid')
    ours = info.get('token') == options.token
    running = bool(holder) and process_alive(holder) and HOLDER_MARK in _cmdline(holder)
    result = dict(changed=ours and running, path=path, token=options.token, holder_pid=holder)
    if not ours:
        if info.get('token'):
            result['warnings'] = ['%s is held by another cycle (%s); it was left alone'
                                  % (path, describe_holder(info))]
        return result
    if check_mode or not running:
        return result
    _mark_released(path, info)
    os.kill(holder, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(holder) and time.monotonic() < deadline:
        time.sleep(0.02)
    if process_alive(holder):
        os.kill(holder, signal.SIGKILL)
    try:
        os.waitpid(holder, os.WNOHANG)  # not our child unless started in this process (tests)
    except OSError:
        pass
    return result


def cycle_lock_module(options, check_mode=False):
    """The cycle_lock module (:data:`LOCK_SPEC`): ``state=locked`` takes the lock, ``unlocked`` releases it."""
    if options.state == 'locked':
        return lock(options, check_mode=check_mode)
    return unlock(options, check_mode=check_mode)
