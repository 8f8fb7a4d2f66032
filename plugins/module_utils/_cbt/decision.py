# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The full-or-incremental decision and the changed-areas paging: pure, no vSphere call.

Owns the CBT errors, changeId parsing, :func:`decide_sync` (the whole
decision table) and the ``QueryChangedDiskAreas`` paging loop, which takes
the query as a callable. :mod:`..cbt` runs them against vSphere.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections

from ansible_collections.migratekit.migration.plugins.module_utils import extents as extents_util
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    InvalidParameterError,
    VSphereError,
)

MODES = ('auto', 'full', 'incremental')

SyncDecision = collections.namedtuple('SyncDecision', 'sync_type previous_change_id reason_code reason')


class CbtError(VSphereError):
    """Base of the CBT errors."""


class CbtUnsupportedError(CbtError):
    """CBT cannot work for this VM (hardware version, no usable disk, CBT off and not allowed)."""


class IncrementalNotPossibleError(CbtError):
    """``mode: incremental`` was asked for but a disk needs a full copy."""


class ExtentsDirError(CbtError):
    """``extents_dir`` cannot be created or written."""


class StateFileError(CbtError):
    """The sync state file cannot be read."""


class ChangedAreasError(CbtError):
    """QueryChangedDiskAreas answered something unusable."""


# --------------------------------------------------------------------------
# pure helpers

def parse_change_id(change_id):
    """Split ``"<cbt uuid>/<sequence>"`` into ``(uuid, sequence)``; ValueError if malformed."""
    if not isinstance(change_id, str) or '/' not in change_id:
        raise ValueError('changeId %r is not of the form "<uuid>/<sequence>"' % (change_id,))
    uuid, sequence = change_id.rsplit('/', 1)
    uuid = uuid.strip()
    if not uuid or not sequence.strip().isdigit():
        raise ValueError('changeId %r is not of the form "<uuid>/<sequence>"' % (change_id,))
    return uuid, int(sequence)


def target_for(targets, key, label):
    """The target of a disk in the ``targets`` option (keyed by device key or label)."""
    if not targets:
        return None
    for candidate in (str(key), key, label):
        if candidate in targets:
            return targets[candidate]
    return None


