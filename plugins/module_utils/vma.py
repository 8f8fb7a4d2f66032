# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client for the migration appliance's (VMA's) progress API.

``POST {vma_url}/api/v1/progress/{job_id}/update`` records one update,
``GET {vma_url}/api/v1/progress/{job_id}`` returns the aggregated job (see
docs/vma-progress-api.md).

* :class:`VmaClient` posts one update or reads a job: one HTTP session, short
  timeouts, bounded retries with backoff, optional bearer token.
* :class:`ProgressReporter` reports a copy's progress in the background, best
  effort: :meth:`~ProgressReporter.update` only stores the newest numbers, a
  daemon thread sends the newest state every ``interval`` seconds and at start
  and finish, failures become a few warnings and never fail or slow the copy.

Importable without Ansible running; ``requests`` is optional at import time
(``HAS_REQUESTS``). The token is kept only in the session's headers: it is
never logged, never part of an error message or a result.
"""

from __future__ import (absolute_import, division, print_function)

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._vma.options import PROGRESS_INFO_SPEC, REPORTING_SPEC
from ansible_collections.migratekit.migration.plugins.module_utils._vma.client import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    HAS_REQUESTS,
    MAX_BACKOFF,
    REQUESTS_IMPORT_ERROR,
    RETRY_STATUS_CODES,
    VmaClient,
    describe_exception,
)
from ansible_collections.migratekit.migration.plugins.module_utils._vma.reporter import (
    DEFAULT_FINISH_TIMEOUT,
    DEFAULT_INTERVAL,
    FINAL_ATTEMPTS,
    FINAL_RETRY_DELAY,
    SLOW_AFTER,
    UNHEALTHY_GRACE,
    ProgressReporter,
)
from ansible_collections.migratekit.migration.plugins.module_utils._vma.wire import (
    API_PREFIX,
    JOB_ID_ENV,
    MAX_JOB_ID_LENGTH,
    MAX_MESSAGE_LENGTH,
    STAGES,
    STATUS_ALIASES,
    STATUS_ALIASES_REMOVED_IN,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_IN_PROGRESS,
    STATUSES,
    SYNC_TYPES,
    USER_AGENT,
    VmaError,
    VmaHTTPError,
    VmaNotFoundError,
    VmaRequestError,
    VmaResponseError,
    VmaUnreachableError,
    VmaValidationError,
    build_update,
    compute_percent,
    normalize_disk_id,
    progress_url,
    redact_url,
    resolve_job_id,
    update_url,
    validate_choice,
    validate_count,
    validate_job_id,
    validate_percent,
    validate_token,
    validate_vma_url,
    wire_status,
)

# The names other code uses from here, the parts in _vma included.
__all__ = [
    'API_PREFIX', 'DEFAULT_BACKOFF', 'DEFAULT_FINISH_TIMEOUT', 'DEFAULT_INTERVAL', 'DEFAULT_RETRIES',
    'DEFAULT_TIMEOUT', 'FINAL_ATTEMPTS', 'FINAL_RETRY_DELAY', 'HAS_REQUESTS', 'JOB_ID_ENV', 'LIBRARIES',
    'MAX_BACKOFF', 'MAX_JOB_ID_LENGTH', 'MAX_MESSAGE_LENGTH', 'PROGRESS_INFO_SPEC', 'PROGRESS_SPEC',
    'REPORTING_SPEC', 'REQUESTS_IMPORT_ERROR', 'RETRY_STATUS_CODES', 'SLOW_AFTER', 'STAGES', 'STATUSES',
    'STATUS_ALIASES', 'STATUS_ALIASES_REMOVED_IN', 'STATUS_COMPLETED', 'STATUS_FAILED', 'STATUS_IN_PROGRESS',
    'SYNC_TYPES', 'UNHEALTHY_GRACE', 'USER_AGENT', 'ProgressReporter', 'VmaClient', 'VmaError', 'VmaHTTPError',
    'VmaNotFoundError', 'VmaRequestError', 'VmaResponseError', 'VmaUnreachableError', 'VmaValidationError',
    'build_update', 'compute_percent', 'describe_exception', 'error_message', 'normalize_disk_id',
    'job_finished', 'post_progress', 'progress_url', 'read_progress', 'redact_url', 'resolve_job_id',
    'update_url', 'validate_choice', 'validate_count', 'validate_job_id', 'validate_percent', 'validate_token',
    'validate_vma_url', 'wire_status',
]

COLLECTION = 'migratekit.migration'

# What a module talking to the VMA needs besides Ansible.
LIBRARIES = (('requests', REQUESTS_IMPORT_ERROR),)


# The options of the vma_progress module.
PROGRESS_SPEC = PROGRESS_INFO_SPEC.merge(ArgumentSpec(dict(
    stage=dict(type='str', required=True, choices=list(STAGES)),
    status=dict(type='str', required=True, choices=list(STATUSES) + sorted(STATUS_ALIASES)),
    disk_id=dict(type='str'),
    bytes_transferred=dict(type='int'),
    total_bytes=dict(type='int'),
    percent=dict(type='float'),
    throughput_bps=dict(type='int'),
    sync_type=dict(type='str', choices=list(SYNC_TYPES)),
    msg=dict(type='str'),
    required=dict(type='bool', default=False),
)))


def located(operation, exc, job_id=None):
    """``exc`` naming ``operation`` and the job (a request error already names both); return it."""
    if isinstance(exc, VmaRequestError):
        return exc
    subject = None
    if job_id and not (isinstance(exc, VmaValidationError) and exc.field == 'job_id'):
        subject = 'for job %r' % (job_id,)
    return exc.located(operation, subject)


def error_message(operation, exc, job_id=None):
    """The one failure message of a module: names the operation, the job and the cause."""
    return str(located(operation, exc, job_id))


def _status_notices(options):
    """Deprecations and warnings about ``status`` and ``msg`` (nothing of it fails the task)."""
    deprecations, warnings = [], []
    if options.status in STATUS_ALIASES:
        deprecations.append(dict(
            msg='status=%s is deprecated: use status=%s, the value the VMA expects (the update is sent with %s)'
                % (options.status, STATUS_ALIASES[options.status], STATUS_ALIASES[options.status]),
            version=STATUS_ALIASES_REMOVED_IN, collection_name=COLLECTION))
    if options.msg is not None and options.status in STATUSES + tuple(STATUS_ALIASES) \
            and wire_status(options.status) != STATUS_FAILED:
        warnings.append('msg is not sent: the VMA takes a message only as the error_message of an update with '
                        'status=failed')
    return deprecations, warnings


def post_progress(options, check_mode=False, client_factory=None):
    """What ``migratekit.migration.vma_progress`` does (:data:`PROGRESS_SPEC`); returns its result dict.

    Bad input raises VmaValidationError. A VMA that cannot be reached or
    answers an error raises VmaRequestError when ``options.required``, and
    otherwise gives a result with ``posted=False``, ``error`` and a warning
    (in ``result['warnings']``). A deprecated status name (``Running``...)
    is sent as its wire value, with a notice in ``result['deprecations']``
    (which AnsibleModule shows as a deprecation warning).
    """
    operation = 'post a progress update to the VMA'
    job_id = options.job_id
    try:
        job_id = validate_job_id(resolve_job_id(options.job_id))
        url = redact_url(update_url(options.vma_url, job_id))
        body = build_update(options.stage, options.status, bytes_transferred=options.bytes_transferred,
                            total_bytes=options.total_bytes, throughput_bps=options.throughput_bps,
                            percent=options.percent, disk_id=options.disk_id, sync_type=options.sync_type,
                            message=options.msg)
    except VmaError as exc:
        raise located(operation, exc, job_id)
    deprecations, warnings = _status_notices(options)
    result = dict(changed=False, posted=False, url=url, update=body, job_id=job_id, warnings=warnings)
    if deprecations:
        result['deprecations'] = deprecations
    if check_mode:
        result['changed'] = True
        return result
    client = (client_factory or VmaClient)(options.vma_url, token=options.token,
                                           validate_certs=options.validate_certs)
    try:
        result['response'] = client.post_payload(job_id, body)
    except VmaRequestError as exc:
        if options.required:
            raise
        result['error'] = str(exc)
        result['warnings'].append('%s (ignored: required=false; the VMA progress is best effort)' % exc)
        return result
    finally:
        client.close()
    result['changed'] = result['posted'] = True
    return result


def job_finished(progress):
    """Whether the appliance's poller would stop at this answer: phase ``completed``, status ``completed``/``failed``.

    Case-sensitive, as the seed's poller (oma/services/vma_progress_poller.go) compares them.
    """
    if not isinstance(progress, dict):
        return False
    return progress.get('phase') == STATUS_COMPLETED or progress.get('status') in (STATUS_COMPLETED, STATUS_FAILED)


def read_progress(options, check_mode=False, client_factory=None):  # pylint: disable=unused-argument
    """What ``migratekit.migration.vma_progress_info`` does (:data:`PROGRESS_INFO_SPEC`); returns its result.

    ``progress`` is the VMA's answer as it is; ``finished`` whether the
    appliance's poller would see the job as ended (:func:`job_finished`).
    An unknown job gives ``found=False``; other failures raise VmaRequestError.
    Reading changes nothing, so check mode reads too.
    """
    job_id = options.job_id
    try:
        job_id = validate_job_id(resolve_job_id(options.job_id))
        url = redact_url(progress_url(options.vma_url, job_id))
        client = (client_factory or VmaClient)(options.vma_url, token=options.token,
                                               validate_certs=options.validate_certs)
    except VmaError as exc:
        raise located('read the progress from the VMA', exc, job_id)
    try:
        progress = client.get_progress(job_id)
        found = True
    except VmaNotFoundError:
        progress, found = {}, False
    finally:
        client.close()
    return dict(changed=False, found=found, finished=job_finished(progress), progress=progress, url=url,
                job_id=job_id)
