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
options:
  name:
    description:
      - Name of the VM. Exactly one of O(name), O(path), O(uuid) or O(moid) is required.
    type: str
  path:
    description:
      - Inventory path of the VM, such as C(/DC0/vm/VM0).
    type: str
  uuid:
    description:
      - BIOS uuid or instance uuid of the VM.
    type: str
  moid:
    description:
      - Managed object id of the VM, such as C(vm-42).
    type: str
  datacenter:
    description:
      - Datacenter name in which O(name) or O(uuid) is looked up.
    type: str
  state:
    description:
      - V(poweredoff) shuts the VM down; V(poweredon) powers it on.
    type: str
    choices: [poweredoff, poweredon]
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

import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    HAS_PYVMOMI,
    PYVMOMI_IMPORT_ERROR,
    VM_SELECTOR_OPTIONS,
    TaskFailedError,
    VSphereError,
    connect,
    connection_params,
    fault_error,
    fetch_properties,
    find_vm,
    vm_argument_spec,
    vm_selector,
    vsphere_argument_spec,
    wait_for_task,
)

POWERED_ON = 'poweredOn'
POWERED_OFF = 'poweredOff'


def power_state(conn, vm, vm_name):
    props = fetch_properties(conn, vm, ['name', 'runtime.powerState'], operation='read power state', vm=vm_name)
    return props.get('name') or vm._moId, str(props.get('runtime.powerState'))


def power_off(conn, vm, vm_name, shutdown_timeout, force, sleep=time.sleep, clock=time.time):
    """Guest shutdown, wait, then hard power off if ``force``; return the method used."""
    guest_error = None
    if shutdown_timeout > 0:
        try:
            vm.ShutdownGuest()
        except Exception as exc:  # pylint: disable=broad-except
            guest_error = fault_error(exc, 'guest shutdown', vm=vm_name)
        else:
            deadline = clock() + shutdown_timeout
            delay = 0.2
            while True:
                if power_state(conn, vm, vm_name)[1] == POWERED_OFF:
                    return 'guest_shutdown'
                if clock() >= deadline:
                    break
                sleep(min(delay, max(0.0, deadline - clock())))
                delay = min(delay * 2, 5.0)
    if not force:
        why = ('the guest did not shut down within %d s' % shutdown_timeout if guest_error is None
               else 'the guest cannot be asked to shut down (%s)' % guest_error.message)
        if shutdown_timeout <= 0:
            why = 'shutdown_timeout is 0'
        raise TaskFailedError('%s and force is false: the VM keeps running; retry with a longer shutdown_timeout '
                              'or force: true' % why, operation='power off', vm=vm_name)
    try:
        task = vm.PowerOffVM_Task()
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, 'power off', vm=vm_name)
    wait_for_task(conn, task, 'power off', vm=vm_name)
    return 'power_off'


def run(params, check_mode):
    conn = connect(**connection_params(params))
    try:
        vm = find_vm(conn, **vm_selector(params))
        vm_name, before = power_state(conn, vm, vm._moId)
        wanted = POWERED_OFF if params['state'] == 'poweredoff' else POWERED_ON
        method = 'none'
        if before != wanted:
            if wanted == POWERED_ON:
                method = 'power_on'
                if not check_mode:
                    try:
                        task = vm.PowerOnVM_Task()
                    except Exception as exc:  # pylint: disable=broad-except
                        raise fault_error(exc, 'power on', vm=vm_name)
                    wait_for_task(conn, task, 'power on', vm=vm_name)
            elif check_mode:
                method = 'guest_shutdown' if params['shutdown_timeout'] > 0 and before == POWERED_ON else 'power_off'
            else:
                method = power_off(conn, vm, vm_name, params['shutdown_timeout'], params['force'])
        after = wanted if check_mode or method == 'none' else power_state(conn, vm, vm_name)[1]
        return {
            'changed': method != 'none',
            'power_state': after,
            'power_state_before': before,
            'method': method,
            'vm': {'name': vm_name, 'moid': vm._moId},
            'diff': {'before': {'power_state': before}, 'after': {'power_state': after}},
        }
    finally:
        conn.close()


def main():
    spec = vsphere_argument_spec()
    spec.update(vm_argument_spec())
    spec.update(
        state=dict(type='str', default='poweredoff', choices=['poweredoff', 'poweredon']),
        shutdown_timeout=dict(type='int', default=300),
        force=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[VM_SELECTOR_OPTIONS],
                           required_one_of=[VM_SELECTOR_OPTIONS], supports_check_mode=True)
    if not HAS_PYVMOMI:
        module.fail_json(msg=missing_required_lib('pyVmomi'), exception=PYVMOMI_IMPORT_ERROR)
    if module.params['shutdown_timeout'] < 0:
        module.fail_json(msg='vmware_vm_power: shutdown_timeout must be 0 or more seconds, got %d'
                         % module.params['shutdown_timeout'])
    start = time.time()
    try:
        result = run(module.params, module.check_mode)
    except VSphereError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='vmware_vm_power failed unexpectedly: %s: %s' % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    result['elapsed'] = round(time.time() - start, 3)
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
