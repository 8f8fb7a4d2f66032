#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vmware_cbt_snapshot
short_description: Enable CBT, take the migration snapshot and list each disk's changed areas
version_added: 0.1.0
description:
  - The vSphere half of a migration sync cycle. With O(state=present) it turns Changed Block Tracking (CBT) on
    where it is off (reconfigure, then a stun cycle, that is a temporary snapshot created and removed so tracking
    takes effect), takes the migration snapshot (or reuses ours named O(snapshot_name)), decides per disk whether a
    full or an incremental copy is needed, asks vSphere (C(QueryChangedDiskAreas)) which areas of each disk to
    copy, and writes them to one extents file per disk in O(extents_dir).
  - A disk is copied incrementally when the sync state file O(state_file) holds a changeId for it that is still
    usable; otherwise the copy is full and RV(disks[].reason) says why (no state, another VM's state, CBT reset,
    grown disk, changed target, changeId rejected by vSphere).
  - The new changeId of each disk (RV(disks[].change_id)) is to be committed to the state file only after the
    copy was flushed to the target (the copy module does that); then run this module with O(state=absent).
  - With O(state=absent) our migration snapshot named O(snapshot_name) is removed, if it exists.
  - B(Only our snapshots are ever reused or removed.) A snapshot is ours when its description carries this
    collection's marker line (C([migratekit.migration snapshot kind=... vm=<instance uuid> token=...])) naming this
    VM, and its token or moref is recorded in O(state_file) (the token before C(CreateSnapshot), the moref after).
    Without O(state_file) the marker alone is the record. A snapshot merely named like ours is a user's; it is
    kept, a warning names it, and the cycle takes its own snapshot.
  - The users' snapshots of the VM are kept, and named in a warning; each disk is read whole through its frozen
    chain. A CBT stun snapshot left over by an interrupted run (recognised by its marker) is removed.
  - A disk whose own switch C(scsiX:Y.ctkEnabled) is C(FALSE) in the VM's extraConfig while the VM has CBT on
    gets it turned on (with a stun cycle) and a full copy, or, with O(enable_cbt=false), fails before anything
    changes, naming the key.
  - A failure after the snapshot was created removes it, unless O(keep_snapshot_on_failure=true).
author:
  - migratekit.migration contributors (@migratekit)
extends_documentation_fragment:
  - migratekit.migration.vsphere
  - migratekit.migration.vsphere.vm
attributes:
  check_mode:
    support: full
    description: Reports whether CBT would be enabled and a snapshot created, and the full/incremental decision
      of each disk, without changing the VM and without writing extents files.
  diff_mode:
    support: full
    description: Shows CBT on/off and the migration snapshot before and after.
  idempotent:
    support: partial
    description:
      - A repeat with O(state=present) reuses the existing snapshot and reports C(changed=false), but it
        rewrites the extents files (with the same content as long as the state file did not change).
      - A repeat with O(state=absent) reports C(changed=false).
  action_group:
    support: full
    description: Use C(group/migratekit.migration.vmware) in C(module_defaults) to set the connection options.
    membership:
      - migratekit.migration.vmware
