# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One HTTP session to a VMA: :class:`VmaClient` (timeouts, bounded retries, bearer token) and its error texts."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re
import time
import traceback

from ansible_collections.migratekit.migration.plugins.module_utils._vma.wire import (
    USER_AGENT,
    VmaError,
    VmaHTTPError,
    VmaNotFoundError,
    VmaRequestError,
    VmaResponseError,
    VmaUnreachableError,
    VmaValidationError,
    _is_int,
    build_update,
    progress_url,
    redact_url,
    update_url,
    validate_token,
    validate_vma_url,
)

try:
    import requests
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None


DEFAULT_TIMEOUT = (3.0, 5.0)        # (connect, read) seconds
DEFAULT_RETRIES = 2                 # extra attempts of one request (VmaClient)
DEFAULT_BACKOFF = 0.5               # first retry delay; doubles, capped
MAX_BACKOFF = 2.0
RETRY_STATUS_CODES = frozenset((429, 500, 502, 503, 504))

_ERRNO_RE = re.compile(r'\[Errno -?\d+\] [^"\')\]]+')
_CONN_PREFIX_RE = re.compile(r'^<?\w*Connection(?:Pool)?\([^)]*\)(?: object)?(?: at 0x[0-9a-fA-F]+)?>?: ')


def _short(text, limit=200):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def describe_exception(exc):
    """A short, secret-free reason for a requests exception."""
    if isinstance(exc, VmaRequestError):
        return exc.reason
    if HAS_REQUESTS:
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return 'connection timed out'
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return 'no answer in time (read timeout)'
        if isinstance(exc, requests.exceptions.SSLError):
            return 'TLS error (%s)' % _short(_innermost(exc), 160)
        if isinstance(exc, requests.exceptions.ConnectionError):
            return 'connection failed (%s)' % _short(_innermost(exc), 160)
    return '%s: %s' % (type(exc).__name__, _short(exc))


def _innermost(exc):
    text = str(exc)
    match = _ERRNO_RE.search(text)
    if match:
        return match.group(0).strip()
    arg = exc.args[0] if exc.args else None
    reason = getattr(arg, 'reason', None)
    if reason is not None:
        text = str(reason)
    elif arg is not None:
        text = str(arg)
        if isinstance(arg, tuple) and len(arg) == 2:  # ('Connection aborted.', RemoteDisconnected(...))
            text = '%s %s' % (arg[0], arg[1])
    return _CONN_PREFIX_RE.sub('', text)


def _error_details(response):
    """The VMA's error text: ``{"error": ..., "details": ...}`` or a plain-text body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ('error' in body or 'details' in body):
        parts = [str(body[k]) for k in ('error', 'details') if body.get(k)]
        return _short(': '.join(parts)) or None
    text = (response.text or '').strip()
    return _short(text) if text else None


class VmaClient(object):
    """One HTTP session to a VMA.

    ``timeout`` is ``(connect, read)`` seconds. A request that cannot connect
    or is cut off, or gets an answer 429/500/502/503/504, is tried again up
    to ``retries`` times with exponential backoff starting at ``backoff``
    seconds (posting an update is idempotent: it carries a state, not a
    delta). A read timeout is not retried (the VMA got the request and is
    stalled: a stalled VMA costs one read timeout, not three). ``session``
    and ``sleep`` are injectable for tests.
    """

    def __init__(self, vma_url, token=None, validate_certs=True, timeout=DEFAULT_TIMEOUT,
                 retries=DEFAULT_RETRIES, backoff=DEFAULT_BACKOFF, session=None, sleep=time.sleep):
        self.base_url = validate_vma_url(vma_url)
        self.display_url = redact_url(self.base_url)
        token = validate_token(token)
        if not _is_int(retries) or retries < 0:
            raise VmaValidationError('retries', 'a non-negative integer', retries)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        if session is None:
            if not HAS_REQUESTS:
                raise VmaError('the Python library "requests" is required to talk to the VMA')
            session = requests.Session()
        self._session = session
        self._session.verify = bool(validate_certs)
        self._session.headers.update({'Accept': 'application/json', 'User-Agent': USER_AGENT})
        if token:
            self._session.headers['Authorization'] = 'Bearer ' + token

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, self.display_url)

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def update_url(self, job_id):
        return update_url(self.base_url, job_id)

    def progress_url(self, job_id):
        return progress_url(self.base_url, job_id)

    def post_update(self, job_id, stage, status, bytes_transferred=None, total_bytes=None,
                    throughput_bps=None, percent=None, disk_id=None, sync_type=None, message=None):
        """Validate and post one update; return the VMA's JSON answer (a dict, maybe empty)."""
        body = build_update(stage, status, bytes_transferred=bytes_transferred, total_bytes=total_bytes,
                            throughput_bps=throughput_bps, percent=percent, disk_id=disk_id,
                            sync_type=sync_type, message=message)
        return self.post_payload(job_id, body)

    def post_payload(self, job_id, body, retries=None):
        """Post an already built update body (see :func:`build_update`)."""
        url = self.update_url(job_id)
        operation = 'post the progress update for job %r%s' % (
            job_id, ' (%s)' % body['disk_id'] if body.get('disk_id') else '')
        response = self._request('POST', url, operation, body, retries)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) else {}

    def get_progress(self, job_id):
        """Return the job's aggregated progress (a dict). Raises VmaNotFoundError for an unknown job."""
        url = self.progress_url(job_id)
        operation = 'read the progress of job %r' % (job_id,)
        response = self._request('GET', url, operation, None, None)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise VmaResponseError(operation, redact_url(url), 'the answer is not a JSON object',
                                   status_code=response.status_code)
        return answer

    def _request(self, method, url, operation, body, retries):
        retries = self.retries if retries is None else retries
        shown_url = redact_url(url)
        attempt = 0
        while True:
            try:
                response = self._session.request(method, url, json=body, timeout=self.timeout)
            except Exception as exc:  # requests' exceptions, or anything a custom session raises
                error = VmaUnreachableError(operation, shown_url, describe_exception(exc))
                if HAS_REQUESTS and isinstance(exc, requests.exceptions.ReadTimeout):
                    raise error  # a VMA that took the request and did not answer: asking again would wait again
            else:
                code = response.status_code
                if 200 <= code < 300:
                    return response
                details = _error_details(response)
                reason = 'HTTP %d%s' % (code, ': %s' % details if details else '')
                cls = VmaNotFoundError if code == 404 else VmaHTTPError
                error = cls(operation, shown_url, reason, status_code=code, details=details)
                if code not in RETRY_STATUS_CODES:
                    raise error
            if attempt >= retries:
                raise error
            self._sleep(min(MAX_BACKOFF, self.backoff * (2 ** attempt)))
            attempt += 1
