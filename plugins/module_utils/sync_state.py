# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durable per-VM, per-disk sync state.

One JSON file per VM (see docs/contracts.md). A disk's entry changes only
through :func:`commit_disk`, which is called after that disk's target was
flushed; the file is replaced atomically (temp file, fsync, rename, fsync of
the directory) under an exclusive lock, so concurrent commits of different
disks of one VM never lose each other's entries and a kill at any moment
leaves either the old or the new file.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import contextlib
import datetime
import errno
import fcntl
import json
import os
import tempfile

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

STATE_VERSION = 1


class SyncStateError(MigratekitError):
    """The state file cannot be read or written; the message names the file."""


def empty_state(vm_uuid=None):
    return {'version': STATE_VERSION, 'vm_uuid': vm_uuid, 'disks': {}}


def read_json(path, what='sync state file', error=SyncStateError):
    """The JSON document in ``path``, or None if the file does not exist; ``error`` names the file otherwise."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise error('cannot read %s %s: %s' % (what, path, exc))
    except ValueError as exc:
        raise error('%s %s is not valid JSON: %s' % (what, path, exc))


def load(path):
    """Return the state in ``path``, or an empty state if the file does not exist."""
    state = read_json(path)
    if state is None:
        return empty_state()
    if not isinstance(state, dict) or not isinstance(state.get('disks', {}), dict):
        raise SyncStateError('sync state file %s: expected a JSON object with a "disks" object' % path)
    state.setdefault('version', STATE_VERSION)
    state.setdefault('vm_uuid', None)
    state.setdefault('disks', {})
    return state


def disk_entry(state, disk_key):
    """Return the entry of one disk (by device key) or None."""
    return state['disks'].get(str(disk_key))


# Who a state file belongs to: the VM's BIOS uuid, its instance uuid and its vCenter.
IDENTITY_KEYS = ('vm_uuid', 'vm_instance_uuid', 'vcenter')


def _same(a, b):
    return a.replace('-', '').replace(' ', '').lower() == b.replace('-', '').replace(' ', '').lower()


def owner_mismatch(state, identity):
    """None when ``state`` is the VM's of ``identity`` (or names nobody yet), else why it is not.

    Only what both sides know is compared: a first-wave file without an
    instance uuid or vCenter still matches on the BIOS uuid.
    """
    for key, what in (('vcenter', 'vCenter'), ('vm_instance_uuid', 'instance uuid'), ('vm_uuid', 'uuid')):
        theirs, mine = state.get(key), (identity or {}).get(key)
        if theirs and mine and not _same(str(theirs), str(mine)):
            return 'belongs to VM %s %s, not %s' % (what, theirs, mine)
    return None


@contextlib.contextmanager
def _locked(path):
    """The state file's lock (a ``.lock`` file beside it), created with its directory if needed."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700, exist_ok=True)  # cycles of other VMs may create it meanwhile
        lock_fd = os.open(path + '.lock', os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SyncStateError('cannot create sync state file %s: %s' % (path, exc))
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)


def claim(path, identity):
    """Record ``identity`` (see :data:`IDENTITY_KEYS`) in the state file; return the state.

    Written only when something changes. Raises SyncStateError when the file
    belongs to another VM (keep it aside first, :func:`keep_aside`).
    """
    with _locked(path):
        state = load(path)
        mismatch = owner_mismatch(state, identity)
        if mismatch:
            raise SyncStateError('sync state file %s %s' % (path, mismatch))
        wanted = dict((key, identity[key]) for key in IDENTITY_KEYS if identity.get(key))
        if any(state.get(key) != value for key, value in wanted.items()):
            state.update(wanted)
            write_atomic(path, state)
        return state


def recorded_snapshots(state):
    """The ``snapshots`` record: ``{token: {"kind", "name", "moid", "recorded_at"}}`` (see docs/contracts.md)."""
    snapshots = state.get('snapshots')
    return snapshots if isinstance(snapshots, dict) else {}