options:
  state:
    description:
      - V(present) enables CBT, takes or reuses the snapshot and computes the changed areas.
      - V(absent) removes our migration snapshot named O(snapshot_name) if it exists, and any CBT stun snapshot
        left over by an interrupted run; never a user's snapshot.
    type: str
    choices: [present, absent]
    default: present
  snapshot_name:
    description:
      - Name of the migration snapshot.
    type: str
    default: migratekit
  quiesce:
    description:
      - Quiesce the guest file systems (VMware Tools) when taking the snapshot.
    type: bool
    default: false
  enable_cbt:
    description:
      - Enable CBT when it is off, for the VM or for one of its disks (C(scsiX:Y.ctkEnabled)). With V(false), such
        a VM is an error.
    type: bool
    default: true
  mode:
    description:
      - V(auto) copies a disk incrementally when O(state_file) holds a usable changeId for it, fully otherwise.
      - V(full) always lists the allocated areas of every disk.
      - V(incremental) fails, before anything is changed where possible, when a disk cannot be copied
        incrementally; the message names the disk and the reason.
    type: str
    choices: [auto, full, incremental]
    default: auto
  state_file:
    description:
      - The per-VM sync state file (JSON with C(vm_uuid), C(vm_instance_uuid), C(vcenter) and, per disk key,
        C(change_id), C(capacity_bytes), C(target), C(synced_at)). Read here; its disks are written by the copy
        module after a flush.
      - A missing file means no previous sync (full copies).
      - The VM's identity (BIOS uuid, instance uuid, vCenter) is recorded in it before the snapshot. A file of
        another VM or vCenter (a VM deleted and re-created under the same name) is kept aside, renamed with a
        timestamp, never deleted, and every disk gets a full copy (RV(state_kept_aside)).
      - A file that cannot be read (truncated, not JSON) fails the task naming it, before anything changes on
        the VM, unless O(mode=full), which keeps it aside and starts over.
    type: path
  extents_dir:
    description:
      - Directory for the extents files, one per disk, named C(<vm name>-<vm moid>-<disk key>.extents.json).
        Created if missing.
      - Required with O(state=present).
    type: path
  targets:
    description:
      - Target of each disk (device key such as C(2000), or label such as C(Hard disk 1)) -> target URI.
      - Used only to detect a target that changed since the last sync, which forces a full copy.
    type: dict
  keep_snapshot_on_failure:
    description:
      - Keep the snapshot this task created when a later step fails (for debugging). By default it is removed.
    type: bool
    default: false
  reset_cbt:
    description:
      - Reset Changed Block Tracking before the snapshot, for a VM whose tracking files are corrupt (vSphere
        answers wrong or failing C(QueryChangedDiskAreas)). It disables CBT, stuns, enables, stuns (VMware KB 2139574).
        Every disk then gets a full copy (RV(disks[].reason_code=cbt_reset_requested)); our migration snapshot
        left from before is replaced.
      - Not with O(mode=incremental), which fails before anything changes.
    type: bool
    default: false
  remove_timeout:
    description:
      - Seconds to wait for a snapshot removal (and for a consolidation after it) before giving up with an error
        (the vSphere task goes on). With O(commit_unchanged), a removal that fails or times out after every disk
        was committed is a warning, not a failure.
    type: int
    default: 1800
  commit_unchanged:
    description:
      - For each disk with an incremental decision and no changed area, commit the snapshot's changeId in
        O(state_file) right away (nothing changed since the committed changeId, so the target already holds the
        snapshot's data) and report RV(disks[].copy_needed=false).
      - When no disk has anything to copy, also remove the snapshot and this run's extents files, so that an
        idle cycle needs no NBD server, no copy and no cleanup (RV(snapshot.removed=true)).
      - Never in check mode.
    type: bool
    version_added: 0.2.0
    default: false
  exclude_disks:
    description:
      - Disks to leave out of the migration, by device key (V(2001)) or label (V(Hard disk 2)). Their data is not
        copied; they are listed in RV(excluded_disks) and in a warning.
      - Disks a snapshot cannot freeze (independent disks, physical-mode RDMs, multi-writer disks) refuse the VM
        before anything changes on it unless they are listed here; the message names each one, its mode, and how
        to change it instead. Disks on a controller with bus sharing refuse it even when listed (vSphere cannot
        snapshot such a VM). Virtual-mode RDMs are migrated like other disks.
      - An entry that names no disk of the VM is an error.
    type: list
    elements: str
    default: []
notes:
  - SOAP round trips per VM stay a small constant plus the C(QueryChangedDiskAreas) pages of each disk; VM and
    snapshot properties are read with the PropertyCollector.
  - Independent disks, physical-mode RDMs, multi-writer disks and disks on a controller with bus sharing cannot be
    frozen by a snapshot; see O(exclude_disks).
seealso:
  - name: QueryChangedDiskAreas
    description: The vSphere API method behind the changed areas.
    link: https://developer.broadcom.com/xapis/vsphere-web-services-api/latest/vim.VirtualMachine.html#queryChangedDiskAreas
'''

EXAMPLES = r'''
- name: Take the migration snapshot and list the areas to copy
  migratekit.migration.vmware_cbt_snapshot:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    path: /DC0/vm/app01
    state_file: /var/lib/migratekit/app01/state.json
    extents_dir: /var/lib/migratekit/app01/extents
  register: cycle

- name: Show why a disk gets a full copy
  ansible.builtin.debug:
    msg: "{{ item.label }}: {{ item.sync_type }} ({{ item.reason }})"
  loop: "{{ cycle.disks }}"

- name: Incremental only, with the connection set once for the group
  module_defaults:
    group/migratekit.migration.vmware:
      hostname: vcenter.example.com
      username: migrator@vsphere.local
      password: "{{ vcenter_password }}"
  block:
    - name: Fail if any disk would need a full copy
      migratekit.migration.vmware_cbt_snapshot:
        uuid: 4213a8c4-5c2e-6d1b-2f6e-0a1b2c3d4e5f
        mode: incremental
        state_file: /var/lib/migratekit/app01/state.json
        extents_dir: /var/lib/migratekit/app01/extents
        targets:
          2000: nbd+unix:///?socket=/run/migratekit/app01-2000.sock

    - name: Remove the migration snapshot after the copy
      migratekit.migration.vmware_cbt_snapshot:
        uuid: 4213a8c4-5c2e-6d1b-2f6e-0a1b2c3d4e5f
        state: absent
'''

RETURN = r'''
vm:
  description: The VM.
  returned: always
  type: dict
  contains:
    name:
      description: VM name.
      type: str
      sample: app01
    uuid:
      description: BIOS uuid (the key of the sync state file).
      type: str
      sample: 4213a8c4-5c2e-6d1b-2f6e-0a1b2c3d4e5f
    instance_uuid:
      description: vCenter instance uuid.
      type: str
      sample: 5013b1a2-0c4d-4e5f-8a9b-0c1d2e3f4a5b
    moid:
      description: Managed object id.
      type: str
      sample: vm-42
    power_state:
      description: V(poweredOn), V(poweredOff) or V(suspended).
      type: str
      sample: poweredOn
    cbt_enabled:
      description: Whether CBT is on after the task (what it would be in check mode).
      type: bool
      sample: true
    hardware_version:
      description: Virtual hardware version.
      type: str
      sample: vmx-19
snapshot:
  description:
    - The migration snapshot; null with O(state=absent) when there was none.
    - In check mode, when it would be created, RV(snapshot.moid) and RV(snapshot.created) are null.
  returned: always
  type: dict
  contains:
    moid:
      description: Managed object id of the snapshot (the C(snapshot=) of the nbdkit vddk plugin).
      type: str
      sample: snapshot-77
    name:
      description: Snapshot name.
      type: str
      sample: migratekit
    created:
      description: Creation time, UTC, ISO 8601.
      type: str
      sample: '2026-11-26T02:40:00Z'
    age_seconds:
      description: Age of the snapshot in seconds.
      type: int
      sample: 12
    reused:
      description: Whether an existing snapshot of that name was reused instead of creating one.
      type: bool
      sample: false
    power_state:
      description: The power state of the VM when the snapshot was taken (null when vSphere does not say).
      type: str
      sample: poweredOff
    removed:
      description:
        - With O(state=absent), true when the snapshot was (or in check mode would be) removed.
        - With O(commit_unchanged), true when no disk had anything to copy and the snapshot was removed already.
      type: bool
      returned: when O(state=absent) and the snapshot existed, or it was removed with O(commit_unchanged)
      sample: true
disks:
  description: One entry per tracked disk, sorted by device key (empty with O(state=absent)).
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Device key (the disk key of the state file and the C(disk_id) C(disk-<key>) of progress reports).
      type: int
      sample: 2000
    label:
      description: Device label.
      type: str
      sample: Hard disk 1
    unit_number:
      description: Unit number on its controller.
      type: int
      sample: 0
    controller_key:
      description: Device key of its controller.
      type: int
      sample: 1000
    capacity_bytes:
      description: Disk size in bytes, as in the snapshot.
      type: int
      sample: 67108864
    backing_file:
      description: Datastore path of the snapshot's disk (the C(file=) of the nbdkit vddk plugin).
      type: str
      sample: '[LocalDS_0] app01/app01.vmdk'
    datastore:
      description: Datastore of RV(disks[].backing_file).
      type: str
      sample: LocalDS_0
    change_id:
      description: The disk's changeId in the snapshot; commit it to the state file after the copy was flushed.
      type: str
      sample: 52 9b 6c 1a 7d 2e 4f 80-9a 1b 2c 3d 4e 5f 60 71/12
    previous_change_id:
      description: The changeId the changes are relative to; null for a full copy.
      type: str
      sample: 52 9b 6c 1a 7d 2e 4f 80-9a 1b 2c 3d 4e 5f 60 71/11
    sync_type:
      description: V(full) or V(incremental).
      type: str
      sample: incremental
    reason_code:
      description:
        - Why, as a keyword; V(incremental) for incremental copies, otherwise one of V(mode_full), V(no_state),
          V(other_vm), V(bad_state), V(cbt_reset_requested), V(cbt_off), V(capacity_changed), V(no_change_id),
          V(cbt_reset), V(cbt_rewound) (the VM was reverted to a snapshot older than the last sync),
          V(target_changed), V(change_id_rejected).
      type: str
      sample: cbt_reset
    reason:
      description: Why, in words.
      type: str
      sample: 'CBT was reset: the stored changeId ... has CBT uuid ..., the disk now has ...'
    target:
      description: The disk's target from O(targets), if given.
      type: str
      sample: nbd+unix:///?socket=/run/migratekit/app01-2000.sock
    extents_file:
      description: The extents file of the disk (null in check mode).
      type: str
      sample: /var/lib/migratekit/app01/extents/app01-vm-42-2000.extents.json
    extent_count:
      description: Number of extents (null in check mode).
      type: int
      sample: 12
    changed_bytes:
      description: Bytes to copy (null in check mode).
      type: int
      sample: 786432
    copy_needed:
      description: Whether the disk has anything to copy (a full copy, or changed areas; true when not known yet).
      type: bool
      sample: true
    committed_change_id:
      description:
        - With O(commit_unchanged), the changeId committed for a disk with nothing to copy; null otherwise.
      type: str
      sample: "52 3c 5f 1a .../8"
excluded_disks:
  description:
    - The disks O(exclude_disks) left out of the migration, with the reason; also reported as warnings.
    - Each item's C(kind) and C(mode) say why a snapshot could not have frozen the disk
      (V(independent), V(physical_rdm), V(multi_writer)); null for any other disk.
  returned: always
  type: list
  elements: dict
  sample: [{"key": 2001, "label": "Hard disk 2", "backing_file": "[LocalDS_0] app01/data.vmdk",
            "kind": "independent", "mode": "independent_persistent",
            "reason": "excluded by exclude_disks (independent_persistent: vSphere snapshots do not include
                       independent disks)"}]
skipped_disks:
  description: Disks CBT cannot track that were not refused (none since O(exclude_disks)); kept for compatibility.
  returned: always
  type: list
  elements: dict
  sample: [{"key": 2001, "label": "Hard disk 2", "backing_file": "[LocalDS_0] app01/data.vmdk",
            "reason": "independent_persistent disk: snapshots do not include it and CBT does not track it"}]
vcenter_thumbprint:
  description:
    - SHA-1 fingerprint of the vCenter certificate (hex pairs separated by colons), read from the certificate the
      connection verified; what the vddk transport of M(migratekit.migration.nbd_disk_server) needs as its
      thumbprint. Null when O(validate_certs=false) (an unverified certificate is never vouched for).
  returned: always
  type: str
  sample: "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"
state_kept_aside:
  description:
    - Where the sync state file was kept aside (renamed, never deleted) because it belonged to another VM or
      vCenter (a VM re-created under the same name) or, with O(mode=full), could not be read; every disk then
      gets a full copy. Null otherwise.
  returned: always
  type: str
  sample: /var/lib/migratekit/state/app01.json.aside-20261201T101500Z
consolidation:
  description:
    - After a snapshot removal (O(state=absent), or O(commit_unchanged) with nothing to copy), what
      C(runtime.consolidationNeeded) said and whether C(ConsolidateVMDisks) ran. A consolidation that fails is a
      warning, not a failure (the data is synced); null when no snapshot was removed.
  returned: always
  type: dict
  contains:
    needed:
      description: Whether vSphere said the disks needed consolidation after the removal.
      type: bool
    done:
      description: Whether ConsolidateVMDisks ran and succeeded.
      type: bool
    error:
      description: Why the consolidation failed; null otherwise.
      type: str
  sample: {"needed": true, "done": false, "error": "FileLocked: ..."}
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.cbt import (
    CBT_SNAPSHOT_SPEC,
    LIBRARIES,
    cbt_snapshot_module,
)


def main():
    run_module('vmware_cbt_snapshot', CBT_SNAPSHOT_SPEC, cbt_snapshot_module, LIBRARIES)


if __name__ == '__main__':
    main()
