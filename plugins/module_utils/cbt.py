# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Changed Block Tracking: enable it, take the migration snapshot, list changes.

One sync cycle of one VM on the vSphere side (:class:`CbtSnapshot`):

1. read the VM (one PropertyCollector call: devices, CBT flag, hardware
   version, snapshot tree, power state, uuids);
2. enable CBT if it is off (ReconfigVM, then a stun cycle: create and delete a
   temporary snapshot so that tracking takes effect);
3. take the migration snapshot, or reuse the one of the same name;
4. per disk, decide full or incremental (:func:`decide_sync`, a pure
   function: the whole decision table lives there), ask
   ``QueryChangedDiskAreas`` for the changed areas (``"*"`` for a full copy:
   the allocated areas), paging on ``startOffset + length``
   (:func:`iter_changed_areas`), and write the disk's extents file.

A failure after the snapshot was created removes that snapshot (unless told to
keep it) and the extents files of this run, so nothing is left behind.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import datetime
import os
import re
import tempfile

from ansible_collections.migratekit.migration.plugins.module_utils import extents as extents_util
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    HAS_PYVMOMI,
    InvalidParameterError,
    VMNotFoundError,
    VSphereError,
    connect,
    connection_params,
    fault_error,
    fault_message,
    fetch_many,
    fetch_properties,
    find_vm,
    vm_selector,
    wait_for_task,
)

if HAS_PYVMOMI:
    from pyVmomi import vim, vmodl

VM_PROPERTIES = [
    'name',
    'config.uuid',
    'config.instanceUuid',
    'config.version',
    'config.changeTrackingEnabled',
    'config.hardware.device',
    'snapshot',
    'runtime.powerState',
]
SNAPSHOT_PROPERTIES = ['config.hardware.device']
MIN_HARDWARE_VERSION = 7
STUN_SNAPSHOT_NAME = 'migratekit-cbt-stun'
SNAPSHOT_DESCRIPTION = 'Migration snapshot of migratekit.migration (CBT); removed after the copy.'
FULL_CHANGE_ID = '*'
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


def hardware_version_number(version):
    """``'vmx-13'`` -> 13; None when unknown."""
    match = re.match(r'^vmx-(\d+)$', version or '')
    return int(match.group(1)) if match else None


def datastore_of(file_name):
    """``'[LocalDS_0] VM0/disk.vmdk'`` -> ``'LocalDS_0'``."""
    match = re.match(r'^\[([^\]]*)\]', file_name or '')
    return match.group(1) if match else None


def disk_capacity_bytes(disk):
    """capacityInBytes, or capacityInKB * 1024 where a server reports only that."""
    capacity = getattr(disk, 'capacityInBytes', None)
    if capacity:
        return int(capacity)
    return int(getattr(disk, 'capacityInKB', 0) or 0) * 1024


def disk_label(disk):
    info = getattr(disk, 'deviceInfo', None)
    label = getattr(info, 'label', None)
    return label or 'disk %s' % disk.key


def classify_disks(devices):
    """Split a device list into ``(disks, skipped)``.

    ``disks`` are dicts (key, label, unit_number, controller_key,
    capacity_bytes, backing_file, datastore, change_id), sorted by key.
    ``skipped`` lists the disks CBT cannot track with a ``reason``: physical
    RDMs and independent disks (snapshots do not include them).
    """
    disks, skipped = [], []
    for device in devices or []:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        backing = device.backing
        label = disk_label(device)
        reason = None
        if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo) \
                and getattr(backing, 'compatibilityMode', None) == 'physicalMode':
            reason = 'physical-mode RDM: Changed Block Tracking does not track it'
        elif (getattr(backing, 'diskMode', None) or '').startswith('independent'):
            reason = '%s disk: snapshots do not include it and CBT does not track it' % backing.diskMode
        entry = {
            'key': device.key,
            'label': label,
            'unit_number': device.unitNumber,
            'controller_key': device.controllerKey,
            'capacity_bytes': disk_capacity_bytes(device),
            'backing_file': getattr(backing, 'fileName', None),
            'datastore': datastore_of(getattr(backing, 'fileName', None)),
            'change_id': getattr(backing, 'changeId', None) or None,
        }
        if reason:
            skipped.append({'key': entry['key'], 'label': label, 'backing_file': entry['backing_file'],
                            'reason': reason})
        else:
            disks.append(entry)
    disks.sort(key=lambda d: d['key'])
    return disks, skipped


