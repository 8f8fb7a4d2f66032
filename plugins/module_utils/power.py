# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power a VM off for cutover, or on again to roll back.

The logic of the ``vmware_vm_power`` module. Powering off asks the guest to
shut down (VMware Tools ``ShutdownGuest``), waits for the VM to be off and
powers it off hard only when allowed (:func:`power_off`). Connection, VM
lookup, property reads, tasks and the typed errors come from
:mod:`vsphere`; every failure is a :class:`VSphereError` that names the
operation and the VM.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import time

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    CONNECTION_SPEC,
    LIBRARIES,
    VM_SPEC,
    InvalidParameterError,
    TaskFailedError,
    connect_with,
    fault_error,
    fetch_properties,
    find_vm_with,
    wait_for_task,
)

POWERED_ON = 'poweredOn'
POWERED_OFF = 'poweredOff'

# community.vmware.vmware_guest_powerstate's names -> (state, hard power off at once).
COMMUNITY_STATES = {
    'powered-on': ('poweredon', False),
    'shutdown-guest': ('poweredoff', False),
    'powered-off': ('poweredoff', True),
}

# The options of the vmware_vm_power module.
VM_POWER_SPEC = CONNECTION_SPEC.merge(VM_SPEC, ArgumentSpec(dict(
    state=dict(type='str', default='poweredoff', choices=['poweredoff', 'poweredon'] + sorted(COMMUNITY_STATES)),
    shutdown_timeout=dict(type='int', default=300),
    force=dict(type='bool', default=False),
)))

__all__ = ['LIBRARIES', 'VM_POWER_SPEC', 'vm_power_module', 'run', 'power_off', 'power_on', 'power_state']


def power_state(conn, vm, vm_name):
    """Return ``(name, power state)`` of ``vm`` (one property read)."""
    props = fetch_properties(conn, vm, ['name', 'runtime.powerState'], operation='read power state', vm=vm_name)
    return props.get('name') or vm._moId, str(props.get('runtime.powerState'))


def power_on(conn, vm, vm_name):
    """Power the VM on and wait for the task."""
    try:
        task = vm.PowerOnVM_Task()
    except Exception as exc:  # pylint: disable=broad-except
        raise fault_error(exc, 'power on', vm=vm_name)
    wait_for_task(conn, task, 'power on', vm=vm_name)


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


def run(conn, vm, state='poweredoff', shutdown_timeout=300, force=False, check_mode=False):
    """Bring ``vm`` to ``state`` (``poweredoff`` or ``poweredon``); return the module result."""
    vm_name, before = power_state(conn, vm, vm._moId)
    wanted = POWERED_OFF if state == 'poweredoff' else POWERED_ON
    method = 'none'
    if before != wanted:
        if wanted == POWERED_ON:
            method = 'power_on'
            if not check_mode:
                power_on(conn, vm, vm_name)
        elif check_mode:
            method = 'guest_shutdown' if shutdown_timeout > 0 and before == POWERED_ON else 'power_off'
        else:
            method = power_off(conn, vm, vm_name, shutdown_timeout, force)
    after = wanted if check_mode or method == 'none' else power_state(conn, vm, vm_name)[1]
    return {
        'changed': method != 'none',
        'power_state': after,
        'power_state_before': before,
        'method': method,
        'vm': {'name': vm_name, 'moid': vm._moId},
        'diff': {'before': {'power_state': before}, 'after': {'power_state': after}},
    }


def vm_power_module(options, check_mode=False, conn=None, clock=time.time):
    """The whole vmware_vm_power module: check options, connect, find the VM, run, log out.

    ``options`` are the module's (:data:`VM_POWER_SPEC`). The result has
    ``elapsed`` and a ``diff`` (the module drops it outside diff mode). Pass
    ``conn`` to reuse a connection (it is then left open).
    """
    if options.shutdown_timeout < 0:
        raise InvalidParameterError('vmware_vm_power: shutdown_timeout must be 0 or more seconds, got %d'
                                    % options.shutdown_timeout)
    if options.state in COMMUNITY_STATES:
        state, hard = COMMUNITY_STATES[options.state]
        options = options.replace(state=state, **(dict(shutdown_timeout=0, force=True) if hard else {}))
    start = clock()
    own = conn is None
    if own:
        conn = connect_with(options)
    try:
        vm = find_vm_with(conn, options)
        result = run(conn, vm, state=options.state, shutdown_timeout=options.shutdown_timeout,
                     force=options.force, check_mode=check_mode)
    finally:
        if own:
            conn.close()
    result['elapsed'] = round(clock() - start, 3)
    return result
