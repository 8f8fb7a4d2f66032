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

import os

from ansible_collections.migratekit.migration.plugins.module_utils import extents as extents_util
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.decision import (
    MODES,
    CbtError,
    CbtUnsupportedError,
    ChangedAreasError,
    ExtentsDirError,
    IncrementalNotPossibleError,
    StateFileError,
    SyncDecision,
    changed_extents,
    decide_sync,
    iter_changed_areas,
    parse_change_id,
    target_for,
)
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.inventory import (
    check_extents_dir,
    classify_disks,
    ctk_disabled_disks,
    ctk_option_keys,
    datastore_of,
    disk_capacity_bytes,
    disk_label,
    excluded_disks,
    extents_file_name,
    find_snapshots,
    hardware_version_number,
    iter_snapshot_tree,
    snapshot_created_at,
    snapshot_facts,
    snapshot_findings,
    vm_facts,
)
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.snapshots import (
    KIND_MIGRATION,
    KIND_STUN,
    describe,
    describe_nodes,
    new_token,
    parse_marker,
    sort_snapshots,
)
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    CONNECTION_SPEC,
    HAS_PYVMOMI,
    LIBRARIES,
    VM_SPEC,
    VMNotFoundError,
    VSphereError,
    connect_with,
    fault_error,
    fault_message,
    fetch_many,
    fetch_properties,
    find_vm_with,
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
    'config.extraConfig',
    'config.hardware.device',
    'snapshot',
    'runtime.powerState',
]
SNAPSHOT_PROPERTIES = ['config.hardware.device']
MIN_HARDWARE_VERSION = 7
STUN_SNAPSHOT_NAME = 'migratekit-cbt-stun'
SNAPSHOT_DESCRIPTION = 'Migration snapshot of migratekit.migration (CBT); removed after the copy.'
STUN_DESCRIPTION = 'Temporary snapshot of migratekit.migration: makes a CBT change take effect.'
FULL_CHANGE_ID = '*'
# How long a snapshot removal (and a consolidation) is waited for: a big
# delta merges for long, but a cycle must not hang on it.
REMOVE_TIMEOUT = 1800

# The options of one cycle (CbtSnapshot), and the vmware_cbt_snapshot module's: connection, VM, cycle.
CYCLE_SPEC = ArgumentSpec(dict(
    state=dict(type='str', default='present', choices=['present', 'absent']),
    snapshot_name=dict(type='str', default='migratekit'),
    quiesce=dict(type='bool', default=False),
    enable_cbt=dict(type='bool', default=True),
    mode=dict(type='str', default='auto', choices=list(MODES)),
    state_file=dict(type='path'),
    extents_dir=dict(type='path'),
    targets=dict(type='dict'),
    keep_snapshot_on_failure=dict(type='bool', default=False),
    commit_unchanged=dict(type='bool', default=False),
    reset_cbt=dict(type='bool', default=False),
    remove_timeout=dict(type='int', default=REMOVE_TIMEOUT),
    exclude_disks=dict(type='list', elements='str', default=[]),
), required_if=[('state', 'present', ['extents_dir'])])
CBT_SNAPSHOT_SPEC = CONNECTION_SPEC.merge(VM_SPEC, CYCLE_SPEC)

# The names other code uses from here, the helpers of _cbt included.
__all__ = [
    'CBT_SNAPSHOT_SPEC', 'CYCLE_SPEC', 'LIBRARIES', 'MODES', 'CbtError', 'CbtSnapshot', 'CbtUnsupportedError',
    'ChangedAreasError', 'ExtentsDirError', 'IncrementalNotPossibleError', 'StateFileError', 'SyncDecision',
    'cbt_snapshot_module', 'changed_extents', 'check_extents_dir', 'classify_disks', 'create_snapshot',
    'cycle_with', 'datastore_of', 'decide_sync', 'disk_capacity_bytes', 'disk_label', 'enable_cbt',
    'extents_file_name', 'find_snapshots', 'hardware_version_number', 'iter_changed_areas', 'iter_snapshot_tree',
    'parse_change_id', 'query_changed_areas', 'remove_snapshot', 'run', 'snapshot_facts', 'snapshot_findings',
    'target_for', 'vm_facts', 'excluded_disks',
]