def decide_sync(mode, disk_key, capacity_bytes, change_id, vm_uuid=None, state=None, state_file=None,
                target=None, rejected=None, cbt_was_enabled=True, change_id_known=True, label=None, identity=None,
                reset_requested=False):
    """Decide full or incremental for one disk; return a :class:`SyncDecision`.

    ``state`` is the loaded sync state (None: no state file was given),
    ``change_id`` the changeId of the disk in the migration snapshot,
    ``target`` the disk's target now (compared with the one in the state, if
    both are known), ``rejected`` the fault message when vSphere refused the
    stored changeId. With ``change_id_known=False`` (a preflight check before
    the snapshot exists) a missing ``change_id`` decides nothing.
    ``identity`` (BIOS uuid, instance uuid, vCenter: see
    ``sync_state.IDENTITY_KEYS``) says whose state is ours; default ``vm_uuid``.
    ``reset_requested``: CBT is being reset (``reset_cbt``), so no stored
    changeId will mean anything.

    The table, first match wins:

    ============================  ==================  ==========================
    condition                     reason_code         sync_type
    ============================  ==================  ==========================
    mode is full                  mode_full           full
    no state file given           no_state            full
    state of another VM/vCenter   other_vm            full
    no entry for the disk         no_state            full
    stored changeId malformed     bad_state           full
    CBT reset asked for           cbt_reset_requested full
    CBT was off (VM or disk)      cbt_off             full
    capacity changed              capacity_changed    full
    disk has no changeId          no_change_id        full
    CBT uuid differs (reset)      cbt_reset           full
    CBT sequence went backwards   cbt_rewound         full
    target changed                target_changed      full
    vSphere rejected changeId     change_id_rejected  full
    otherwise                     incremental         incremental
    ============================  ==================  ==========================

    ``mode: incremental`` turns every full decision into
    :class:`IncrementalNotPossibleError` naming the reason.
    """
    if mode not in MODES:
        raise InvalidParameterError('mode must be one of %s, got %r' % (', '.join(MODES), mode))
    disk_name = '%s (key %s)' % (label, disk_key) if label else 'key %s' % disk_key

    def full(code, reason):
        if mode == 'incremental':
            raise IncrementalNotPossibleError('mode is incremental but %s needs a full copy: %s'
                                              % (disk_name, reason), disk=disk_name,
                                              details={'reason_code': code, 'reason': reason})
        return SyncDecision('full', None, code, reason)

    if mode == 'full':
        return SyncDecision('full', None, 'mode_full', 'mode is full')
    if state is None:
        return full('no_state', 'no state_file given, so no previous sync is known')
    where = ' %s' % state_file if state_file else ''
    mismatch = sync_state.owner_mismatch(state, identity or {'vm_uuid': vm_uuid})
    if mismatch:
        return full('other_vm', 'the sync state file%s %s' % (where, mismatch))
    entry = sync_state.disk_entry(state, disk_key)
    if not entry:
        return full('no_state', 'the sync state file%s has no entry for disk key %s (never synced)'
                    % (where, disk_key))
    stored = entry.get('change_id')
    try:
        stored_uuid = parse_change_id(stored)[0]
    except ValueError as exc:
        return full('bad_state', 'the sync state entry of disk key %s is unusable: %s' % (disk_key, exc))
    if reset_requested:
        return full('cbt_reset_requested', 'Changed Block Tracking is reset on request (reset_cbt), so changes '
                    'since %s are unknown' % stored)
    if not cbt_was_enabled:
        return full('cbt_off', 'Changed Block Tracking was off (on the VM, or for this disk), so changes since %s '
                    'are unknown' % stored)
    stored_capacity = entry.get('capacity_bytes')
    if stored_capacity is not None and int(stored_capacity) != int(capacity_bytes):
        return full('capacity_changed', 'the disk capacity changed from %s to %s bytes since the last sync'
                    % (stored_capacity, capacity_bytes))
    if change_id:
        try:
            current_uuid, current_sequence = parse_change_id(change_id)
        except ValueError:
            current_uuid = current_sequence = None
        if current_uuid != stored_uuid:
            return full('cbt_reset', 'CBT was reset: the stored changeId %s has CBT uuid %s, the disk now has %s'
                        % (stored, stored_uuid, current_uuid or change_id))
        # the same tracking file counting backwards: the VM went back to a
        # snapshot older than the last sync, and what changed since is unknown
        if current_sequence < parse_change_id(stored)[1]:
            return full('cbt_rewound', 'the disk\'s changeId %s is older than the last synced %s (the VM was '
                        'reverted to an earlier snapshot)' % (change_id, stored))
    elif change_id_known:
        return full('no_change_id', 'the disk has no changeId in the snapshot (CBT is not active on it)')
    stored_target = entry.get('target')
    if target and stored_target and target != stored_target:
        return full('target_changed', 'the target changed from %s to %s since the last sync'
                    % (stored_target, target))
    if rejected:
        return full('change_id_rejected', 'vSphere rejected the stored changeId %s: %s' % (stored, rejected))
    synced = entry.get('synced_at')
    return SyncDecision('incremental', stored, 'incremental', 'changes since changeId %s%s'
                        % (stored, ' (synced at %s)' % synced if synced else ''))


def iter_changed_areas(query, capacity, change_id, start_offset=0):
    """Yield ``(offset, length)`` of every changed area, paging until ``capacity``.

    ``query(start_offset, change_id)`` returns a ``DiskChangeInfo``; vSphere
    answers a bounded number of areas per call and says, with
    ``startOffset + length``, how far the answer reaches: the next call
    starts there. An answer that does not move forward is an error (a loop
    otherwise).
    """
    offset = start_offset
    while offset < capacity:
        info = query(offset, change_id)
        for area in getattr(info, 'changedArea', None) or []:
            yield (int(area.start), int(area.length))
        end = int(info.startOffset) + int(info.length)
        if end <= offset:
            raise ChangedAreasError('QueryChangedDiskAreas at offset %d answered startOffset %d length %d, '
                                    'which does not move past the offset' % (offset, info.startOffset,
                                                                             info.length))
        offset = end


def changed_extents(query, capacity, change_id):
    """Sorted, merged extents inside the disk from :func:`iter_changed_areas`.

    Returns ``(extents, pages)``.
    """
    pages = [0]

    def counting_query(offset, cid):
        pages[0] += 1
        return query(offset, cid)

    extents = list(extents_util.merge_extents(
        extents_util.clip_extents(iter_changed_areas(counting_query, capacity, change_id), capacity)))
    return extents, pages[0]
