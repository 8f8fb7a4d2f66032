#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sync_state_info
short_description: Read a VM's sync state and history, its change rate and its predicted cutover downtime
version_added: 0.2.0
description:
  - Reads, on the migration appliance, the VM's sync state file (the committed changeId, target and time of each
    disk) and its sync history (one record per cycle, see M(migratekit.migration.sync_history)), and returns them
    with the VM's change rate and its predicted cutover downtime.
  - "The prediction: guest shutdown + cycle overhead + the expected final delta / the measured throughput, where
    the final delta of each disk is its change rate times the seconds since its last sync. The shutdown, the
    overhead and the throughput are measured from the VM's own cycles, with O(default_shutdown_seconds),
    O(default_overhead_seconds) and O(default_throughput_bps) until there are any. See docs/cutover-planning.md."
  - Changes nothing. A VM without state or history gets empty ones (RV(exists) false).
author:
  - migratekit.migration contributors (@migratekit)
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying target.
    details:
      - Read-only; the same in check mode.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    support: full
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates
      no change.
options:
  state_file:
    description:
      - The VM's sync state file, for example V(/var/lib/migratekit/state/app01.json).
    type: path
    required: true
  history_file:
    description:
      - The VM's history file (default the state file's name with C(.history.json) instead of C(.json)).
    type: path
  history_cycles:
    description:
      - How many of the newest history records to return in RV(history) (V(0) for none; the prediction always
        reads them all).
    type: int
    default: 500
  max_downtime:
    description:
      - The cutover downtime budget in seconds; RV(ready) says whether the prediction is within it. V(0) means no
        budget (RV(ready) is null).
    type: float
    default: 0
  default_shutdown_seconds:
    description:
      - The guest shutdown time assumed until a cutover of the VM measured one.
    type: float
    default: 60
  default_overhead_seconds:
    description:
      - The cycle overhead (snapshot, changed areas, NBD servers, snapshot removal) assumed until the VM has a
        successful cycle.
    type: float
    default: 30
  default_throughput_bps:
    description:
      - The copy throughput (bytes per second) assumed until a copy of the VM moved bytes.
    type: float
    default: 50000000
seealso:
  - module: migratekit.migration.sync_history
  - module: migratekit.migration.vmware_cbt_snapshot
'''

EXAMPLES = r'''
- name: Read app01's state, history and prediction
  migratekit.migration.sync_state_info:
    state_file: /var/lib/migratekit/state/app01.json
    max_downtime: 600
  register: app01

- name: Show it
  ansible.builtin.debug:
    msg: "{{ app01.prediction_text }}; within the budget: {{ app01.ready }}"
'''

RETURN = r'''
exists:
  description: Whether the state file exists.
  returned: always
  type: bool
state_file:
  description: The state file.
  returned: always
  type: str
vm_uuid:
  description: The BIOS uuid of the VM the state belongs to (null before the first cycle).
  returned: always
  type: str
vm_instance_uuid:
  description: Its instance uuid, when recorded.
  returned: always
  type: str
vcenter:
  description: Its vCenter, when recorded.
  returned: always
  type: str
disks:
  description: Per device key (a string), the committed C(change_id), C(capacity_bytes), C(target) and C(synced_at).
  returned: always
  type: dict
  sample: {"2000": {"change_id": "52 ab .../7", "capacity_bytes": 67108864, "target": "nbd://t:10809/d0",
                    "synced_at": "2026-12-02T01:40:00Z"}}
history_file:
  description: The history file.
  returned: always
  type: str
history:
  description: The newest O(history_cycles) cycle records, oldest first (format in docs/contracts.md).
  returned: always
  type: list
  elements: dict
history_count:
  description: How many records the history holds.
  returned: always
  type: int
series:
  description:
    - Per device key, one point per committed cycle (C(at), C(sync_type), C(changed_bytes), C(bytes_moved),
      C(duration), C(throughput_bps), C(interval), C(change_rate_bps)), what the report draws.
  returned: always
  type: dict
change_rate_bps:
  description: The VM's change rate, bytes per second (the sum of its disks'; null before two cycles).
  returned: always
  type: float
last_throughput_bps:
  description: Bytes moved per copy second in the VM's last cycle that moved bytes (null before).
  returned: always
  type: float
predicted_cutover_seconds:
  description: The predicted cutover downtime in seconds.
  returned: always
  type: float
ready:
  description: Whether RV(predicted_cutover_seconds) is within O(max_downtime) (null without a budget).
  returned: always
  type: bool
prediction:
  description:
    - The prediction and its parts, C(shutdown_seconds), C(overhead_seconds), C(final_delta_bytes),
      C(final_delta_seconds) (with C(_source) V(measured) or V(default)), and per disk its change rate, time since
      its last sync, final delta and throughput.
  returned: always
  type: dict
prediction_text:
  description: The prediction and its parts in one line.
  returned: always
  type: str
  sample: predicted downtime 75 s = guest shutdown 12 s (measured) + cycle overhead 9 s (measured) + ...
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.sync_history import (
    INFO_SPEC,
    LIBRARIES,
    sync_state_info_module,
)


def main():
    run_module('sync_state_info', INFO_SPEC, sync_state_info_module, LIBRARIES)


if __name__ == '__main__':
    main()
