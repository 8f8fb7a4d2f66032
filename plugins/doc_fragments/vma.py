# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):

    # Options to reach the VMA's progress API (migratekit.migration.vma), all
    # but vma_url: add migratekit.migration.vma.api (vma_url required, for the
    # modules that call the API) or migratekit.migration.vma.reporting
    # (vma_url optional, for modules that report progress if asked to). The
    # argument spec is vma_argument_spec() in plugins/module_utils/vma.py
    # (vma_url_required=False with the reporting fragment).
    DOCUMENTATION = r'''
options:
  job_id:
    description:
      - The VMA job the progress belongs to.
      - If not set, the value of the E(MIGRATEKIT_PROGRESS_JOB_ID) environment variable on the host
        that runs the module is used. One of the two is required when O(vma_url) is set.
      - Any characters are allowed (the id is percent-quoted in the URL), except control characters;
        V(.) and V(..) are refused.
    type: str
  token:
    description:
      - Bearer token sent in the C(Authorization) header, if the VMA requires one.
      - Never logged nor returned.
    type: str
  validate_certs:
    description:
      - Whether to validate the VMA's TLS certificate when O(vma_url) is C(https://).
      - Turn it off only for lab or self-signed setups.
    type: bool
    default: true
'''

    # vma_url for the modules that call the VMA's progress API (migratekit.migration.vma.api).
    API = r'''
options:
  vma_url:
    description:
      - Base URL of the migration appliance (VMA), for example V(https://vma.example.com:8081).
      - The collection adds the API path (C(/api/v1/progress/...)) to it.
    type: str
    required: true
notes:
  - Requests time out after 3 seconds (connect) and 5 seconds (answer); a request that gets no
    answer or a 429/5xx answer is tried up to 3 times in all.
  - See the collection's C(docs/vma-progress-api.md) for the API.
requirements:
  - requests
'''

    # vma_url for modules that report progress only if asked to (migratekit.migration.vma.reporting).
    REPORTING = r'''
options:
  vma_url:
    description:
      - Base URL of the migration appliance (VMA) to report progress to, for example
        V(https://vma.example.com:8081).
      - If not set, no progress is reported.
      - Reporting is best effort; a VMA that is down, slow or erroring never fails nor slows
        the task, it results in a warning.
    type: str
'''

    # Attribute descriptions (migratekit.migration.vma.attributes); each
    # module sets support/details itself.
    ATTRIBUTES = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row with the same arguments, the second run reports no change and
        changes nothing (C(changed=false)).
'''
