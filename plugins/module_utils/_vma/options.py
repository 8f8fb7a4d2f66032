# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMA options every module that talks to the VMA shares (the ``migratekit.migration.vma`` doc fragment).

Kept apart from the client so that declaring them imports neither
``requests`` nor AnsibleModule: the copy engine declares them without paying
for either unless it reports progress.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.module_utils.common.parameters import env_fallback

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._vma.wire import JOB_ID_ENV


def _vma_options(vma_url_required):
    return dict(
        vma_url=dict(type='str', required=vma_url_required),
        job_id=dict(type='str', fallback=(env_fallback, [JOB_ID_ENV])),
        token=dict(type='str', no_log=True),
        validate_certs=dict(type='bool', default=True),
    )


# vma_url required (``vma.api``: the modules that call the API) or optional
# (``vma.reporting``: modules that report progress when asked to).
PROGRESS_INFO_SPEC = ArgumentSpec(_vma_options(vma_url_required=True))
REPORTING_SPEC = ArgumentSpec(_vma_options(vma_url_required=False))
