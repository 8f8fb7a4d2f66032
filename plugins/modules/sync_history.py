#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: sync_history
short_description: Append one sync cycle's record to a VM's sync history on the migration appliance
version_added: 0.2.0
description:
  - Appends a record of one cycle (its times, and per disk the sync type, changed bytes, bytes moved, copy
    duration, throughput, committed changeId and whether the copy resumed) to the VM's history file, next to its
    sync state file (V(VM.json) -> V(VM.history.json)).
  - The file is replaced atomically (temp file, fsync, rename, fsync of the directory) under the same exclusive
    lock discipline as the sync state file, and keeps the last O(max_cycles) records.
  - The sync roles call it at the end of every cycle that took a snapshot; read the history with
    M(migratekit.migration.sync_state_info).
author:
  - migratekit.migration contributors (@migratekit)
attributes:
  check_mode:
    support: full
    description: Can run in check_mode and return changed status prediction without modifying target.
    details:
      - In check mode the record is checked and returned, nothing is written.
  diff_mode:
    support: none
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    support: none
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates
      no change.
    details:
      - Every run appends a record (a history of cycles, one per run).
options:
  state_file:
    description:
      - The VM's sync state file; the history file is beside it unless O(history_file) is given.
    type: path
    required: true
  history_file:
    description:
      - The history file (default the state file's name with C(.history.json) instead of C(.json)).
    type: path
  vm_uuid:
    description:
      - The VM's BIOS uuid, recorded in the file; a file of another VM is refused.
    type: str
  record:
    description:
      - "The cycle: C(cycle) (V(full_sync), V(incremental_sync), V(presync) or V(cutover)), C(started) and
        C(finished) (ISO 8601, UTC), optional C(snapshot_at), C(failed), C(message), C(power_off_at),
        C(shutdown_seconds), C(committed_at), C(prediction) (what was predicted before a cutover), and C(disks), a
        list of dicts with C(key), C(label), C(sync_type), C(started), C(finished), C(changed_bytes),
        C(bytes_moved), C(duration), C(throughput_bps), C(change_id) (committed, null if not), C(resumed),
        C(copied). See docs/contracts.md."
    type: dict
    required: true
  max_cycles:
    description:
      - How many records the file keeps (the oldest go first).
    type: int
    default: 500
seealso:
  - module: migratekit.migration.sync_state_info
'''

EXAMPLES = r'''
- name: Record a cycle
  migratekit.migration.sync_history:
    state_file: /var/lib/migratekit/state/app01.json
    record:
      cycle: incremental_sync
      started: '2026-12-02T01:00:00Z'
      finished: '2026-12-02T01:02:10Z'
      snapshot_at: '2026-12-02T01:00:05Z'
      disks:
        - key: 2000
          sync_type: incremental
          changed_bytes: 1048576
          bytes_moved: 1048576
          duration: 0.8
          change_id: 52 ab .../8
'''

RETURN = r'''
history_file:
  description: The history file.
  returned: always
  type: str
  sample: /var/lib/migratekit/state/app01.history.json
record:
  description: The record as stored, with its derived C(duration), C(downtime_seconds) and C(seq).
  returned: always
  type: dict
cycles:
  description: How many records the file holds now.
  returned: outside check mode
  type: int
  sample: 12
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.sync_history import (
    HISTORY_SPEC,
    LIBRARIES,
    sync_history_module,
)


def main():
    run_module('sync_history', HISTORY_SPEC, sync_history_module, LIBRARIES)


if __name__ == '__main__':
    main()
