# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight of one VM: everything a cycle would trip over, found before anything changes.

Reads only: the VM's properties (one PropertyCollector call), the sync state
file, each target's size (an NBD connection that writes nothing), the VMA (a
progress read) and the datastore mapping on the appliance. Returns findings,
one per problem or notable fact, each with a ``level`` (``error``: the cycle
would fail or refuse; ``warning``: it would go on, doing something the user
should know; ``info``), a ``code``, the disk when there is one, and a message.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.decision import decide_sync, target_for
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.inventory import (
    classify_disks,
    ctk_disabled_disks,
    hardware_version_number,
    snapshot_facts,
    snapshot_findings,
    vm_facts,
)
from ansible_collections.migratekit.migration.plugins.module_utils._cbt.snapshots import describe_nodes, sort_snapshots
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    CONNECTION_SPEC,
    LIBRARIES as VSPHERE_LIBRARIES,
    VM_SPEC,
    VSphereError,
    connect_with,
    fetch_properties,
    find_vm_with,
)

MIN_HARDWARE_VERSION = 7
VM_PROPERTIES = [
    'name', 'config.uuid', 'config.instanceUuid', 'config.version', 'config.changeTrackingEnabled',
    'config.extraConfig', 'config.hardware.device', 'snapshot', 'runtime.powerState', 'runtime.consolidationNeeded',
]

PREFLIGHT_SPEC = CONNECTION_SPEC.merge(VM_SPEC, ArgumentSpec(dict(
    snapshot_name=dict(type='str', default='migratekit'),
    state_file=dict(type='path'),
    targets=dict(type='dict', default={}),
    source_transport=dict(type='str', default='auto', choices=['auto', 'file', 'vddk']),
    datastore_paths=dict(type='dict', default={}),
    vddk_thumbprint=dict(type='str', default=''),
    vma_url=dict(type='str'),
    vma_token=dict(type='str', no_log=True),
    vma_validate_certs=dict(type='bool', default=True),
    job_id=dict(type='str'),
    exclude_disks=dict(type='list', elements='str', default=[]),
)))

LIBRARIES = VSPHERE_LIBRARIES


class Findings(object):
    def __init__(self):
        self.items = []

    def add(self, level, code, message, disk=None):
        self.items.append({'level': level, 'code': code, 'disk': disk, 'message': message})

    def count(self, level):
        return len([f for f in self.items if f['level'] == level])


def _disk_name(disk):
    return "%s (key %s)" % (disk['label'], disk['key'])


