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

from ansible_collections.migratekit.migration.plugins.module_utils._cbt.decision import ExtentsDirError
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