def _is_fault(exc, *fault_classes):
    return HAS_PYVMOMI and isinstance(exc, fault_classes)


def _rejects_change_id(exc):
    """vSphere refusing a stored changeId: a FileFault (any CBT reason: cbt.noTrack, noEpoch,
    cannotGetChanges, ...) or an InvalidArgument naming ``changeId``. Both mean a full copy."""
    if _is_fault(exc, vim.fault.FileFault):
        return True
    return _is_fault(exc, vmodl.fault.InvalidArgument) and \
        (getattr(exc, 'invalidProperty', None) or '').lower() == 'changeid'


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


def remove_snapshot(conn, snapshot, name, vm_name=None, timeout=REMOVE_TIMEOUT):
    """Remove one snapshot (children kept, disks consolidated); wait at most ``timeout`` seconds."""
    operation = "remove snapshot '%s' (%s)" % (name, snapshot._moId)
    try:
        task = snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm_name)
    wait_for_task(conn, task, operation, vm=vm_name, timeout=timeout)


def consolidate_disks(conn, vm, vm_name=None, timeout=REMOVE_TIMEOUT):
    """Read ``runtime.consolidationNeeded`` and run ConsolidateVMDisks when it is set.

    Returns the ``consolidation`` result: ``needed`` (before), ``done``, and
    ``error`` (why it could not be done: a warning, since the data is safe,
    but the VM runs on a longer chain until someone consolidates).
    """
    props = fetch_properties(conn, vm, ['runtime.consolidationNeeded'], operation='read consolidationNeeded',
                             vm=vm_name)
    if not props.get('runtime.consolidationNeeded'):
        return {'needed': False, 'done': False, 'error': None}
    operation = 'consolidate disks'
    try:
        try:
            task = vm.ConsolidateVMDisks_Task()
        except Exception as exc:  # pylint: disable=broad-except
            raise fault_error(exc, operation, vm=vm_name)
        wait_for_task(conn, task, operation, vm=vm_name, timeout=timeout)
    except VSphereError as exc:
        return {'needed': True, 'done': False, 'error': str(exc)}
    return {'needed': True, 'done': True, 'error': None}


def _reconfigure(conn, vm, spec, operation, vm_name=None):
    try:
        task = vm.ReconfigVM_Task(spec=spec)
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, operation, vm=vm_name)
    wait_for_task(conn, task, operation, vm=vm_name)


def stun_cycle(conn, vm, vm_instance_uuid=None, vm_name=None):
    """Create and remove a temporary snapshot, so that a change of CBT takes effect without a power cycle.

    Nothing runs between the two calls; a stun snapshot left by a crash or a
    failed removal carries its marker, and the next cycle removes it.
    """
    stun = create_snapshot(conn, vm, STUN_SNAPSHOT_NAME, quiesce=False,
                           description=describe(STUN_DESCRIPTION, KIND_STUN, vm_instance_uuid, new_token()),
                           vm_name=vm_name)
    remove_snapshot(conn, stun, STUN_SNAPSHOT_NAME, vm_name=vm_name)


def enable_cbt(conn, vm, vm_instance_uuid=None, vm_name=None):
    """ReconfigVM with changeTrackingEnabled, then a stun cycle so tracking starts."""
    _reconfigure(conn, vm, vim.vm.ConfigSpec(changeTrackingEnabled=True), 'enable Changed Block Tracking',
                 vm_name=vm_name)
    stun_cycle(conn, vm, vm_instance_uuid, vm_name=vm_name)


def reset_cbt(conn, vm, vm_instance_uuid=None, vm_name=None):
    """Disable CBT, stun, enable, stun: every disk gets a new tracking file (VMware KB 2139574).

    For a tracking file that is corrupt; every disk needs a full copy afterwards.
    """
    _reconfigure(conn, vm, vim.vm.ConfigSpec(changeTrackingEnabled=False), 'disable Changed Block Tracking (reset)',
                 vm_name=vm_name)
    stun_cycle(conn, vm, vm_instance_uuid, vm_name=vm_name)
    enable_cbt(conn, vm, vm_instance_uuid, vm_name=vm_name)


