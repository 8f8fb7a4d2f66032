#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: vma_progress_info
short_description: Read a migration job's progress from the migration appliance (VMA)
description:
  - Reads the aggregated progress of a job from the VMA's progress API
    (C(GET {vma_url}/api/v1/progress/{job_id})), for playbooks that display it or wait on it.
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

- name: Wait until the VMA has the job, up to 5 minutes (job id from MIGRATEKIT_PROGRESS_JOB_ID)
  migratekit.migration.vma_progress_info:
    vma_url: "{{ vma_url }}"
  register: job
  until: job.found
  retries: 60
  delay: 5
'''

RETURN = r'''
found:
  description: Whether the VMA knows the job (false when it answered 404).
  returned: always
  type: bool
  sample: true
progress:
  description:
    - The job's aggregated progress as the VMA returns it (its fields depend on the VMA version);
      empty when RV(found=false).
  returned: always
  type: dict
  sample:
    job_id: job-42
    status: Running
    sync_type: incremental
    phase: Transfer
    percentage: 42.5
    bytes_transferred: 28521267
    total_bytes: 67108864
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