def target_for(targets, key, label):
    """The target of a disk in the ``targets`` option (keyed by device key or label)."""
    if not targets:
        return None
    for candidate in (str(key), key, label):
        if candidate in targets:
            return targets[candidate]
    return None


def decide_sync(mode, disk_key, capacity_bytes, change_id, vm_uuid=None, state=None, state_file=None,
                target=None, rejected=None, cbt_was_enabled=True, change_id_known=True, label=None):
    """Decide full or incremental for one disk; return a :class:`SyncDecision`.

    ``state`` is the loaded sync state (None: no state file was given),
    ``change_id`` the changeId of the disk in the migration snapshot,
    ``target`` the disk's target now (compared with the one in the state, if
    both are known), ``rejected`` the fault message when vSphere refused the
    stored changeId. With ``change_id_known=False`` (a preflight check before
    the snapshot exists) a missing ``change_id`` decides nothing.

    The table, first match wins:

    ============================  ==================  ==========================
    condition                     reason_code         sync_type
    ============================  ==================  ==========================
    mode is full                  mode_full           full
    no state file given           no_state            full
    state of another VM           other_vm            full
    no entry for the disk         no_state            full
    stored changeId malformed     bad_state           full
    CBT was off on the VM         cbt_off             full
    capacity changed              capacity_changed    full
    disk has no changeId          no_change_id        full
    CBT uuid differs (reset)      cbt_reset           full
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
    state_vm = state.get('vm_uuid')
    if state_vm and vm_uuid and state_vm.lower() != vm_uuid.lower():
        return full('other_vm', 'the sync state file%s belongs to VM uuid %s, not %s' % (where, state_vm, vm_uuid))
    entry = sync_state.disk_entry(state, disk_key)
    if not entry:
        return full('no_state', 'the sync state file%s has no entry for disk key %s (never synced)'
                    % (where, disk_key))
    stored = entry.get('change_id')
    try:
        stored_uuid = parse_change_id(stored)[0]
    except ValueError as exc:
        return full('bad_state', 'the sync state entry of disk key %s is unusable: %s' % (disk_key, exc))
    if not cbt_was_enabled:
        return full('cbt_off', 'Changed Block Tracking was off on the VM, so changes since %s are unknown'
                    % stored)
    stored_capacity = entry.get('capacity_bytes')
    if stored_capacity is not None and int(stored_capacity) != int(capacity_bytes):
        return full('capacity_changed', 'the disk capacity changed from %s to %s bytes since the last sync'
                    % (stored_capacity, capacity_bytes))
    if change_id:
        try:
            current_uuid = parse_change_id(change_id)[0]
        except ValueError:
            current_uuid = None
        if current_uuid != stored_uuid:
            return full('cbt_reset', 'CBT was reset: the stored changeId %s has CBT uuid %s, the disk now has %s'
                        % (stored, stored_uuid, current_uuid or change_id))
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


def iter_snapshot_tree(snapshot_info):
    """Yield every SnapshotTree node of a VM's ``snapshot`` property."""
    pending = list(getattr(snapshot_info, 'rootSnapshotList', None) or [])
    while pending:
        node = pending.pop(0)
        yield node
        pending.extend(getattr(node, 'childSnapshotList', None) or [])


def find_snapshots(snapshot_info, name):
    """The SnapshotTree nodes named ``name``, oldest first."""
    found = [node for node in iter_snapshot_tree(snapshot_info) if node.name == name]
    found.sort(key=lambda node: _timestamp(node.createTime))
    return found


def _timestamp(value):
    if value is None:
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return (value - _EPOCH).total_seconds()


