#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: vmware_vm_power
short_description: Shut a VM down for cutover (guest shutdown, then power off if allowed), or power it on
version_added: 0.1.0
description:
  - With O(state=poweredoff), asks the guest OS to shut down (VMware Tools C(ShutdownGuest)) and waits up to
    O(shutdown_timeout) seconds for the VM to be off. If it is still on (or the guest cannot be asked), the VM is
    powered off hard only when O(force=true); otherwise the task fails and the VM keeps running.
  - With O(state=poweredon), powers the VM on (to roll a cutover back).
  - A VM already in the requested state is left alone (changed=false).
author:
  - migratekit.migration contributors (@migratekit)
extends_documentation_fragment:
  - migratekit.migration.vsphere
  - migratekit.migration.vsphere.vm
attributes:
  check_mode:
    support: full
    description: Reports what would be done (RV(method)) without changing the VM.
  diff_mode:
    support: full
    description: Shows the power state before and after.
  idempotent:
    support: full
    description: A VM already in the requested power state is not touched.
  action_group:
    support: full
    description: Use C(group/migratekit.migration.vmware) in C(module_defaults) to set the connection options.
    membership:
      - migratekit.migration.vmware
options:
  state:
    description:
      - V(poweredoff) shuts the VM down; V(poweredon) powers it on.
      - Since version 0.2.0, the names of C(community.vmware.vmware_guest_powerstate) mean what they mean there.
        V(shutdown-guest) is V(poweredoff) (a guest shutdown, then a hard power off only with O(force=true));
        V(powered-off) powers the VM off hard at once (V(poweredoff) with O(shutdown_timeout=0) and O(force=true));
        V(powered-on) is V(poweredon).
    type: str
    choices: [poweredoff, poweredon, powered-off, powered-on, shutdown-guest]
    default: poweredoff
  shutdown_timeout:
    description:
      - Seconds to wait for a guest shutdown. V(0) skips the guest shutdown (only useful with O(force=true)).
    type: int
    default: 300
  force:
    description:
      - Power the VM off hard when the guest did not shut down within O(shutdown_timeout) or cannot be asked
        to (no VMware Tools). Without it that is an error and the VM keeps running.
    type: bool
    default: false
notes:
  - A hard power off loses whatever the guest had not written to disk; prefer a guest shutdown.
'''

EXAMPLES = r'''
- name: Shut the VM down for cutover, powering it off after 10 minutes
  migratekit.migration.vmware_vm_power:
    hostname: vcenter.example.com
    username: migrator@vsphere.local
    password: "{{ vcenter_password }}"
    uuid: 4213a8c4-5c2e-6d1b-2f6e-0a1b2c3d4e5f
    state: poweredoff
    shutdown_timeout: 600
    force: true

- name: Roll back, power it on again
  migratekit.migration.vmware_vm_power:
    uuid: 4213a8c4-5c2e-6d1b-2f6e-0a1b2c3d4e5f
    state: poweredon
'''

RETURN = r'''
power_state:
  description: The VM's power state after the task (what it would be in check mode).
  returned: always
  type: str
  sample: poweredOff
power_state_before:
  description: The VM's power state before the task.
  returned: always
  type: str
  sample: poweredOn
method:
  description: What was (or would be) done, V(none), V(guest_shutdown), V(power_off) or V(power_on).
  returned: always
  type: str
  sample: guest_shutdown
elapsed:
  description: Seconds the task took.
  returned: always
  type: float
  sample: 4.2
vm:
  description: The VM's name and managed object id.
  returned: always
  type: dict
  sample: {"name": "app01", "moid": "vm-42"}
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.power import (
    LIBRARIES,
    VM_POWER_SPEC,
    vm_power_module,
)


def main():
    run_module('vmware_vm_power', VM_POWER_SPEC, vm_power_module, LIBRARIES)


if __name__ == '__main__':
    main()
