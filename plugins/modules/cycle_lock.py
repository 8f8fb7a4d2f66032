#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: cycle_lock
short_description: Hold a VM's cycle lock on the migration appliance, so that one cycle per VM runs at a time
version_added: 0.2.0
description:
  - With O(state=locked), takes the lock O(path) (an C(flock) on a file, created 0600 in a 0700 directory) for
    the cycle and returns the RV(token) that releases it. When another cycle holds it, the task fails at once,
    naming that cycle (its start time, the pid and command line of the playbook that runs it, its job), and
    changes nothing.
  - The lock outlives the task. A small holder process keeps it until O(state=unlocked) with the token, or until
    the process running the cycle is gone (the C(ansible-playbook) process when the appliance is the
    controller, the SSH session of the controller's connection otherwise). So a lock whose cycle was killed is
    free again, and the next cycle takes it.
  - With O(state=unlocked), releases the lock when O(token) holds it; a lock held with another token (another
    cycle's) is left alone, with a warning.
  - The sync roles take the lock first and release it last; use this module for your own steps around a VM.
author:
  - migratekit.migration contributors (@migratekit)
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying target.
    details:
      - In check mode the lock is tried and released at once; a lock held by another cycle fails the task as it
        would without check mode.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    support: full
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates
      no change.
    details:
      - Locking again with the token that holds the lock, or unlocking a lock that is not held, changes nothing.
options:
  path:
    description:
      - The lock file, one per VM, for example V(/var/lib/migratekit/state/app01.cycle.lock). Its directory is
        created (0700) if needed.
    type: path
    required: true
  state:
    description:
      - V(locked) takes the lock, V(unlocked) releases it.
    type: str
    choices: [locked, unlocked]
    default: locked
  token:
    description:
      - With O(state=unlocked), the RV(token) returned when the lock was taken (required).
      - With O(state=locked), a token to take the lock with (default a random one); taking it again with the
        token that already holds it changes nothing.
    type: str
  owner:
    description:
      - "What the cycle is, shown to a cycle that finds the lock taken: the keys C(vm), C(cycle) and C(job_id) are
        shown, others are kept in the lock file."
    type: dict
    default: {}
  max_hold:
    description:
      - Seconds the lock may be held when no process running the cycle can be found to watch (neither
        C(ansible-playbook) nor C(sshd) among the module's parents); V(0) means no limit. Unused otherwise.
    type: int
    default: 86400
notes:
  - The lock is on the appliance that runs the module, so give each VM to one appliance.
seealso:
  - module: migratekit.migration.vmware_cbt_snapshot
'''

EXAMPLES = r'''
- name: Take app01's cycle lock
  migratekit.migration.cycle_lock:
    path: /var/lib/migratekit/state/app01.cycle.lock
    owner:
      vm: app01
      cycle: maintenance
  register: lock

- name: Release it
  migratekit.migration.cycle_lock:
    path: /var/lib/migratekit/state/app01.cycle.lock
    state: unlocked
    token: "{{ lock.token }}"
'''

RETURN = r'''
token:
  description: The token that holds the lock (null in check mode).
  returned: always
  type: str
  sample: 3f1c0a9e5b2d4e6f8a7b9c0d1e2f3a4b
path:
  description: The lock file.
  returned: always
  type: str
holder_pid:
  description: The pid of the process that keeps the lock.
  returned: when the lock is or was held
  type: int
watch_pid:
  description: The pid of the process running the cycle (the lock is released when it is gone), or null.
  returned: with state=locked, outside check mode
  type: int
started:
  description: When the lock was taken (UTC).
  returned: with state=locked, outside check mode
  type: str
previous:
  description:
    - How the cycle before this one ended, from the lock file. V(released) when it released the lock (it cleaned
      up after itself), V(interrupted) when it did not (killed, or its appliance rebooted), V(none) for the
      first cycle, V(held) when this token holds the lock already.
  returned: with state=locked
  type: str
  sample: released
owner:
  description: The O(owner) of the cycle holding the lock.
  returned: with state=locked
  type: dict
holder:
  description: On failure, what the lock file says about the cycle that holds the lock.
  returned: failure
  type: dict
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.cycle_lock import (
    LIBRARIES,
    LOCK_SPEC,
    cycle_lock_module,
)


def main():
    run_module('cycle_lock', LOCK_SPEC, cycle_lock_module, LIBRARIES)


if __name__ == '__main__':
    main()