class _Utc(datetime.tzinfo):
    def utcoffset(self, dt):
        return datetime.timedelta(0)

    def dst(self, dt):
        return datetime.timedelta(0)

    def tzname(self, dt):
        return 'UTC'


_UTC = _Utc()
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)


def snapshot_facts(node, now=None, reused=False):
    """The ``snapshot`` result of a SnapshotTree node."""
    created = node.createTime
    now = now or datetime.datetime.now(_UTC)
    age = None
    if created is not None:
        age = max(0, int(_timestamp(now) - _timestamp(created)))
    return {
        'moid': node.snapshot._moId,
        'name': node.name,
        'created': _iso(created),
        'age_seconds': age,
        'reused': reused,
    }


def _iso(value):
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return value.strftime('%Y-%m-%dT%H:%M:%SZ')


def extents_file_name(vm_name, vm_moid, disk_key):
    safe = re.sub(r'[^A-Za-z0-9_.-]+', '_', vm_name or 'vm').strip('._') or 'vm'
    return '%s-%s-%s.extents.json' % (safe, vm_moid, disk_key)


def check_extents_dir(path, check_mode=False):
    """Create ``path`` if needed and prove it writable; ExtentsDirError otherwise."""
    if not path:
        raise InvalidParameterError('extents_dir is required with state=present', operation='check extents_dir')
    path = os.path.abspath(os.path.expanduser(path))
    operation = 'prepare extents_dir %s' % path
    if os.path.exists(path) and not os.path.isdir(path):
        raise ExtentsDirError('extents_dir %s exists and is not a directory' % path, operation=operation)
    if check_mode:
        probe = path
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
            raise ExtentsDirError('extents_dir %s is not writable (checked %s)' % (path, probe), operation=operation)
        return path
    try:
        if not os.path.isdir(path):
            os.makedirs(path, 0o700)
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
        os.close(fd)
        os.unlink(probe)
    except (IOError, OSError) as exc:
        raise ExtentsDirError('extents_dir %s is not writable: %s' % (path, exc.strerror or exc),
                              operation=operation)
    return path


def _is_fault(exc, *fault_classes):
    return HAS_PYVMOMI and isinstance(exc, fault_classes)


# --------------------------------------------------------------------------
# vSphere operations

def query_changed_areas(conn, vm, snapshot, disk_key, capacity, change_id):
    """Changed extents of one disk of ``snapshot`` since ``change_id``; ``(extents, pages)``.

    pyVmomi faults propagate (a ``vim.fault.FileFault`` means vSphere
    rejected ``change_id``).
    """
    def query(offset, cid):
        return vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=disk_key, startOffset=offset, changeId=cid)
    return changed_extents(query, capacity, change_id)


def create_snapshot(conn, vm, name, quiesce=False, description=SNAPSHOT_DESCRIPTION, vm_name=None):
    """Create a disk-only snapshot; return its managed object."""
    operation = "create snapshot '%s'" % name
    try:
        task = vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=quiesce)
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm_name)
    return wait_for_task(conn, task, operation, vm=vm_name)


def remove_snapshot(conn, snapshot, name, vm_name=None):
    """Remove one snapshot (children kept, disks consolidated)."""
    operation = "remove snapshot '%s' (%s)" % (name, snapshot._moId)
    try:
        task = snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm_name)
    wait_for_task(conn, task, operation, vm=vm_name)


def enable_cbt(conn, vm, vm_name=None):
    """ReconfigVM with changeTrackingEnabled, then a stun cycle so tracking starts."""
    operation = 'enable Changed Block Tracking'
    try:
        task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True))
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm_name)
    wait_for_task(conn, task, operation, vm=vm_name)
    stun = create_snapshot(conn, vm, STUN_SNAPSHOT_NAME, quiesce=False,
                           description='Temporary snapshot of migratekit.migration: makes CBT take effect.',
                           vm_name=vm_name)
    remove_snapshot(conn, stun, STUN_SNAPSHOT_NAME, vm_name=vm_name)