def check_vsphere(props, vm, options, findings, vcenter=None):
    """The VM's side: hardware, CBT per disk, disks a snapshot cannot freeze, snapshots, consolidation, decisions."""
    facts = vm_facts(vm, props)
    version = hardware_version_number(props.get('config.version'))
    if version is not None and version < MIN_HARDWARE_VERSION:
        findings.add('error', 'hardware_too_old', 'hardware version %s is too old for Changed Block Tracking '
                     '(vmx-%02d or newer needed)' % (props.get('config.version'), MIN_HARDWARE_VERSION))
    devices = props.get('config.hardware.device')
    disks, _skipped = classify_disks(devices)
    excluded = set(str(item).strip() for item in options.exclude_disks or [])
    for finding in snapshot_findings(devices):
        named = str(finding['key']) in excluded or finding['label'] in excluded
        if named and finding['excludable']:
            findings.add('warning', 'disk_excluded', "disk %s ('%s', %s) is excluded: it is not migrated"
                         % (finding['key'], finding['label'], finding['mode']), disk=finding['key'])
        else:
            findings.add('error', 'disk_unfreezable', "disk %s ('%s', %s) is %s: %s; %s" % (
                finding['key'], finding['label'], finding['backing_file'], finding['mode'], finding['reason'],
                finding['remedy'] + (', or exclude it (exclude_disks)' if finding['excludable'] else '')),
                disk=finding['key'])
    disks = [d for d in disks if str(d['key']) not in excluded and d['label'] not in excluded]
    if not disks:
        findings.add('error', 'no_disk', 'no disk can be tracked with CBT')
    cbt_on = bool(props.get('config.changeTrackingEnabled'))
    if not cbt_on:
        findings.add('info', 'cbt_off', 'Changed Block Tracking is off: the first cycle turns it on (with a stun '
                     'snapshot) and copies every disk in full')
    untracked = ctk_disabled_disks(devices, props.get('config.extraConfig')) if cbt_on else {}
    for disk in disks:
        if disk['key'] in untracked:
            findings.add('warning', 'disk_cbt_off', '%s has %s = FALSE: the cycle turns its tracking on (a stun '
                         'snapshot) and copies it in full' % (_disk_name(disk), untracked[disk['key']]),
                         disk=disk['key'])
        elif cbt_on and not disk['change_id']:
            findings.add('warning', 'no_change_id', '%s has no changeId although CBT is on: it is copied in full'
                         % _disk_name(disk), disk=disk['key'])
    identity = {'vm_uuid': props.get('config.uuid'), 'vm_instance_uuid': props.get('config.instanceUuid'),
                'vcenter': vcenter}
    state = _state(options.state_file, identity, findings)
    recorded = None
    if options.state_file:
        recorded = {} if state is None or sync_state.owner_mismatch(state, identity) else \
            sync_state.recorded_snapshots(state)
    tree = sort_snapshots(props.get('snapshot'), options.snapshot_name, identity['vm_instance_uuid'], recorded)
    if tree.users:
        findings.add('warning', 'users_snapshots', "the VM has snapshots that are not migratekit.migration's: %s; "
                     'they are kept and each disk is read whole through its chain' % describe_nodes(tree.users))
    if tree.ours:
        leftover = snapshot_facts(tree.ours[-1])
        findings.add('info', 'leftover_snapshot', 'a migration snapshot of an interrupted cycle is there: %s, %s s old; '
                     'the next cycle resumes from it while it is young enough' % (
                         describe_nodes(tree.ours[-1:]), leftover['age_seconds']))
    if tree.stun_leftovers:
        findings.add('info', 'stun_leftover', 'a CBT stun snapshot left by an interrupted run is there (%s); the next '
                     'cycle removes it' % describe_nodes(tree.stun_leftovers))
    if tree.unrecorded:
        findings.add('warning', 'unrecorded_snapshot', 'migration snapshots this state file does not record are '
                     'there (%s); they are left alone' % describe_nodes(tree.unrecorded))
    if props.get('runtime.consolidationNeeded'):
        findings.add('warning', 'consolidation_needed', 'vSphere says the disks need consolidation '
                     '(runtime.consolidationNeeded): the next snapshot removal runs ConsolidateVMDisks')
    plans = []
    for disk in disks:
        target = target_for(options.targets, disk['key'], disk['label'])
        try:
            decision = decide_sync('auto', disk['key'], disk['capacity_bytes'], disk['change_id'],
                                   vm_uuid=identity['vm_uuid'], state=state, state_file=options.state_file,
                                   target=target, cbt_was_enabled=cbt_on and disk['key'] not in untracked,
                                   change_id_known=False, label=disk['label'], identity=identity)
            findings.add('info', 'decision', '%s: %s copy (%s)' % (
                _disk_name(disk), decision.sync_type, decision.reason), disk=disk['key'])
        except VSphereError as exc:
            findings.add('error', 'decision', '%s: %s' % (_disk_name(disk), exc.message), disk=disk['key'])
        plans.append(dict(disk, target=target))
    return facts, plans


def _state(path, identity, findings):
    if not path:
        return None
    try:
        state = sync_state.load(path)
    except sync_state.SyncStateError as exc:
        findings.add('error', 'state_unreadable', '%s; incremental syncs and cutovers fail, full_sync keeps it aside'
                     % exc)
        return None
    mismatch = sync_state.owner_mismatch(state, identity)
    if mismatch:
        findings.add('warning', 'state_other_vm', 'the sync state file %s %s: it is kept aside and every disk gets a '
                     'full copy' % (path, mismatch))
    return state


