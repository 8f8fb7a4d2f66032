# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMA progress API on the wire: its values, its errors, validation, URLs, update bodies.

Pure (no HTTP): what may be sent and how it is spelled; :mod:`.client` sends
it, :mod:`.reporter` reports a copy through it. The body is the one the
seed's own client sends (MigrateKit v2.7 ``internal/progress/vma_client.go``,
``VMAProgressUpdate``); docs/vma-progress-api.md names the sources.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import math
import os
from urllib.parse import quote, urlsplit, urlunsplit

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

# The seed's progression Discover -> Transfer -> Complete, and its finer
# "Creating Snapshot" (sent around the snapshot by the seed's copier).
STAGES = ('Discover', 'Creating Snapshot', 'Transfer', 'Complete')
# On the wire, lowercase as the seed's client sends them; the appliance's
# poller ends a job on "completed" or "failed" only (case-sensitive).
STATUS_IN_PROGRESS = 'in_progress'
STATUS_COMPLETED = 'completed'
STATUS_FAILED = 'failed'
STATUSES = (STATUS_IN_PROGRESS, STATUS_COMPLETED, STATUS_FAILED)
# The names of 0.1.0, still accepted (deprecated) until 1.0.0. The seed's
# client has no queued state (it sends in_progress from its first update on):
# Queued, like Running, is a job that has not ended.
STATUS_ALIASES = {
    'Queued': STATUS_IN_PROGRESS,
    'Running': STATUS_IN_PROGRESS,
    'Completed': STATUS_COMPLETED,
    'Failed': STATUS_FAILED,
}
STATUS_ALIASES_REMOVED_IN = '1.0.0'
SYNC_TYPES = ('full', 'incremental')

JOB_ID_ENV = 'MIGRATEKIT_PROGRESS_JOB_ID'
API_PREFIX = '/api/v1/progress/'
MAX_JOB_ID_LENGTH = 256
MAX_MESSAGE_LENGTH = 1024
USER_AGENT = 'migratekit.migration-vma-client'

_MISSING = object()


# ---------------------------------------------------------------- errors

class VmaError(MigratekitError):
    """Base class of every error of the VMA client."""

    phrase = 'Cannot {operation}{subject}: {message}'


class VmaValidationError(VmaError, ValueError):
    """An argument is invalid; ``field`` names it, ``expected`` says what is allowed."""

    def __init__(self, field, expected, value=_MISSING):
        self.field = field
        self.expected = expected
        self.value = None if value is _MISSING else value
        msg = 'invalid %s: expected %s' % (field, expected)
        if value is not _MISSING:
            msg += ', got %r' % (value,)
        super(VmaValidationError, self).__init__(msg)


class VmaRequestError(VmaError):
    """A request to the VMA failed.

    ``operation`` names what was attempted and on which object (job, disk),
    ``url`` is the request URL without credentials, ``reason`` a short cause,
    ``status_code`` the HTTP status (None when no answer came back) and
    ``vma_error`` the VMA's own error text, if any (both also in ``details``,
    the fields of a module's failure result).
    """

    def __init__(self, operation, url, reason, status_code=None, details=None):
        fields = dict((key, value) for key, value in (('status_code', status_code), ('vma_error', details))
                      if value is not None)
        super(VmaRequestError, self).__init__(reason, operation=operation, subject='at %s' % url, details=fields)
        self.url = url
        self.reason = reason
        self.status_code = status_code
        self.vma_error = details


class VmaUnreachableError(VmaRequestError):
    """No HTTP answer: connection refused or reset, timeout, TLS failure."""


class VmaHTTPError(VmaRequestError):
    """The VMA answered with an HTTP error status."""


class VmaNotFoundError(VmaHTTPError):
    """The VMA answered 404 (for a GET: the job does not exist)."""


class VmaResponseError(VmaRequestError):
    """The VMA answered 2xx with a body that cannot be used."""

# ---------------------------------------------------------------- validation


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_job_id(job_id):
    """``job_id``, or the ``MIGRATEKIT_PROGRESS_JOB_ID`` environment variable when it is None/empty."""
    if job_id is None or job_id == '':
        return os.environ.get(JOB_ID_ENV) or None
    return job_id


def validate_job_id(job_id):
    """Return ``job_id`` if it can name a job in a URL path, else raise VmaValidationError.

    Any character is allowed (the id is percent-quoted in URLs), except that
    the id must be a non-empty string of at most 256 characters, without
    control characters, and not ``.`` or ``..`` (HTTP clients resolve those
    as path segments).
    """
    expected = ('a non-empty string (the job_id option or the %s environment variable), '
                'at most %d characters, no control characters, not "." or ".."'
                % (JOB_ID_ENV, MAX_JOB_ID_LENGTH))
    if job_id is None or job_id == '':
        raise VmaValidationError('job_id', expected)
    if not isinstance(job_id, str):
        raise VmaValidationError('job_id', expected, job_id)
    if (len(job_id) > MAX_JOB_ID_LENGTH or job_id in ('.', '..')
            or any(ord(c) < 32 or ord(c) == 127 for c in job_id)):
        raise VmaValidationError('job_id', expected, job_id)
    return job_id