def vm_facts(vm, props):
    return {
        'name': props.get('name'),
        'uuid': props.get('config.uuid'),
        'instance_uuid': props.get('config.instanceUuid'),
        'moid': vm._moId,
        'power_state': str(props.get('runtime.powerState')) if props.get('runtime.powerState') else None,
        'cbt_enabled': bool(props.get('config.changeTrackingEnabled')),
        'hardware_version': props.get('config.version'),
    }


class CbtSnapshot(object):
    """One VM's CBT snapshot cycle: :meth:`present` and :meth:`absent`.

    Both return the module result (``changed``, ``vm``, ``snapshot``,
    ``disks``, ``skipped_disks``, ``diff``, ``warnings``) and raise
    :class:`VSphereError` subclasses that already name the operation, VM and
    disk.
    """

    def __init__(self, conn, vm, snapshot_name='migratekit', quiesce=False, enable_cbt=True, mode='auto',
                 state_file=None, extents_dir=None, targets=None, keep_snapshot_on_failure=False,
                 check_mode=False, now=None):
        self.conn = conn
        self.vm = vm
        self.snapshot_name = snapshot_name
        self.quiesce = quiesce
        self.enable_cbt = enable_cbt
        self.mode = mode
        self.state_file = state_file
        self.extents_dir = extents_dir
        self.targets = targets or {}
        self.keep_snapshot_on_failure = keep_snapshot_on_failure
        self.check_mode = check_mode
        self.now = now
        self.warnings = []
        self.vm_name = None
        self.stats = {'query_pages': 0}

    # -- helpers

    def _read_vm(self):
        try:
            props = fetch_properties(self.conn, self.vm, VM_PROPERTIES, operation='read VM properties',
                                     vm=self.vm._moId)
        except VMNotFoundError as exc:
            raise VMNotFoundError('no VM with moid %s (%s)' % (self.vm._moId, exc.message),
                                  operation='find VM moid=%s' % self.vm._moId)
        self.vm_name = props.get('name') or self.vm._moId
        return props

    def _load_state(self):
        if not self.state_file:
            return None
        try:
            return sync_state.load(self.state_file)
        except sync_state.SyncStateError as exc:
            raise StateFileError(str(exc), operation='read sync state', vm=self.vm_name)

    def _result(self, changed, facts, snapshot, disks, skipped, before, after):
        return {
            'changed': changed,
            'vm': facts,
            'snapshot': snapshot,
            'disks': disks,
            'skipped_disks': skipped,
            'diff': {'before': before, 'after': after},
            'warnings': self.warnings,
        }

    # -- state=present

    def present(self):
        props = self._read_vm()
        facts = vm_facts(self.vm, props)
        version = hardware_version_number(props.get('config.version'))
        if version is not None and version < MIN_HARDWARE_VERSION:
            raise CbtUnsupportedError('hardware version %s is too old for Changed Block Tracking (vmx-%02d or '
                                      'newer needed); upgrade the VM hardware' % (props.get('config.version'),
                                                                                  MIN_HARDWARE_VERSION),
                                      operation='check CBT support', vm=self.vm_name)
        disks, skipped = classify_disks(props.get('config.hardware.device'))
        for disk in skipped:
            self.warnings.append("disk '%s' (key %s) of VM %s skipped: %s"
                                 % (disk['label'], disk['key'], self.vm_name, disk['reason']))
        if not disks:
            raise CbtUnsupportedError('no disk can be tracked with CBT (%s)'
                                      % ('; '.join('%s: %s' % (d['label'], d['reason']) for d in skipped)
                                         or 'the VM has no disks'),
                                      operation='check CBT support', vm=self.vm_name)
        cbt_before = bool(props.get('config.changeTrackingEnabled'))
        if not cbt_before and not self.enable_cbt:
            raise CbtUnsupportedError('Changed Block Tracking is off and enable_cbt is false',
                                      operation='check CBT support', vm=self.vm_name)
        extents_dir = check_extents_dir(self.extents_dir, check_mode=self.check_mode)
        state = self._load_state()
        vm_uuid = props.get('config.uuid')

        # preflight: decide with what is known now, so that an impossible
        # incremental fails before anything is changed
        for disk in disks:
            self._decide(disk, disk['change_id'], state, vm_uuid, cbt_before, change_id_known=False)

        existing = find_snapshots(props.get('snapshot'), self.snapshot_name)
        if len(existing) > 1:
            self.warnings.append("VM %s has %d snapshots named '%s'; using the newest (%s)"
                                 % (self.vm_name, len(existing), self.snapshot_name, existing[-1].snapshot._moId))
        before = {'cbt_enabled': cbt_before, 'snapshot': self.snapshot_name if existing else None}
        after = {'cbt_enabled': True, 'snapshot': self.snapshot_name}
        changed = not cbt_before or not existing
        facts['cbt_enabled'] = True

        if self.check_mode:
            snapshot_result = None
            snapshot_disks = None
            if existing:
                snapshot_result = snapshot_facts(existing[-1], self.now, reused=True)
                snapshot_disks = self._read_snapshot_disks(existing[-1].snapshot)
            else:
                snapshot_result = {'moid': None, 'name': self.snapshot_name, 'created': None,
                                   'age_seconds': None, 'reused': False}
            results = []
            for disk in disks:
                snap_disk = (snapshot_disks or {}).get(disk['key'], disk)
                decision = self._decide(disk, snap_disk['change_id'], state, vm_uuid, cbt_before,
                                        change_id_known=snapshot_disks is not None)
                results.append(self._disk_result(disk, snap_disk, decision))
            return self._result(changed, facts, snapshot_result, results, skipped, before, after)

        if not cbt_before:
            enable_cbt(self.conn, self.vm, vm_name=self.vm_name)

        created = None
        # on failure every extents file of these disks goes, stale ones of an
        # earlier cycle included: no file may suggest this cycle's areas
        written = [os.path.join(extents_dir, extents_file_name(facts['name'], facts['moid'], d['key']))
                   for d in disks]
        try:
            if existing:
                node = existing[-1]
                snapshot = node.snapshot
                snapshot_disks = self._read_snapshot_disks(snapshot)
                snapshot_result = snapshot_facts(node, self.now, reused=True)
            else:
                snapshot = created = create_snapshot(self.conn, self.vm, self.snapshot_name, quiesce=self.quiesce,
                                                     vm_name=self.vm_name)
                node, snapshot_disks = self._read_new_snapshot(snapshot)
                snapshot_result = snapshot_facts(node, self.now, reused=False)
            results = []
            for disk in disks:
                snap_disk = snapshot_disks.get(disk['key'])
                if snap_disk is None:
                    raise CbtError("the disk is not in snapshot %s (%s); was it added after the snapshot was taken? "
                                   "Remove the snapshot (state=absent) and run again"
                                   % (snapshot._moId, self.snapshot_name),
                                   operation='read snapshot disks', vm=self.vm_name, disk=disk['label'])
                results.append(self._disk_extents(disk, snap_disk, snapshot, state, vm_uuid, cbt_before,
                                                  extents_dir, facts, reused=bool(existing)))
        except Exception as exc:  # pylint: disable=broad-except
            error = exc if isinstance(exc, VSphereError) else CbtError(
                '%s: %s' % (type(exc).__name__, exc), operation='compute changed areas', vm=self.vm_name)
            self._cleanup(error, created, written)
            raise error
        return self._result(changed, facts, snapshot_result, results, skipped, before, after)

    def _decide(self, disk, change_id, state, vm_uuid, cbt_before, change_id_known=True, rejected=None,
                capacity=None):
        try:
            return decide_sync(self.mode, disk['key'], capacity if capacity is not None else disk['capacity_bytes'],
                               change_id, vm_uuid=vm_uuid, state=state, state_file=self.state_file,
                               target=target_for(self.targets, disk['key'], disk['label']),
                               rejected=rejected, cbt_was_enabled=cbt_before, change_id_known=change_id_known,
                               label=disk['label'])
        except VSphereError as exc:
            raise exc.located('decide full or incremental', self.vm_name, disk['label'])

    def _read_snapshot_disks(self, snapshot):
        props = fetch_properties(self.conn, snapshot, SNAPSHOT_PROPERTIES, operation='read snapshot disks',
                                 vm=self.vm_name)
        disks, _skipped = classify_disks(props.get('config.hardware.device'))
        return dict((d['key'], d) for d in disks)

    def _read_new_snapshot(self, snapshot):
        """The new snapshot's tree node and disks, in one round trip."""
        found = fetch_many(self.conn, [(self.vm, ['snapshot']), (snapshot, SNAPSHOT_PROPERTIES)],
                           operation='read snapshot disks', vm=self.vm_name)
        nodes = [n for n in iter_snapshot_tree((found.get(self.vm._moId) or {}).get('snapshot'))
                 if n.snapshot._moId == snapshot._moId]
        if not nodes or snapshot._moId not in found:
            raise CbtError('snapshot %s vanished right after it was created' % snapshot._moId,
                           operation='read snapshot disks', vm=self.vm_name)
        disks, _skipped = classify_disks(found[snapshot._moId].get('config.hardware.device'))
        return nodes[0], dict((d['key'], d) for d in disks)

    def _disk_result(self, disk, snap_disk, decision, extents_file=None, count=None, changed_bytes=None):
        return {
            'key': disk['key'],
            'label': disk['label'],
            'unit_number': disk['unit_number'],
            'controller_key': disk['controller_key'],
            'capacity_bytes': snap_disk['capacity_bytes'],
            'backing_file': snap_disk['backing_file'],
            'datastore': snap_disk['datastore'],
            'change_id': snap_disk['change_id'],
            'previous_change_id': decision.previous_change_id,
            'sync_type': decision.sync_type,
            'reason_code': decision.reason_code,
            'reason': decision.reason,
            'target': target_for(self.targets, disk['key'], disk['label']),
            'extents_file': extents_file,
            'extent_count': count,
            'changed_bytes': changed_bytes,
        }

    def _disk_extents(self, disk, snap_disk, snapshot, state, vm_uuid, cbt_before, extents_dir, facts,
                      reused=False):
        capacity = snap_disk['capacity_bytes']
        change_id = snap_disk['change_id']
        if not change_id:
            if reused:
                hint = ("it was taken while CBT was off: remove it (state=absent, snapshot_name=%s) and run again"
                        % self.snapshot_name)
            else:
                hint = 'Changed Block Tracking is not active on the disk; power-cycle the VM and run again'
            raise CbtUnsupportedError('the disk has no changeId in snapshot %s (%s); %s'
                                      % (snapshot._moId, self.snapshot_name, hint),
                                      operation='read snapshot disks', vm=self.vm_name, disk=disk['label'])
        decision = self._decide(disk, change_id, state, vm_uuid, cbt_before, capacity=capacity)
        extents = None
        if decision.sync_type == 'incremental':
            try:
                extents, pages = query_changed_areas(self.conn, self.vm, snapshot, disk['key'], capacity,
                                                     decision.previous_change_id)
                self.stats['query_pages'] += pages
            except Exception as exc:  # pylint: disable=broad-except
                if not _is_fault(exc, vim.fault.FileFault):
                    raise fault_error(exc, 'query changed areas since %s' % decision.previous_change_id,
                                      vm=self.vm_name, disk=disk['label'])
                decision = self._decide(disk, change_id, state, vm_uuid, cbt_before, capacity=capacity,
                                        rejected=fault_message(exc))
        if extents is None:
            try:
                extents, pages = query_changed_areas(self.conn, self.vm, snapshot, disk['key'], capacity,
                                                     FULL_CHANGE_ID)
                self.stats['query_pages'] += pages
            except Exception as exc:  # pylint: disable=broad-except
                if not _is_fault(exc, vim.fault.FileFault, vmodl.fault.NotSupported,
                                 vmodl.fault.InvalidArgument):
                    raise fault_error(exc, "query allocated areas (changeId '*')", vm=self.vm_name,
                                      disk=disk['label'])
                extents = [(0, capacity)] if capacity else []
                decision = decision._replace(reason="%s; vSphere refused changeId '*' (%s), so the whole disk is "
                                             "copied" % (decision.reason, fault_message(exc)))
        path = os.path.join(extents_dir, extents_file_name(facts['name'], facts['moid'], disk['key']))
        header = {
            'disk_key': disk['key'],
            'capacity_bytes': capacity,
            'change_id': change_id,
            'previous_change_id': decision.previous_change_id,
            'sync_type': decision.sync_type,
        }
        try:
            count, changed_bytes = extents_util.write_extents_file(path, header, extents)
        except (IOError, OSError) as exc:
            raise ExtentsDirError('cannot write %s: %s' % (path, exc.strerror or exc), operation='write extents file',
                                  vm=self.vm_name, disk=disk['label'])
        return self._disk_result(disk, snap_disk, decision, path, count, changed_bytes)

    def _cleanup(self, error, created, written):
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
        if created is None:
            return
        if self.keep_snapshot_on_failure:
            error.message += ("; snapshot '%s' (%s) was kept (keep_snapshot_on_failure)"
                              % (self.snapshot_name, created._moId))
            error.details['snapshot_removed'] = False
            return
        try:
            remove_snapshot(self.conn, created, self.snapshot_name, vm_name=self.vm_name)
        except VSphereError as cleanup_error:
            error.message += "; removing snapshot '%s' (%s) also failed: %s" % (
                self.snapshot_name, created._moId, cleanup_error)
            error.details['snapshot_removed'] = False
        else:
            error.message += "; snapshot '%s' (%s) was removed" % (self.snapshot_name, created._moId)
            error.details['snapshot_removed'] = True

    # -- state=absent

    def absent(self):
        props = self._read_vm()
        facts = vm_facts(self.vm, props)
        existing = find_snapshots(props.get('snapshot'), self.snapshot_name)
        before = {'cbt_enabled': facts['cbt_enabled'], 'snapshot': self.snapshot_name if existing else None}
        after = {'cbt_enabled': facts['cbt_enabled'], 'snapshot': None}
        if not existing:
            return self._result(False, facts, None, [], [], before, after)
        snapshot_result = snapshot_facts(existing[-1], self.now, reused=False)
        snapshot_result['removed'] = True
        if len(existing) > 1:
            self.warnings.append("VM %s had %d snapshots named '%s'; all were removed"
                                 % (self.vm_name, len(existing), self.snapshot_name))
        if not self.check_mode:
            for node in reversed(existing):
                remove_snapshot(self.conn, node.snapshot, self.snapshot_name, vm_name=self.vm_name)
        return self._result(True, facts, snapshot_result, [], [], before, after)


def run(conn, vm, state='present', check_mode=False, **options):
    """Run one cycle: ``CbtSnapshot(conn, vm, **options).present()`` or ``.absent()``."""
    cycle = CbtSnapshot(conn, vm, check_mode=check_mode, **options)
    if state == 'absent':
        return cycle.absent()
    return cycle.present()


OPTION_NAMES = ('snapshot_name', 'quiesce', 'enable_cbt', 'mode', 'state_file', 'extents_dir', 'targets',
                'keep_snapshot_on_failure')


def cbt_snapshot_module(params, check_mode=False, conn=None, now=None):
    """The whole vmware_cbt_snapshot module: connect, find the VM, run, log out.

    ``params`` are the module's parameters (connection, VM selector, the
    options of :class:`CbtSnapshot` and ``state``). Pass ``conn`` to reuse a
    connection (it is then left open).
    """
    own = conn is None
    if own:
        conn = connect(**connection_params(params))
    try:
        vm = find_vm(conn, **vm_selector(params))
        options = dict((key, params[key]) for key in OPTION_NAMES if key in params)
        return run(conn, vm, state=params.get('state') or 'present', check_mode=check_mode, now=now, **options)
    finally:
        if own:
            conn.close()