def check_sources(plans, options, findings, thumbprint=None):
    """Where each disk would be read from: a mapped datastore (file transport) or VDDK.

    ``thumbprint`` is a callable giving the vCenter's thumbprint when the
    option is empty (computed from the verified certificate, as the cycle does).
    """
    for disk in plans:
        transport = options.source_transport
        mapped = (options.datastore_paths or {}).get(disk['datastore'])
        if transport == 'auto':
            transport = 'file' if mapped else 'vddk'
        if transport == 'vddk':
            if not (options.vddk_thumbprint or _computed(thumbprint)):
                findings.add('error', 'no_thumbprint', '%s is on datastore %s, not in the datastore mapping, so it '
                             'would be read with VDDK, which needs the vCenter thumbprint' % (
                                 _disk_name(disk), disk['datastore']), disk=disk['key'])
            continue
        if not mapped:
            findings.add('error', 'datastore_not_mapped', '%s: datastore %s is not in the datastore mapping (file '
                         'transport)' % (_disk_name(disk), disk['datastore']), disk=disk['key'])
            continue
        relative = (disk['backing_file'] or '').split(']', 1)[-1].strip()
        path = os.path.join(mapped, relative)
        if not os.path.isfile(path):
            findings.add('error', 'source_missing', '%s: %s (datastore %s mapped to %s) is not there on the '
                         'appliance' % (_disk_name(disk), path, disk['datastore'], mapped), disk=disk['key'])


def _computed(thumbprint):
    try:
        return thumbprint() if thumbprint else None
    except VSphereError:
        return None


def check_targets(plans, findings, open_target=None):
    """Each disk's target: given, reachable, writable, at least as large as the disk. Nothing is written."""
    for disk in plans:
        if not disk['target']:
            findings.add('error', 'no_target', '%s has no target (give its key or label in the targets)'
                         % _disk_name(disk), disk=disk['key'])
            continue
        try:
            size, read_only = (open_target or _target_size)(disk['target'])
        except Exception as exc:  # pylint: disable=broad-except
            findings.add('error', 'target_unreachable', '%s: target %s cannot be opened: %s'
                         % (_disk_name(disk), disk['target'], exc), disk=disk['key'])
            continue
        if read_only:
            findings.add('error', 'target_read_only', '%s: target %s is read-only' % (
                _disk_name(disk), disk['target']), disk=disk['key'])
        if size < disk['capacity_bytes']:
            findings.add('error', 'target_too_small', '%s: target %s holds %d bytes, the disk %d' % (
                _disk_name(disk), disk['target'], size, disk['capacity_bytes']), disk=disk['key'])


def _target_size(uri):
    from ansible_collections.migratekit.migration.plugins.module_utils._copy.endpoints import (
        close_handle,
        open_handle,
    )
    handle = open_handle(uri, 'target')
    try:
        return handle.get_size(), bool(handle.is_read_only())
    finally:
        close_handle(handle)


def check_vma(options, findings, job_id):
    if not options.vma_url:
        return
    from ansible_collections.migratekit.migration.plugins.module_utils import vma
    try:
        client = vma.VmaClient(options.vma_url, token=options.vma_token, validate_certs=options.vma_validate_certs,
                               retries=0)
        try:
            client.get_progress(job_id)
        except vma.VmaNotFoundError:
            pass   # reachable: the job is not known yet
        finally:
            client.close()
    except vma.VmaError as exc:
        findings.add('error', 'vma_unreachable', 'the VMA %s cannot be reached: %s'
                     % (vma.redact_url(options.vma_url), exc))


def preflight(conn, vm, options, open_target=None):
    findings = Findings()
    props = fetch_properties(conn, vm, VM_PROPERTIES, operation='read VM properties', vm=vm._moId)
    facts, plans = check_vsphere(props, vm, options, findings, vcenter=getattr(conn, 'hostname', None))
    check_sources(plans, options, findings, thumbprint=getattr(conn, 'thumbprint', None))
    check_targets(plans, findings, open_target=open_target)
    check_vma(options, findings, options.job_id or facts['name'])
    return {
        'changed': False,
        'vm': facts,
        'ready': findings.count('error') == 0,
        'counts': dict((level, findings.count(level)) for level in ('error', 'warning', 'info')),
        'findings': findings.items,
    }


def preflight_module(options, check_mode=False):  # pylint: disable=unused-argument
    """The migration_preflight module (:data:`PREFLIGHT_SPEC`): reads only, so check mode runs it whole."""
    conn = connect_with(options)
    try:
        return preflight(conn, find_vm_with(conn, options), options)
    finally:
        conn.close()
