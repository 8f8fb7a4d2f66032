# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a VM's properties say: its disks, its snapshot tree, its facts; and the extents directory.

Pure functions over pyVmomi objects already read (one PropertyCollector call
in :mod:`..cbt`), plus the checks of the extents directory.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import os
import re
import tempfile

from ansible_collections.migratekit.migration.plugins.module_utils._cbt.decision import CbtUnsupportedError, ExtentsDirError
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import HAS_PYVMOMI, InvalidParameterError

if HAS_PYVMOMI:
    from pyVmomi import vim


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
    found.sort(key=snapshot_created_at)
    return found


def snapshot_created_at(node):
    """A SnapshotTree node's creation time in seconds since the epoch (0 when unknown)."""
    return _timestamp(node.createTime)


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
        # SnapshotTree.state: "The power state of the virtual machine when this snapshot was taken"
        'power_state': str(node.state) if getattr(node, 'state', None) else None,
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


# The extraConfig prefix of each controller type: a disk's own CBT switch is
# "<prefix><bus>:<unit>.ctkEnabled", next to the VM's "ctkEnabled" (VMware KB
# 1031873, "Enabling Changed Block Tracking (CBT) on virtual machines").
_CONTROLLER_PREFIXES = (
    ('VirtualSCSIController', 'scsi'),
    ('VirtualAHCIController', 'sata'),
    ('VirtualSATAController', 'sata'),
    ('VirtualNVMEController', 'nvme'),
    ('VirtualIDEController', 'ide'),
)


def _controller_prefix(controller):
    for class_name, prefix in _CONTROLLER_PREFIXES:
        cls = getattr(vim.vm.device, class_name, None)
        if cls is not None and isinstance(controller, cls):
            return prefix
    return None


def extra_config_values(extra_config):
    """``{key: value}`` of a VM's extraConfig; a key listed twice keeps its last value."""
    values = {}
    for option in extra_config or []:
        key = getattr(option, 'key', None)
        if key:
            values[key] = getattr(option, 'value', None)
    return values


def ctk_option_keys(devices):
    """``{disk key: "scsi0:1.ctkEnabled"}``: the extraConfig key of each disk's own CBT switch."""
    controllers = dict((device.key, device) for device in devices or []
                       if isinstance(device, vim.vm.device.VirtualController))
    keys = {}
    for device in devices or []:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        controller = controllers.get(device.controllerKey)
        prefix = _controller_prefix(controller) if controller is not None else None
        if prefix is None or device.unitNumber is None:
            continue
        keys[device.key] = '%s%d:%d.ctkEnabled' % (prefix, controller.busNumber, device.unitNumber)
    return keys


def ctk_disabled_disks(devices, extra_config):
    """``{disk key: option key}`` of the disks whose ``ctkEnabled`` extraConfig says FALSE."""
    values = extra_config_values(extra_config)
    return dict((disk_key, option) for disk_key, option in ctk_option_keys(devices).items()
                if str(values.get(option, '')).strip().lower() == 'false')


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


# --------------------------------------------------------------------------
# disks a snapshot cannot freeze

class UnfreezableDisksError(CbtUnsupportedError):
    """Disks a snapshot cannot freeze and nobody excluded: the VM is refused before anything changes on it.

    ``details['unfreezable_disks']`` lists them (:func:`snapshot_findings`).
    """


# Why each kind cannot be frozen, and how to change it so that it can be.
# vSphere API reference: VirtualDiskMode "independent_persistent: Same as
# persistent, but not affected by snapshots" (independent_nonpersistent
# likewise); SnapshotIncompatibleDeviceInVm "Thrown if a snapshot operation
# cannot be performed on account of an incompatible device ... if a virtual
# machine uses a raw disk or a shared bus controller" (RawDiskNotSupported,
# SharedBusControllerNotSupported); VirtualDiskSharing "sharingMultiWriter:
# The virtual disk is shared between multiple virtual machines" (other VMs
# write it while the snapshot is meant to freeze it).
_KINDS = {
    'independent': ('vSphere snapshots do not include independent disks (they are "not affected by snapshots")',
                    'set its disk mode to persistent'),
    'physical_rdm': ('a physical-mode RDM passes the LUN through: vSphere cannot snapshot it',
                     'make it a virtual-mode RDM (compatibility mode virtualMode)'),
    'shared_bus': ('vSphere cannot snapshot a VM with a controller that shares its bus '
                   '(SnapshotIncompatibleDeviceInVm), whatever is excluded',
                   'set the bus sharing of the controller to none (noSharing), or move the disk(s) to a controller '
                   'without bus sharing'),
    'multi_writer': ('other VMs may write a multi-writer disk while the snapshot is meant to freeze it',
                     'set its sharing to sharingNone'),
}