def validate_vma_url(vma_url):
    """Return the base URL without a trailing slash; raise VmaValidationError if unusable."""
    expected = 'an http:// or https:// URL with a host, e.g. https://vma.example.com:8081, without query or fragment'
    if not isinstance(vma_url, str) or not vma_url.strip():
        raise VmaValidationError('vma_url', expected)
    vma_url = vma_url.strip()
    try:
        parts = urlsplit(vma_url)
        parts.port  # pylint: disable=pointless-statement  # raises ValueError on a bad port
    except ValueError:
        raise VmaValidationError('vma_url', expected, redact_url(vma_url))
    if parts.scheme not in ('http', 'https') or not parts.hostname or parts.query or parts.fragment:
        raise VmaValidationError('vma_url', expected, redact_url(vma_url))
    return vma_url.rstrip('/')


def validate_choice(field, value, choices):
    if value not in choices:
        raise VmaValidationError(field, 'one of %s' % ', '.join(choices), value)
    return value


def validate_count(field, value):
    """A byte count: a non-negative int."""
    if not _is_int(value) or value < 0:
        raise VmaValidationError(field, 'a non-negative integer (bytes)', value)
    return value


def validate_percent(value):
    """A percentage: a number from 0 to 100."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and math.isnan(value)) or not 0 <= value <= 100):
        raise VmaValidationError('percent', 'a number from 0 to 100', value)
    return float(value)


def validate_token(token):
    """Strip surrounding whitespace; refuse control characters (never shows the value)."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise VmaValidationError('token', 'a string')
    token = token.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in token):
        raise VmaValidationError('token', 'a string without control characters or line breaks')
    return token or None


def wire_status(status):
    """The wire value of ``status``: one of :data:`STATUSES`, or a deprecated alias of one."""
    if isinstance(status, str) and status in STATUS_ALIASES:
        return STATUS_ALIASES[status]
    return validate_choice('status', status, STATUSES)


def normalize_disk_id(disk_id):
    """``disk-<key>`` for a vSphere device key given as int or digits, else the string itself."""
    if disk_id is None or disk_id == '':
        return None
    if _is_int(disk_id):
        if disk_id < 0:
            raise VmaValidationError('disk_id', 'a disk id such as disk-2000 or a device key', disk_id)
        return 'disk-%d' % disk_id
    if not isinstance(disk_id, str):
        raise VmaValidationError('disk_id', 'a disk id such as disk-2000 or a device key', disk_id)
    if disk_id.isdigit():
        return 'disk-%s' % disk_id
    return disk_id


def compute_percent(bytes_transferred, total_bytes):
    """Percent done, floored to two decimals (so 100 only when everything is done)."""
    if not total_bytes:
        return 0.0
    percent = 100.0 * bytes_transferred / total_bytes
    return max(0.0, min(100.0, math.floor(percent * 100) / 100.0))


def build_update(stage, status, bytes_transferred=None, total_bytes=None, throughput_bps=None,
                 percent=None, disk_id=None, sync_type=None, message=None):
    """Validate one update and return its JSON body (a dict; None fields left out).

    ``status`` is sent as its wire value (a deprecated alias such as
    ``Running`` becomes ``in_progress``). ``percent`` is computed from the
    byte counts when omitted and both are given. ``message`` is the failure
    text: sent as ``error_message``, cut to 1024 characters, with status
    ``failed`` only (the appliance has no other free-text field).
    """
    body = {
        'stage': validate_choice('stage', stage, STAGES),
        'status': wire_status(status),
    }
    if bytes_transferred is not None:
        body['bytes_transferred'] = validate_count('bytes_transferred', bytes_transferred)
    if total_bytes is not None:
        body['total_bytes'] = validate_count('total_bytes', total_bytes)
    if throughput_bps is not None:
        body['throughput_bps'] = validate_count('throughput_bps', throughput_bps)
    if percent is not None:
        body['percent'] = validate_percent(percent)
    elif bytes_transferred is not None and total_bytes:
        body['percent'] = compute_percent(bytes_transferred, total_bytes)
    disk_id = normalize_disk_id(disk_id)
    if disk_id is not None:
        body['disk_id'] = disk_id
    if sync_type is not None:
        body['sync_type'] = validate_choice('sync_type', sync_type, SYNC_TYPES)
    if message is not None and body['status'] == STATUS_FAILED:
        if not isinstance(message, str):
            message = str(message)
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[:MAX_MESSAGE_LENGTH - 3] + '...'
        body['error_message'] = message
    return body


# ---------------------------------------------------------------- URLs

def redact_url(url):
    """The URL without user:password@ (for messages and results)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return '<invalid URL>'
    if '@' not in parts.netloc:
        return url
    netloc = parts.netloc.rsplit('@', 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def progress_url(vma_url, job_id):
    """``{vma_url}/api/v1/progress/{job_id}`` with the job id percent-quoted (no raw concatenation)."""
    return validate_vma_url(vma_url) + API_PREFIX + quote(validate_job_id(job_id), safe='')


def update_url(vma_url, job_id):
    """``{vma_url}/api/v1/progress/{job_id}/update`` with the job id percent-quoted."""
    return progress_url(vma_url, job_id) + '/update'