def record_snapshot(path, identity, token, kind, name, moid=None, now=None):
    """Record a snapshot this collection is about to create (``moid`` None) or has created.

    The token goes in before CreateSnapshot, so that a crash before the moref
    is known still leaves the snapshot recognisable as ours.
    """
    with _locked(path):
        state = load(path)
        mismatch = owner_mismatch(state, identity)
        if mismatch:
            raise SyncStateError('sync state file %s %s' % (path, mismatch))
        snapshots = state.setdefault('snapshots', {})
        if not isinstance(snapshots, dict):
            snapshots = state['snapshots'] = {}
        entry = snapshots.setdefault(token, {})
        entry.update(kind=kind, name=name)
        entry.setdefault('recorded_at', (now or datetime.datetime.utcnow()).strftime('%Y-%m-%dT%H:%M:%SZ'))
        if moid:
            entry['moid'] = moid
        write_atomic(path, state)
        return entry


def forget_snapshots(path, tokens=(), moids=()):
    """Drop the record of snapshots removed (or never created); written only when something goes."""
    tokens, moids = set(tokens), set(moid for moid in moids if moid)
    if not tokens and not moids:
        return
    with _locked(path):
        state = load(path)
        snapshots = recorded_snapshots(state)
        gone = [token for token, entry in snapshots.items() if token in tokens or entry.get('moid') in moids]
        if not gone:
            return
        for token in gone:
            del snapshots[token]
        write_atomic(path, state)


def keep_aside(path, now=None):
    """Rename ``path`` to ``<path>.aside-<UTC time>`` (never deleted); return the new name, or None."""
    stamp = (now or datetime.datetime.utcnow()).strftime('%Y%m%dT%H%M%SZ')
    with _locked(path):
        if not os.path.exists(path):
            return None
        aside = '%s.aside-%s' % (path, stamp)
        index = 1
        while os.path.exists(aside):
            index += 1
            aside = '%s.aside-%s-%d' % (path, stamp, index)
        try:
            os.rename(path, aside)
            _fsync_directory(os.path.dirname(os.path.abspath(path)))
        except OSError as exc:
            raise SyncStateError('cannot keep sync state file %s aside as %s: %s' % (path, aside, exc))
        return aside


def commit_disk(path, vm_uuid, disk_key, change_id, capacity_bytes, target, now=None):
    """Record ``change_id`` as the synced point of one disk; return the new entry.

    Raises SyncStateError when the file belongs to another VM: committing
    there would make a later cycle copy only another VM's changes.
    """
    if not change_id:
        raise SyncStateError('refusing to commit an empty change_id for disk %s in %s' % (disk_key, path))
    with _locked(path):
        state = load(path)
        if state.get('vm_uuid') and vm_uuid and state['vm_uuid'] != vm_uuid:
            raise SyncStateError('sync state file %s belongs to VM %s, not %s'
                                 % (path, state['vm_uuid'], vm_uuid))
        if vm_uuid:
            state['vm_uuid'] = vm_uuid
        entry = {
            'change_id': change_id,
            'capacity_bytes': int(capacity_bytes),
            'target': target,
            'synced_at': (now or datetime.datetime.utcnow()).strftime('%Y-%m-%dT%H:%M:%SZ'),
        }
        state['disks'][str(disk_key)] = entry
        write_atomic(path, state)
        return entry


def _fsync_directory(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path, data, what='sync state file'):
    """Replace ``path`` by ``data`` as JSON: temp file, fsync, rename, fsync dir."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700, exist_ok=True)  # cycles of other VMs may create it meanwhile
        fd, tmp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
    except OSError as exc:
        raise SyncStateError('cannot write %s %s: %s' % (what, path, exc))
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write('\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, 0o600)
        os.rename(tmp_path, path)
        _fsync_directory(directory)
    except (IOError, OSError) as exc:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise SyncStateError('cannot write %s %s: %s' % (what, path, exc))


def describe(path):
    """What the state file says, read-only: ``exists``, the identity keys and the committed disks."""
    state = load(path)
    described = {'exists': os.path.exists(path), 'state_file': path}
    for key in IDENTITY_KEYS:
        described[key] = state.get(key)
    described['disks'] = dict((str(key), {
        'change_id': entry.get('change_id'),
        'capacity_bytes': entry.get('capacity_bytes'),
        'target': entry.get('target'),
        'synced_at': entry.get('synced_at'),
    }) for key, entry in state['disks'].items())
    return described