def enable_disk_tracking(conn, vm, option_keys, vm_instance_uuid=None, vm_name=None):
    """Set each ``scsiX:Y.ctkEnabled`` of ``option_keys`` to TRUE, then a stun cycle."""
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value='TRUE') for key in option_keys])
    _reconfigure(conn, vm, spec, 'enable Changed Block Tracking of disks (%s)' % ', '.join(option_keys),
                 vm_name=vm_name)
    stun_cycle(conn, vm, vm_instance_uuid, vm_name=vm_name)


class CbtSnapshot(object):
    """One VM's CBT snapshot cycle: :meth:`present` and :meth:`absent`.

    Both return the module result (``changed``, ``vm``, ``snapshot``,
    ``disks``, ``skipped_disks``, ``diff``, ``warnings``) and raise
    :class:`VSphereError` subclasses that already name the operation, VM and
    disk.
    """

    def __init__(self, conn, vm, options, check_mode=False, now=None):
        self.conn = conn
        self.vm = vm
        self.options = options      # CYCLE_SPEC (or a spec that contains it)
        self.targets = options.targets or {}
        self.check_mode = check_mode
        self.now = now
        self.warnings = []
        self.vm_name = None
        self.identity = {}            # whose state file is ours (sync_state.IDENTITY_KEYS)
        self.unreadable_state = None  # why the state file could not be read (full cycles only)
        self.state_kept_aside = None  # where it went
        self.consolidation = None     # after a snapshot removal: consolidate_disks()
        self.rewound = {}             # disk key -> the cbt_rewound decision seen before the snapshot
        self.stats = {'query_pages': 0}
        self.excluded = []            # the disks exclude_disks took out of the migration

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
        """The sync state, or None without a state file.

        An unreadable file stops every cycle but a full one, which starts
        over with an empty state (the file is kept aside by :meth:`_claim_state`).
        """
        path = self.options.state_file
        if not path:
            return None
        try:
            return sync_state.load(path)
        except sync_state.SyncStateError as exc:
            if self.options.mode != 'full':
                raise StateFileError('%s; run migratekit.migration.full_sync to start over (it keeps this file '
                                     'aside)' % exc, operation='read sync state', vm=self.vm_name)
            self.unreadable_state = str(exc)
            return sync_state.empty_state()

    def _claim_state(self, state):
        """Make the state file this VM's: one of another VM (or unreadable) is kept aside, never deleted.

        In check mode only the warning says what would happen.
        """
        path = self.options.state_file
        if not path:
            return
        why = self.unreadable_state and 'is unreadable (%s)' % self.unreadable_state
        why = why or sync_state.owner_mismatch(state, self.identity)
        if why and self.check_mode:
            self.warnings.append('the sync state file %s %s: it would be kept aside and every disk copied in full'
                                 % (path, why))
            return
        try:
            if why:
                self.state_kept_aside = sync_state.keep_aside(path)
                self.warnings.append('the sync state file %s %s: it is kept aside as %s and every disk gets a full '
                                     'copy' % (path, why, self.state_kept_aside))
            sync_state.claim(path, self.identity)
        except sync_state.SyncStateError as exc:
            raise StateFileError(str(exc), operation='claim sync state', vm=self.vm_name)

    def _result(self, changed, facts, snapshot, disks, skipped, before, after):
        return {
            'changed': changed,
            'vm': facts,
            'snapshot': snapshot,
            'disks': disks,
            'skipped_disks': skipped,
            'diff': {'before': before, 'after': after},
            'state_kept_aside': self.state_kept_aside,
            'consolidation': self.consolidation,
            'excluded_disks': self.excluded,
            'warnings': self.warnings,
        }

    # -- state=present

    # -- our snapshots, and only ours (see _cbt/snapshots.py)

    def _recorded(self, state):
        """The snapshots the state file records; None without a state file (the marker is then the record)."""
        if not self.options.state_file:
            return None
        if state is None or self.unreadable_state or sync_state.owner_mismatch(state, self.identity):
            return {}
        return sync_state.recorded_snapshots(state)

    def _sort_snapshots(self, props, state):
        tree = sort_snapshots(props.get('snapshot'), self.options.snapshot_name, self.identity.get('vm_instance_uuid'),
                              self._recorded(state))
        namesakes = [node for node in tree.users if node.name == self.options.snapshot_name]
        if tree.users:
            self.warnings.append('VM %s has snapshots that are not migratekit.migration\'s: %s; they are kept, and each '
                                 'disk is read whole through its frozen chain' % (self.vm_name, describe_nodes(tree.users)))
        if namesakes:
            self.warnings.append("snapshot %s carries the migration snapshot's name but not its marker: it is a user's "
                                 "snapshot and is never reused or removed; this cycle uses its own snapshot"
                                 % describe_nodes(namesakes))
        if tree.unrecorded:
            self.warnings.append('VM %s has migration snapshots of migratekit.migration that this state file does not '
                                 'record (another appliance\'s or state directory\'s, or another snapshot_name): %s; '
                                 'they are left alone' % (self.vm_name, describe_nodes(tree.unrecorded)))
        return tree

    def _record(self, token, moid=None):
        if not self.options.state_file:
            return
        try:
            sync_state.record_snapshot(self.options.state_file, self.identity, token, KIND_MIGRATION,
                                       self.options.snapshot_name, moid=moid)
        except sync_state.SyncStateError as exc:
            raise StateFileError(str(exc), operation='record the migration snapshot', vm=self.vm_name)

    def _forget(self, nodes=(), tokens=(), moids=()):
        if not self.options.state_file:
            return
        tokens = list(tokens) + [m.token for m in (parse_marker(getattr(n, 'description', None)) for n in nodes) if m]
        moids = list(moids) + [node.snapshot._moId for node in nodes]
        try:
            sync_state.forget_snapshots(self.options.state_file, tokens, moids)
        except sync_state.SyncStateError as exc:
            self.warnings.append('the record of removed snapshots in %s could not be updated: %s'
                                 % (self.options.state_file, exc))

    def _prune_record(self, snapshot_info, state):
        """Forget recorded snapshots the VM no longer has (removed by hand, or never created)."""
        recorded = self._recorded(state)
        if not recorded:
            return
        nodes = list(iter_snapshot_tree(snapshot_info))
        tokens = set(m.token for m in (parse_marker(getattr(n, 'description', None)) for n in nodes) if m)
        moids = set(node.snapshot._moId for node in nodes)
        self._forget(tokens=[token for token, entry in recorded.items()
                             if token not in tokens and entry.get('moid') not in moids])

    def _remove_ours(self, nodes, why):
        """Remove our snapshots (newest first) and their record."""
        for node in sorted(nodes, key=lambda n: -snapshot_created_at(n)):
            remove_snapshot(self.conn, node.snapshot, node.name, vm_name=self.vm_name)
            self._forget([node])
        if nodes:
            self.warnings.append('removed %s: %s' % (why, describe_nodes(nodes)))

    def _create(self):
        """Take the migration snapshot: its token is recorded first, its moref once it exists."""
        token = new_token()
        self._record(token)
        snapshot = create_snapshot(self.conn, self.vm, self.options.snapshot_name, quiesce=self.options.quiesce,
                                   description=describe(SNAPSHOT_DESCRIPTION, KIND_MIGRATION,
                                                        self.identity.get('vm_instance_uuid'), token),
                                   vm_name=self.vm_name)
        self._record(token, moid=snapshot._moId)
        return snapshot

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
        devices = props.get('config.hardware.device')
        disks, skipped = self._disks_to_migrate(devices)
        for disk in skipped:
            self.warnings.append("disk '%s' (key %s) of VM %s skipped: %s"
                                 % (disk['label'], disk['key'], self.vm_name, disk['reason']))
        if not disks:
            raise CbtUnsupportedError('no disk can be tracked with CBT (%s)'
                                      % ('; '.join('%s: %s' % (d['label'], d['reason']) for d in skipped)
                                         or 'the VM has no disks'),
                                      operation='check CBT support', vm=self.vm_name)
        cbt_before = bool(props.get('config.changeTrackingEnabled'))
        if not cbt_before and not self.options.enable_cbt:
            raise CbtUnsupportedError('Changed Block Tracking is off and enable_cbt is false',
                                      operation='check CBT support', vm=self.vm_name)
        # a disk whose own switch (scsiX:Y.ctkEnabled) is FALSE is not tracked although the VM's CBT is on
        keys = set(d['key'] for d in disks)
        untracked = dict((key, option) for key, option in
                         ctk_disabled_disks(devices, props.get('config.extraConfig')).items()
                         if cbt_before and key in keys)
        if untracked and not self.options.enable_cbt:
            raise CbtUnsupportedError('Changed Block Tracking is on for the VM but off for disk %s (%s); set enable_cbt: '
                                      'true to turn it on (a stun snapshot, then a full copy of those disks), or set '
                                      'those extraConfig keys to TRUE' % (
                                          ', '.join(str(key) for key in sorted(untracked)),
                                          ', '.join('%s = FALSE' % untracked[key] for key in sorted(untracked))),
                                      operation='check CBT support', vm=self.vm_name)
        extents_dir = check_extents_dir(self.options.extents_dir, check_mode=self.check_mode)
        vm_uuid = props.get('config.uuid')
        self.identity = {'vm_uuid': vm_uuid, 'vm_instance_uuid': props.get('config.instanceUuid'),
                         'vcenter': getattr(self.conn, 'hostname', None)}
        state = self._load_state()
        tree = self._sort_snapshots(props, state)

        def tracked_before(disk):
            return cbt_before and disk['key'] not in untracked

        # preflight: decide with what is known now, so that an impossible
        # incremental fails before anything is changed
        for disk in disks:
            self._decide(disk, disk['change_id'], state, vm_uuid, tracked_before(disk), change_id_known=False)

        existing = tree.ours
        if len(existing) > 1:
            self.warnings.append("VM %s has %d migration snapshots named '%s'; using the newest (%s)"
                                 % (self.vm_name, len(existing), self.options.snapshot_name, existing[-1].snapshot._moId))
        if self.options.reset_cbt and existing:
            # taken before the reset: its changeIds belong to the tracking files being replaced
            replaced, existing = existing, []
        else:
            replaced = []
        before = {'cbt_enabled': cbt_before, 'snapshot': self.options.snapshot_name if existing else None}
        after = {'cbt_enabled': True, 'snapshot': self.options.snapshot_name}
        changed = not cbt_before or not existing or bool(untracked) or self.options.reset_cbt
        facts['cbt_enabled'] = True
        self._claim_state(state)

        if self.check_mode:
            for nodes, what in ((tree.stun_leftovers, 'CBT stun snapshots left over by an interrupted run'),
                                (replaced, 'migration snapshots taken before the CBT reset')):
                if nodes:
                    self.warnings.append('would remove %s: %s' % (what, describe_nodes(nodes)))
            if untracked:
                self.warnings.append('would turn on Changed Block Tracking of disk %s (%s) with a stun snapshot'
                                     % (', '.join(str(k) for k in sorted(untracked)),
                                        ', '.join(untracked[k] for k in sorted(untracked))))
            snapshot_result = None
            snapshot_disks = None
            if existing:
                snapshot_result = snapshot_facts(existing[-1], self.now, reused=True)
                snapshot_disks = self._read_snapshot_disks(existing[-1].snapshot)
            else:
                snapshot_result = {'moid': None, 'name': self.options.snapshot_name, 'created': None,
                                   'age_seconds': None, 'reused': False}
            results = []
            for disk in disks:
                snap_disk = (snapshot_disks or {}).get(disk['key'], disk)
                decision = self._decide(disk, snap_disk['change_id'], state, vm_uuid, tracked_before(disk),
                                        change_id_known=snapshot_disks is not None)
                results.append(self._disk_result(disk, snap_disk, decision))
            return self._result(changed, facts, snapshot_result, results, skipped, before, after)

        instance_uuid = self.identity.get('vm_instance_uuid')
        self._prune_record(props.get('snapshot'), state)
        self._remove_ours(tree.stun_leftovers, 'CBT stun snapshots left over by an interrupted run')
        self._remove_ours(replaced, 'migration snapshots taken before the CBT reset')
        if self.options.reset_cbt:
            reset_cbt(self.conn, self.vm, instance_uuid, vm_name=self.vm_name)
        elif not cbt_before:
            enable_cbt(self.conn, self.vm, instance_uuid, vm_name=self.vm_name)
        elif untracked:
            enable_disk_tracking(self.conn, self.vm, [untracked[k] for k in sorted(untracked)], instance_uuid,
                                 vm_name=self.vm_name)
            self.warnings.append('Changed Block Tracking was off for disk %s (%s): it is turned on, and the disk '
                                 'gets a full copy' % (', '.join(str(k) for k in sorted(untracked)),
                                                       ', '.join('%s = FALSE' % untracked[k] for k in sorted(untracked))))

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
                snapshot = created = self._create()
                node, snapshot_disks = self._read_new_snapshot(snapshot)
                snapshot_result = snapshot_facts(node, self.now, reused=False)
            results = []
            for disk in disks:
                snap_disk = snapshot_disks.get(disk['key'])
                if snap_disk is None:
                    raise CbtError("the disk is not in snapshot %s (%s); was it added after the snapshot was taken? "
                                   "Remove the snapshot (state=absent) and run again"
                                   % (snapshot._moId, self.options.snapshot_name),
                                   operation='read snapshot disks', vm=self.vm_name, disk=disk['label'])
                results.append(self._disk_extents(disk, snap_disk, snapshot, state, vm_uuid, tracked_before(disk),
                                                  extents_dir, facts, reused=bool(existing),
                                                  ctk_option=ctk_option_keys(devices).get(disk['key'])))
        except Exception as exc:  # pylint: disable=broad-except
            error = exc if isinstance(exc, VSphereError) else CbtError(
                '%s: %s' % (type(exc).__name__, exc), operation='compute changed areas', vm=self.vm_name)
            self._cleanup(error, created, written)
            raise error
        if self.options.commit_unchanged:
            self._finish_unchanged(results, snapshot, snapshot_result, written, extents_dir)
        return self._result(changed, facts, snapshot_result, results, skipped, before, after)

    def _disks_to_migrate(self, devices):
        """:func:`classify_disks` without the excluded disks; refuses unexcluded disks a snapshot cannot freeze.

        Runs before anything changes on the VM (see :func:`excluded_disks`).
        """
        self.excluded = excluded_disks(devices, self.options.exclude_disks, vm_name=self.vm_name)
        for disk in self.excluded:
            self.warnings.append("disk %s ('%s') of VM %s is not migrated: %s"
                                 % (disk['key'], disk['label'], self.vm_name, disk['reason']))
        keys = set(disk['key'] for disk in self.excluded)
        disks, skipped = classify_disks(devices)
        return [d for d in disks if d['key'] not in keys], [d for d in skipped if d['key'] not in keys]

    def _finish_unchanged(self, results, snapshot, snapshot_result, written, extents_dir):
        """Commit the new changeId of every disk with nothing to copy; with nothing to copy at all, remove
        the snapshot and this run's extents files too.

        Nothing changed between the committed changeId and the snapshot's, so
        the target already holds the snapshot's data: there is nothing to
        write or flush before the commit.
        """
        for disk in results:
            if disk['copy_needed'] or not self.options.state_file or not disk['target']:
                continue
            try:
                sync_state.commit_disk(self.options.state_file, self.identity.get('vm_uuid'), disk['key'],
                                       disk['change_id'], disk['capacity_bytes'], disk['target'])
            except sync_state.SyncStateError as exc:
                raise StateFileError(str(exc), operation='commit unchanged changeId', vm=self.vm_name,
                                     disk=disk['label'])
            disk['committed_change_id'] = disk['change_id']
        if any(disk['copy_needed'] or not disk['committed_change_id'] for disk in results):
            return
        # every changeId is committed: a snapshot that will not go is a warning, not a failed cycle
        if not self._remove_committed(snapshot):
            return
        snapshot_result['removed'] = True
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
        for disk in results:
            disk['extents_file'] = None
        try:
            os.rmdir(extents_dir)
        except OSError:
            pass  # not empty: someone else's files stay

    def _remove_committed(self, snapshot):
        """Remove the snapshot of a cycle whose every changeId is committed, then consolidate if vSphere says so.

        A problem here leaves the data safe: it is a warning (and
        ``self.consolidation`` says what is left to do), never an error.
        Returns whether the snapshot was removed.
        """
        try:
            remove_snapshot(self.conn, snapshot, self.options.snapshot_name, vm_name=self.vm_name,
                            timeout=self.options.remove_timeout)
        except VSphereError as exc:
            self.warnings.append('every disk is synced, but the migration snapshot was not removed: %s; the next cycle '
                                 'reuses or removes it' % exc)
            return False
        self._forget(moids=[snapshot._moId])
        self._consolidate()
        return True

    def _consolidate(self):
        self.consolidation = consolidate_disks(self.conn, self.vm, vm_name=self.vm_name,
                                               timeout=self.options.remove_timeout)
        if self.consolidation['error']:
            self.warnings.append('the disks of VM %s need consolidation (runtime.consolidationNeeded) and it failed: %s; '
                                 'consolidate them in vCenter (Snapshots > Consolidate) once nothing reads them'
                                 % (self.vm_name, self.consolidation['error']))
        elif self.consolidation['done']:
            self.warnings.append('the disks of VM %s needed consolidation after the snapshot removal: consolidated'
                                 % self.vm_name)

    def _decide(self, disk, change_id, state, vm_uuid, cbt_before, change_id_known=True, rejected=None,
                capacity=None):
        try:
            decision = decide_sync(self.options.mode, disk['key'],
                                   capacity if capacity is not None else disk['capacity_bytes'],
                                   change_id, vm_uuid=vm_uuid, state=state, state_file=self.options.state_file,
                                   target=target_for(self.targets, disk['key'], disk['label']),
                                   rejected=rejected, cbt_was_enabled=cbt_before, change_id_known=change_id_known,
                                   label=disk['label'], identity=self.identity, reset_requested=self.options.reset_cbt)
        except VSphereError as exc:
            raise exc.located('decide full or incremental', self.vm_name, disk['label'])
        # A disk seen rewound before the snapshot (the VM went back to an older
        # snapshot) stays full: the new snapshot may count its sequence up to
        # the synced changeId again, which then looks like nothing changed.
        if decision.reason_code == 'cbt_rewound':
            self.rewound[disk['key']] = decision
        elif decision.sync_type == 'incremental' and disk['key'] in self.rewound:
            decision = self.rewound[disk['key']]
        return decision

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
            'copy_needed': decision.sync_type == 'full' or changed_bytes is None or changed_bytes > 0,
            'committed_change_id': None,
        }

    def _disk_extents(self, disk, snap_disk, snapshot, state, vm_uuid, cbt_before, extents_dir, facts,
                      reused=False, ctk_option=None):
        capacity = snap_disk['capacity_bytes']
        change_id = snap_disk['change_id']
        if not change_id:
            if reused:
                hint = ("it was taken while CBT was off: remove it (state=absent, snapshot_name=%s) and run again"
                        % self.options.snapshot_name)
            else:
                hint = ('Changed Block Tracking was turned on but is not active on the disk (extraConfig %s); run '
                        'again with reset_cbt: true (migratekit_reset_cbt), which recreates its tracking file'
                        % (ctk_option or 'of its controller slot'))
            raise CbtUnsupportedError('the disk has no changeId in snapshot %s (%s); %s'
                                      % (snapshot._moId, self.options.snapshot_name, hint),
                                      operation='read snapshot disks', vm=self.vm_name, disk=disk['label'])
        decision = self._decide(disk, change_id, state, vm_uuid, cbt_before, capacity=capacity)
        extents = None
        if decision.sync_type == 'incremental':
            try:
                extents, pages = query_changed_areas(self.conn, self.vm, snapshot, disk['key'], capacity,
                                                     decision.previous_change_id)
                self.stats['query_pages'] += pages
            except Exception as exc:  # pylint: disable=broad-except
                if not _rejects_change_id(exc):
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
        if self.options.keep_snapshot_on_failure:
            error.message += ("; snapshot '%s' (%s) was kept (keep_snapshot_on_failure)"
                              % (self.options.snapshot_name, created._moId))
            error.details['snapshot_removed'] = False
            return
        try:
            remove_snapshot(self.conn, created, self.options.snapshot_name, vm_name=self.vm_name)
            self._forget(moids=[created._moId])
        except VSphereError as cleanup_error:
            error.message += "; removing snapshot '%s' (%s) also failed: %s" % (
                self.options.snapshot_name, created._moId, cleanup_error)
            error.details['snapshot_removed'] = False
        else:
            error.message += "; snapshot '%s' (%s) was removed" % (self.options.snapshot_name, created._moId)
            error.details['snapshot_removed'] = True

    # -- state=absent

    def absent(self):
        """Remove our migration snapshots named ``snapshot_name`` and stun leftovers; never a user's."""
        props = self._read_vm()
        facts = vm_facts(self.vm, props)
        self.identity = {'vm_uuid': props.get('config.uuid'), 'vm_instance_uuid': props.get('config.instanceUuid'),
                         'vcenter': getattr(self.conn, 'hostname', None)}
        try:
            state = self._load_state()
        except StateFileError as exc:
            # cleanup goes on: without a readable record only stun leftovers are recognised as ours
            self.warnings.append(str(exc))
            state = None
        tree = self._sort_snapshots(props, state)
        existing = tree.ours
        before = {'cbt_enabled': facts['cbt_enabled'], 'snapshot': self.options.snapshot_name if existing else None}
        after = {'cbt_enabled': facts['cbt_enabled'], 'snapshot': None}
        if self.check_mode:
            if tree.stun_leftovers:
                self.warnings.append('would remove CBT stun snapshots left over by an interrupted run: %s'
                                     % describe_nodes(tree.stun_leftovers))
        else:
            self._remove_ours(tree.stun_leftovers, 'CBT stun snapshots left over by an interrupted run')
        if not existing:
            if not self.check_mode:
                self._consolidate()   # what an earlier removal could not merge
            return self._result(bool(tree.stun_leftovers) or bool((self.consolidation or {}).get('done')), facts,
                                None, [], [], before, after)
        snapshot_result = snapshot_facts(existing[-1], self.now, reused=False)
        snapshot_result['removed'] = True
        if len(existing) > 1:
            self.warnings.append("VM %s had %d migration snapshots named '%s'; all were removed"
                                 % (self.vm_name, len(existing), self.options.snapshot_name))
        if not self.check_mode:
            for node in reversed(existing):
                remove_snapshot(self.conn, node.snapshot, self.options.snapshot_name, vm_name=self.vm_name,
                                timeout=self.options.remove_timeout)
                self._forget([node])
            self._consolidate()
        return self._result(True, facts, snapshot_result, [], [], before, after)


