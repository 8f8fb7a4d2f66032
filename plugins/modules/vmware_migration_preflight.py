#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vmware_migration_preflight
short_description: Find what a migration cycle of a VM would trip over, before anything changes
version_added: 0.2.0
description:
  - Reads the VM (one PropertyCollector call), its sync state file, each disk's target (an NBD connection that
    writes nothing), the VMA and the datastore mapping, and returns one finding per problem or notable fact.
  - Errors (RV(findings[].level=error)) are what would make a cycle fail or refuse - a hardware version too old
    for CBT, a disk without a target, a target smaller than its disk or read-only or unreachable, a datastore not
    mapped for the file transport, a VMA that does not answer, an unreadable state file, an impossible decision.
  - Warnings are what a cycle would go on with - users' snapshots (kept, read through), disks that vSphere says need
    consolidation, a disk whose own CBT switch is off, disks that are not migrated, a state file of another VM.
  - Information - CBT off (the first cycle turns it on), a leftover migration snapshot (the next cycle resumes from
    it), each disk's full or incremental decision with its reason.
  - Changes nothing, on the VM or anywhere.
author:
  - migratekit.migration contributors (@migratekit)
extends_documentation_fragment:
  - migratekit.migration.vsphere
  - migratekit.migration.vsphere.vm
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: Never changes anything (C(changed=false)).
  action_group:
    support: full
    description: Use C(group/migratekit.migration.vmware) in C(module_defaults) to set the connection options.
    membership:
      - migratekit.migration.vmware
options:
  snapshot_name:
    description:
      - Name of the migration snapshot (to tell a leftover of ours from users' snapshots).
    type: str
    default: migratekit
  state_file:
    description:
      - The VM's sync state file, as M(migratekit.migration.vmware_cbt_snapshot) takes it (decisions, our
        snapshots' record).
    type: path
  targets:
    description:
      - Target URI of each disk, by device key or label.
    type: dict
    default: {}
  source_transport:
    description:
      - How the cycle would read the disks. V(auto) reads a disk from the mapped datastore when its datastore is in
        O(datastore_paths), with VDDK otherwise.
    type: str
    choices: [auto, file, vddk]
    default: auto
  datastore_paths:
    description:
      - Datastore name -> directory where it is mounted on the appliance (file transport). Each disk's backing file
        must be there.
    type: dict
    default: {}
  vddk_thumbprint:
    description:
      - The vCenter's TLS thumbprint, which the VDDK transport needs.
    type: str
    default: ''
  vma_url:
    description:
      - Base URL of the VMA; when given, it must answer a progress read.
    type: str
  vma_token:
    description:
      - Bearer token of the VMA.
    type: str
  vma_validate_certs:
    description:
      - Validate the VMA's TLS certificate.
    type: bool
    default: true
  job_id:
    description:
      - The VMA job whose progress is read; default the VM's name.
    type: str
  exclude_disks:
    description:
      - Disks (device keys or labels) left out of the migration, as M(migratekit.migration.vmware_cbt_snapshot)
        takes them. A disk a snapshot cannot freeze is an error unless it is excluded here.
    type: list
    elements: str
    default: []
notes:
  - The roles run it in check mode (C(--check)) and C(playbooks/preflight.yml) runs it for a whole inventory with a
    fleet summary.
'''

EXAMPLES = r'''
- name: Check a VM before its first sync
  migratekit.migration.vmware_migration_preflight:
    hostname: vcenter.example.com
    username: migration@vsphere.local
    password: "{{ vcenter_password }}"
    name: app01
    state_file: /var/lib/migratekit/state/app01.json
    targets:
      "2000": nbd://volumes.example.com:10809/vol-app01-root
    datastore_paths:
      datastore1: /mnt/datastore1
  register: preflight

- name: Show every finding
  ansible.builtin.debug:
    msg: "{{ preflight.findings | map(attribute='message') | list }}"
'''

RETURN = r'''
ready:
  description: Whether no finding is an error.
  returned: always
  type: bool
  sample: false
counts:
  description: Number of findings per level.
  returned: always
  type: dict
  sample: {"error": 1, "warning": 2, "info": 3}
findings:
  description: One entry per finding, errors and warnings as they were found, then information.
  returned: always
  type: list
  elements: dict
  contains:
    level:
      description: V(error), V(warning) or V(info).
      type: str
    code:
      description:
        - A keyword, for example V(target_too_small), V(target_unreachable), V(no_target), V(datastore_not_mapped),
          V(source_missing), V(no_thumbprint), V(vma_unreachable), V(hardware_too_old), V(state_unreadable),
          V(users_snapshots), V(consolidation_needed), V(disk_cbt_off), V(disk_unfreezable), V(disk_excluded),
          V(state_other_vm),
          V(leftover_snapshot), V(stun_leftover), V(cbt_off), V(decision).
      type: str
    disk:
      description: The disk's device key, or null for the VM.
      type: int
    message:
      description: What was found, in words.
      type: str
  sample: [{"level": "error", "code": "target_too_small", "disk": 2000,
            "message": "Hard disk 1 (key 2000): target nbd://... holds 1073741824 bytes, the disk 2147483648"}]
vm:
  description: The VM (name, uuid, instance_uuid, moid, power_state, cbt_enabled, hardware_version).
  returned: always
  type: dict
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.preflight import (
    LIBRARIES,
    PREFLIGHT_SPEC,
    preflight_module,
)


def main():
    run_module('vmware_migration_preflight', PREFLIGHT_SPEC, preflight_module, LIBRARIES)


if __name__ == '__main__':
    main()