def snapshot_findings(devices):
    """Every disk in ``devices`` a snapshot cannot freeze, as findings a preflight can list.

    Pure: nothing fails. One dict per disk (sorted by key): ``key``,
    ``label``, ``backing_file``, ``kind`` (``independent``, ``physical_rdm``,
    ``shared_bus``, ``multi_writer``; the first that applies), ``mode`` (what
    the VM says: the disk mode, ``physicalMode RDM``, the controller's bus
    sharing, the disk's sharing), ``reason``, ``remedy`` (how to change it)
    and ``excludable`` (False for a shared bus: vSphere refuses a snapshot of
    the whole VM then, so excluding the disk does not help).
    Virtual-mode RDMs are not findings: snapshots include them like any disk.
    """
    devices = list(devices or [])
    controllers = dict((d.key, d) for d in devices if isinstance(d, vim.vm.device.VirtualController))
    findings = []
    for device in devices:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        backing = device.backing
        controller = controllers.get(device.controllerKey)
        bus_sharing = str(getattr(controller, 'sharedBus', None) or 'noSharing')
        disk_mode = str(getattr(backing, 'diskMode', None) or 'persistent')
        sharing = str(getattr(backing, 'sharing', None) or 'sharingNone')
        if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo) \
                and getattr(backing, 'compatibilityMode', None) == 'physicalMode':
            kind, mode = 'physical_rdm', 'physicalMode RDM'
        elif bus_sharing != 'noSharing':
            kind, mode = 'shared_bus', 'on %s with bus sharing %s' % (disk_label(controller), bus_sharing)
        elif disk_mode.startswith('independent'):
            kind, mode = 'independent', disk_mode
        elif sharing == 'sharingMultiWriter':
            kind, mode = 'multi_writer', sharing
        else:
            continue
        reason, remedy = _KINDS[kind]
        findings.append({'key': device.key, 'label': disk_label(device),
                         'backing_file': getattr(backing, 'fileName', None), 'kind': kind, 'mode': mode,
                         'reason': reason, 'remedy': remedy, 'excludable': kind != 'shared_bus'})
    findings.sort(key=lambda f: f['key'])
    return findings


def _describe_finding(finding):
    return "disk %s ('%s', %s) is %s: %s" % (finding['key'], finding['label'], finding['backing_file'],
                                             finding['mode'], finding['reason'])


def excluded_disks(devices, exclude, vm_name=None):
    """The disks ``exclude`` (device keys or labels) names, or raise before anything changes on the VM.

    Every entry must name a disk of the VM (InvalidParameterError otherwise).
    Every disk of :func:`snapshot_findings` must be excluded (and be
    excludable): :class:`UnfreezableDisksError` names each one that is not,
    its mode, and the two ways out. Returns the excluded disks (``key``,
    ``label``, ``backing_file``, ``reason``; ``kind`` and ``mode`` for a
    finding), sorted by key.
    """
    disks = [d for d in devices or [] if isinstance(d, vim.vm.device.VirtualDisk)]
    wanted = [str(item).strip() for item in exclude or []]
    by_name = {}
    for disk in disks:
        by_name[str(disk.key)] = disk
        by_name.setdefault(disk_label(disk), disk)
    unknown = [item for item in wanted if item not in by_name]
    if unknown:
        raise InvalidParameterError('exclude_disks: %s names no disk of the VM (its disks: %s); give device keys '
                                    'or labels' % (', '.join(repr(u) for u in unknown),
                                                   ', '.join("%s ('%s')" % (d.key, disk_label(d)) for d in disks)
                                                   or 'none'),
                                    operation='check exclude_disks', vm=vm_name)
    chosen = set(by_name[item].key for item in wanted)
    findings = dict((f['key'], f) for f in snapshot_findings(devices))
    refused = [f for key, f in sorted(findings.items()) if key not in chosen or not f['excludable']]
    if refused:
        raise UnfreezableDisksError(_refusal_message(refused), operation='check which disks a snapshot can freeze',
                                    vm=vm_name, details={'unfreezable_disks': refused})
    result = []
    for disk in sorted(disks, key=lambda d: d.key):
        if disk.key not in chosen:
            continue
        entry = {'key': disk.key, 'label': disk_label(disk), 'backing_file': getattr(disk.backing, 'fileName', None),
                 'reason': 'excluded by exclude_disks', 'kind': None, 'mode': None}
        finding = findings.get(disk.key)
        if finding:
            entry.update(kind=finding['kind'], mode=finding['mode'],
                         reason='excluded by exclude_disks (%s: %s)' % (finding['mode'], finding['reason']))
        result.append(entry)
    return result


def _refusal_message(refused):
    excludable = [f for f in refused if f['excludable']]
    lines = ['%d disk(s) cannot be frozen by a snapshot; the VM was not changed (no CBT change, no snapshot, no '
             'server): %s.' % (len(refused), '; '.join(_describe_finding(f) for f in refused))]
    if excludable:
        lines.append('Either exclude %s from the migration by key or label (option exclude_disks, role variable '
                     'migratekit_exclude_disks, e.g. [%s]; an excluded disk is not copied and is listed in the '
                     'result), or change %s and run again: %s.'
                     % ('it' if len(excludable) == 1 else 'each', ', '.join(str(f['key']) for f in excludable),
                        'its mode' if len(excludable) == 1 else 'their modes',
                        '; '.join('disk %s: %s' % (f['key'], f['remedy']) for f in excludable)))
    stuck = [f for f in refused if not f['excludable']]
    if stuck:
        lines.append('%s %s: excluding %s is not enough, %s.'
                     % ('Disk' if len(stuck) == 1 else 'Disks', ', '.join(str(f['key']) for f in stuck),
                        'it' if len(stuck) == 1 else 'them', stuck[0]['remedy']))
    return ' '.join(lines)
