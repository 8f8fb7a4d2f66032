#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: vma_progress_info
short_description: Read a migration job's progress from the migration appliance (VMA)
version_added: 0.1.0
description:
  - Reads the aggregated progress of a job from the VMA's progress API
    (C(GET {vma_url}/api/v1/progress/{job_id})), for playbooks that display it or wait on it.
  - The result says whether the VMA's poller would see the job as ended (RV(finished)).
  - A job the VMA does not know is not an error; the result has RV(found=false).
author:
  - migratekit.migration contributors (@migratekit)
extends_documentation_fragment:
  - migratekit.migration.vma
  - migratekit.migration.vma.api
  - migratekit.migration.vma.attributes
attributes:
  check_mode:
    support: full
    details:
      - This module only reads; it runs normally in check mode.
  diff_mode:
    support: N/A
    details:
      - This module does not change anything.
  idempotent:
    support: full
options: {}
seealso:
  - module: migratekit.migration.vma_progress
'''

EXAMPLES = r'''
- name: Show a job's progress
  migratekit.migration.vma_progress_info:
    vma_url: https://vma.example.com:8081
    job_id: job-42
  register: job

- name: Print it
  ansible.builtin.debug:
    msg: "{{ job.progress.percentage | default('?') }} % ({{ job.progress.status | default('unknown') }})"
  when: job.found

- name: Wait until the job has ended, up to 1 hour (job id from MIGRATEKIT_PROGRESS_JOB_ID)
  migratekit.migration.vma_progress_info:
    vma_url: "{{ vma_url }}"
  register: job
  until: job.finished
  retries: 720
  delay: 5

- name: Fail if it failed
  ansible.builtin.assert:
    that: job.progress.status == 'completed'
'''

RETURN = r'''
found:
  description: Whether the VMA knows the job (false when it answered 404).
  returned: always
  type: bool
  sample: true
finished:
  description:
    - Whether the VMA's poller would see the job as ended, that is RV(progress.status) is V(completed)
      or V(failed), or RV(progress.phase) is V(completed) (compared case-sensitively, as the poller does).
    - False when RV(found=false).
  returned: always
  type: bool
  sample: false
progress:
  description:
    - The job as the VMA returns it, unchanged; empty when RV(found=false).
    - The VMA's own fields are described here; other VMA versions may add or leave out some.
  returned: always
  type: dict
  contains:
    job_id:
      description: The job id.
      type: str
    status:
      description: The last status posted, as it was sent (V(in_progress), V(completed), V(failed)).
      type: str
    phase:
      description: The last stage posted (V(Discover), V(Transfer), V(Complete)...).
      type: str
    sync_type:
      description: V(full) or V(incremental), from the last update that named one; empty before.
      type: str
    percentage:
      description: The job's progress in percent, C(bytes_transferred / total_bytes) over its disks.
      type: float
    current_operation:
      description: What the VMA derives from the phase (V(Discovering VM), V(Transferring Data)...).
      type: str
    bytes_transferred:
      description: Bytes done, the sum over the disks (or as the last update without a disk set it).
      type: int
    total_bytes:
      description: Bytes planned, the sum over the disks (or as the last update without a disk set it).
      type: int
    throughput:
      description: C(current_mbps), C(average_mbps), C(peak_mbps) (MiB/s, all the current sum over the disks) and C(last_update).
      type: dict
    timing:
      description: C(start_time), C(last_update), C(elapsed_ms), C(phase_start), C(phase_elapsed_ms) and C(eta_seconds).
      type: dict
    vm_info:
      description: C(name), C(path), C(disk_size_gb), C(disk_size_bytes), C(cbt_enabled).
      type: dict
    phases:
      description: The current phase (C(name), C(status), C(start_time), C(end_time), C(duration_ms)).
      type: list
      elements: dict
    errors:
      description: Errors the VMA recorded (the seed's VMA always answers an empty list).
      type: list
      elements: raw
    last_error:
      description: The last error the VMA recorded (null with the seed's VMA).
      type: raw
    disk_progresses:
      description:
        - One entry per disk the job's updates named (absent before the first one) - C(disk_id),
          C(label), C(bytes_transferred), C(total_bytes) (the disk's planned bytes), C(percent),
          C(throughput_mbps) and C(status).
      type: list
      elements: dict
  sample:
    job_id: job-42
    status: in_progress
    sync_type: incremental
    phase: Transfer
    percentage: 42.5
    current_operation: Transferring Data
    bytes_transferred: 28521267
    total_bytes: 67108864
    throughput: {current_mbps: 100.0, average_mbps: 100.0, peak_mbps: 100.0, last_update: "2026-01-05T10:00:12Z"}
    timing: {start_time: "2026-01-05T10:00:00Z", last_update: "2026-01-05T10:00:12Z", elapsed_ms: 12000,
             phase_start: "2026-01-05T10:00:00Z", phase_elapsed_ms: 12000, eta_seconds: 0}
    disk_progresses:
      - {disk_id: disk-2000, label: "Disk disk-2000", bytes_transferred: 28521267, total_bytes: 67108864,
         percent: 42.5, throughput_mbps: 100.0, status: Streaming}
url:
  description: The URL read (job id percent-quoted, without credentials).
  returned: always
  type: str
  sample: https://vma.example.com:8081/api/v1/progress/job-42
job_id:
  description: The job id used (from O(job_id) or E(MIGRATEKIT_PROGRESS_JOB_ID)).
  returned: always
  type: str
  sample: job-42
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.vma import LIBRARIES, PROGRESS_INFO_SPEC, read_progress


def main():
    run_module('vma_progress_info', PROGRESS_INFO_SPEC, read_progress, LIBRARIES)


if __name__ == '__main__':
    main()