def run(conn, vm, check_mode=False, now=None, **options):
    """Run one cycle with ``options`` of :data:`CYCLE_SPEC` (library use: defaults fill in the rest)."""
    return cycle_with(conn, vm, CYCLE_SPEC.options(**options), check_mode=check_mode, now=now)


def cycle_with(conn, vm, options, check_mode=False, now=None):
    """``CbtSnapshot(conn, vm, options).present()``, or ``.absent()`` for ``state=absent``."""
    cycle = CbtSnapshot(conn, vm, options, check_mode=check_mode, now=now)
    if options.state == 'absent':
        return cycle.absent()
    return cycle.present()


def verified_thumbprint(conn, warnings=None):
    """The SHA-1 thumbprint of the vCenter certificate when the connection verified it, else None.

    Reading it never fails the cycle: a problem is a warning (and no thumbprint).
    """
    thumbprint = getattr(conn, 'thumbprint', None)
    if not callable(thumbprint):
        return None
    try:
        return thumbprint()
    except VSphereError as exc:
        if warnings is not None:
            warnings.append('no vCenter thumbprint: %s' % exc)
        return None


def cbt_snapshot_module(options, check_mode=False, conn=None, now=None):
    """The whole vmware_cbt_snapshot module (:data:`CBT_SNAPSHOT_SPEC`): connect, find the VM, run, log out.

    Pass ``conn`` to reuse a connection (it is then left open).
    """
    own = conn is None
    if own:
        conn = connect_with(options)
    try:
        result = cycle_with(conn, find_vm_with(conn, options), options, check_mode=check_mode, now=now)
        result['vcenter_thumbprint'] = verified_thumbprint(conn, result['warnings'])
        result['warnings'].extend('vSphere call %s was sent again after a new login (attempt %d): %s'
                                  % (r['method'], r['attempt'], r['error']) for r in getattr(conn, 'retried', []))
        return result
    finally:
        if own:
            conn.close()
