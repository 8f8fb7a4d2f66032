#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: vma_progress
short_description: Post a migration progress update to the migration appliance (VMA)
version_added: 0.1.0
description:
  - Posts one progress update (stage, status, byte counts, percent, throughput) for a job to the
    VMA's progress API (C(POST {vma_url}/api/v1/progress/{job_id}/update)), in the body the VMA's
    own MigrateKit client sends.
  - The VMA creates the job on its first update.
  - With O(disk_id), the VMA keeps that disk's numbers (it adds the disk on first sight, taking
    O(total_bytes) as its planned bytes) and recomputes the job's totals from its disks. Without
    O(disk_id), the update sets the job's totals directly (byte counts of V(0) leave them as they are).
  - The VMA's poller ends a job on the first O(status=completed) or O(status=failed) it sees,
    whatever the disk. Send V(completed) once, for the whole VM (without O(disk_id)), when the
    job is done.
  - Reporting is best effort by default; a VMA that cannot be reached or answers an error gives a
    warning, not a failure, unless O(required=true).
  - The copy module reports progress during a copy by itself, per disk; this module is for the
    updates about the whole VM around it (V(Discover), then V(Complete) with O(status=completed),
    or O(status=failed)).
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
      - In check mode nothing is posted; the result shows the update that would be sent.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run posts the update again and reports C(changed=true).
options:
  stage:
    description:
      - Stage of the migration the update is about, in the order V(Discover), V(Creating Snapshot),
        V(Transfer), V(Complete). The VMA shows it as the job's phase.
    type: str
    required: true
    choices: [Discover, Creating Snapshot, Transfer, Complete]
  status:
    description:
      - Status of the job, sent as given. The VMA's poller sees a job as ended only on V(completed)
        or V(failed).
      - V(Queued) and V(Running) (sent as V(in_progress)), V(Completed) (sent as V(completed)) and
        V(Failed) (sent as V(failed)) are deprecated and will be removed in version 1.0.0 of the
        collection; they give a deprecation warning.
    type: str
    required: true
    choices: [in_progress, completed, failed, Completed, Failed, Queued, Running]
  disk_id:
    description:
      - The disk the update is about, for example V(disk-2000) (the vSphere device key).
      - A bare device key such as V(2000) is sent as V(disk-2000).
      - Omit it for an update about the whole job (the VM); give it for a disk's copy progress.
    type: str
  bytes_transferred:
    description:
      - Bytes copied so far. A non-negative integer.
    type: int
  total_bytes:
    description:
      - Bytes to copy in total. A non-negative integer.
      - With O(disk_id), the disk's planned bytes; without, the whole job's.
    type: int
  percent:
    description:
      - Progress in percent, from V(0) to V(100).
      - If omitted and both O(bytes_transferred) and O(total_bytes) are given (and O(total_bytes) is
        not zero), it is computed from them.
    type: float
  throughput_bps:
    description:
      - Throughput in bytes per second, counting bytes actually moved (not holes skipped).
    type: int
  sync_type:
    description:
      - Whether the cycle is a full or an incremental copy.
    type: str
    choices: [full, incremental]
  msg:
    description:
      - The reason of a failure, with O(status=failed).
      - Sent as the update's C(error_message) field (Ansible reserves the option name C(message)),
        cut to 1024 characters.
      - The VMA has no field for a message on other updates; with another status it is not sent
        and the task warns about it.
    type: str
  required:
    description:
      - If V(false), a VMA that cannot be reached or answers an error results in a warning and
        C(posted=false); the task does not fail.
      - If V(true), the task fails in that case.
      - Invalid arguments fail the task either way.
    type: bool
    default: false
seealso:
  - module: migratekit.migration.vma_progress_info
'''

EXAMPLES = r'''
- name: Report that discovery has started
  migratekit.migration.vma_progress:
    vma_url: https://vma.example.com:8081
    job_id: "{{ migration_job_id }}"
    token: "{{ vma_token }}"
    stage: Discover
    status: in_progress

- name: Report the end of a VM's incremental sync (job id from MIGRATEKIT_PROGRESS_JOB_ID)
  migratekit.migration.vma_progress:
    vma_url: "{{ vma_url }}"
    stage: Complete
    status: completed
    sync_type: incremental
    bytes_transferred: 262144
    total_bytes: 262144
    percent: 100

- name: Report a failure, and fail if the VMA does not get it
  migratekit.migration.vma_progress:
    vma_url: "{{ vma_url }}"
    job_id: "{{ migration_job_id }}"
    stage: Transfer
    status: failed
    msg: "{{ ansible_failed_result.msg | default('copy failed') }}"
    required: true
'''

RETURN = r'''
posted:
  description: Whether the VMA accepted the update.
  returned: always
  type: bool
  sample: true
url:
  description: The URL the update is posted to (job id percent-quoted, without credentials).
  returned: always
  type: str
  sample: https://vma.example.com:8081/api/v1/progress/job-42/update
job_id:
  description: The job id used (from O(job_id) or E(MIGRATEKIT_PROGRESS_JOB_ID)).
  returned: always
  type: str
  sample: job-42
update:
  description: The JSON body posted (or, in check mode or on a best-effort failure, that would have been posted).
  returned: always
  type: dict
  sample:
    stage: Complete
    status: completed
    sync_type: incremental
    bytes_transferred: 262144
    total_bytes: 262144
    percent: 100.0
response:
  description: The VMA's JSON answer (the first update of a job also says C(auto_initialized=true)).
  returned: when posted
  type: dict
  sample:
    status: success
    job_id: job-42
error:
  description: Why the update was not posted, when O(required=false) and the VMA could not be reached or answered an error.
  returned: when the VMA failed and O(required=false)
  type: str
  sample: "Cannot post the progress update for job 'job-42' at https://vma.example.com:8081/api/v1/progress/job-42/update: HTTP 503"
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.vma import LIBRARIES, PROGRESS_SPEC, post_progress


def main():
    run_module('vma_progress', PROGRESS_SPEC, post_progress, LIBRARIES)


if __name__ == '__main__':
    main()
