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
__metaclass__ = type

import math
import os
import re
import threading
import time
import traceback
from urllib.parse import quote, urlsplit, urlunsplit

from ansible.module_utils.basic import env_fallback

try:
    import requests
except ImportError:
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None


STAGES = ('Discover', 'Transfer', 'Complete')
STATUSES = ('Queued', 'Running', 'Completed', 'Failed')
SYNC_TYPES = ('full', 'incremental')

JOB_ID_ENV = 'MIGRATEKIT_PROGRESS_JOB_ID'
API_PREFIX = '/api/v1/progress/'

DEFAULT_TIMEOUT = (3.0, 5.0)        # (connect, read) seconds
DEFAULT_RETRIES = 2                 # extra attempts of one request (VmaClient)
DEFAULT_BACKOFF = 0.5               # first retry delay; doubles, capped
MAX_BACKOFF = 2.0
DEFAULT_INTERVAL = 2.0              # ProgressReporter: seconds between updates
DEFAULT_FINISH_TIMEOUT = 5.0        # ProgressReporter.finish(): longest wait
FINAL_ATTEMPTS = 3                  # ProgressReporter: tries of the final update
FINAL_RETRY_DELAY = 0.5
SLOW_AFTER = 0.5                    # a send taking longer means the VMA is slow or stalled
UNHEALTHY_GRACE = 0.25              # finish() wait when the VMA is failing or stalled
RETRY_STATUS_CODES = frozenset((429, 500, 502, 503, 504))
MAX_JOB_ID_LENGTH = 256
MAX_MESSAGE_LENGTH = 1024
USER_AGENT = 'migratekit.migration-vma-client'

_MISSING = object()


# ---------------------------------------------------------------- errors

class VmaError(Exception):
    """Base class of every error raised by this module."""


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
    ``details`` the VMA's own error text, if any.
    """

    def __init__(self, operation, url, reason, status_code=None, details=None):
        self.operation = operation
        self.url = url
        self.reason = reason
        self.status_code = status_code
        self.details = details
        super(VmaRequestError, self).__init__(
            'Cannot %s at %s: %s' % (operation, url, reason))


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
        dummy = parts.port  # raises ValueError on a bad port
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

    ``percent`` is computed from the byte counts when omitted and both are
    given. ``message`` is cut to 1024 characters.
    """
    body = {
        'stage': validate_choice('stage', stage, STAGES),
        'status': validate_choice('status', status, STATUSES),
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
    if message is not None:
        if not isinstance(message, str):
            message = str(message)
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[:MAX_MESSAGE_LENGTH - 3] + '...'
        body['message'] = message
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


def vma_argument_spec(vma_url_required=True):
    """The shared options (documented in the ``migratekit.migration.vma`` doc fragment).

    ``vma_url`` is documented by ``migratekit.migration.vma.api`` (required);
    modules that report progress only optionally (e.g. a copy) pass
    ``vma_url_required=False`` and use ``migratekit.migration.vma.reporting``.
    """
    return dict(
        vma_url=dict(type='str', required=vma_url_required),
        job_id=dict(type='str', fallback=(env_fallback, [JOB_ID_ENV])),
        token=dict(type='str', no_log=True),
        validate_certs=dict(type='bool', default=True),
    )


# ---------------------------------------------------------------- client

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


# ---------------------------------------------------------------- reporter

class ProgressReporter(object):
    """Reports one disk's copy progress to the VMA in the background, best effort.

    ::

        reporter = ProgressReporter(vma_url, job_id, disk_id, sync_type, total_bytes,
                                    token=None, validate_certs=True, interval=2.0)
        reporter.start()                          # Transfer/Running at 0 %, starts the sender thread
        reporter.update(bytes_done, bytes_moved)  # cheap, never blocks; the newest state wins
        reporter.finish(ok=True, message=None)    # final 100 %/Completed (or Failed); bounded wait
        reporter.warnings                         # list of str, to return as module warnings

    With ``vma_url`` None (or empty) it does nothing. Nothing here raises: bad
    settings (job id, ``requests`` missing...) disable reporting with a
    warning; a modules that wants to fail on them first calls
    :func:`validate_job_id` / :func:`validate_vma_url`.

    ``bytes_done`` is how far the copy got (what ``percent`` is computed
    from); ``bytes_moved`` counts bytes actually read and written, not holes
    or zeros skipped: ``throughput_bps = bytes_moved / seconds since start``.
    Both are kept monotonic (a smaller value than one seen is ignored).

    A daemon thread sends the newest state at start, then at most every
    ``interval`` seconds while updates come in, and the final state right
    away. Updates are coalesced: while a send is in flight (a slow VMA) only
    the newest numbers are kept. A failed send is retried with the newest
    state after ``interval``; the final one up to 3 times. ``finish()`` waits
    at most ``finish_timeout`` seconds for the final send, and only about a
    quarter second when the VMA is failing or stalled.

    For tests: ``clock`` (a callable returning seconds, default
    ``time.monotonic``), ``sender`` (a callable taking the update body;
    raising means failure) and ``threaded=False`` (no thread: call
    :meth:`poll` to send what is due; :meth:`finish` sends synchronously).
    """

    def __init__(self, vma_url, job_id, disk_id, sync_type, total_bytes, token=None, validate_certs=True,
                 interval=DEFAULT_INTERVAL, finish_timeout=DEFAULT_FINISH_TIMEOUT, clock=None, sender=None,
                 threaded=True, timeout=DEFAULT_TIMEOUT):
        self._clock = clock or time.monotonic
        self._cond = threading.Condition(threading.Lock())
        self._threaded = threaded
        self._thread = None
        self._client = None
        self._sender = None
        self._setup_warnings = []
        self.enabled = False
        self.vma_url = None
        self.job_id = job_id
        self.disk_id = disk_id
        self.sync_type = sync_type
        self.total_bytes = total_bytes
        self.interval = interval
        self.finish_timeout = finish_timeout
        # state, guarded by _cond
        self._bytes_done = 0
        self._bytes_moved = 0
        self._stage = 'Transfer'
        self._status = 'Running'
        self._message = None
        self._start_time = None
        self._sample_time = None
        self._version = 0            # bumped by every state change
        self._delivered = 0          # newest version delivered (or given up on)
        self._attempted_at = None    # clock time of the last send attempt
        self._attempt_began = None   # time.monotonic() of the last send attempt
        self._consecutive_failures = 0
        self._sending = False
        self._started = False
        self._finishing = False
        self._final_version = None
        self._final_attempts = 0
        self._final_delivered = False
        self._invalid_updates = 0
        # statistics
        self.attempts = 0
        self.sent = 0
        self.failed = 0
        self._first_error = None
        self._last_error = None

        if vma_url is None or vma_url == '':
            return
        try:
            self.vma_url = redact_url(validate_vma_url(vma_url))
            self.job_id = validate_job_id(resolve_job_id(job_id))
            self.disk_id = normalize_disk_id(disk_id)
            if sync_type is not None:
                validate_choice('sync_type', sync_type, SYNC_TYPES)
            validate_count('total_bytes', total_bytes)
            if (isinstance(interval, bool) or not isinstance(interval, (int, float)) or math.isnan(interval)
                    or interval <= 0):
                raise VmaValidationError('interval', 'a positive number of seconds', interval)
            if sender is None:
                self._client = VmaClient(vma_url, token=token, validate_certs=validate_certs,
                                         timeout=timeout, retries=0)
                sender = self._post
            self._sender = sender
        except VmaError as exc:
            self._setup_warnings.append('Progress reporting to the VMA is disabled for %s: %s' % (self._what(), exc))
            return
        self.enabled = True

    def __repr__(self):
        return 'ProgressReporter(%r, job=%r, disk=%r)' % (self.vma_url, self.job_id, self.disk_id)

    def _what(self):
        what = 'job %r' % (self.job_id,)
        if self.disk_id:
            what += ' disk %s' % (self.disk_id,)
        return what

    def _post(self, body):
        self._client.post_payload(self.job_id, body)

    # -- the copy's side: start, update, finish -------------------------------

    def start(self):
        """Queue the Transfer/Running 0 % update and start the sender thread. Never blocks."""
        if not self.enabled:
            return
        with self._cond:
            self._start_locked()
        self._ensure_thread()

    def _start_locked(self):
        if self._started:
            return
        self._started = True
        self._start_time = self._sample_time = self._clock()
        self._version += 1
        self._cond.notify()

    def _ensure_thread(self):
        if self._threaded and self._thread is None:
            thread = threading.Thread(target=self._run, name='vma-progress-%s' % (self.disk_id or self.job_id))
            thread.daemon = True
            self._thread = thread
            thread.start()

    def update(self, bytes_done, bytes_moved=None):
        """Store the newest numbers (``bytes_moved`` defaults to ``bytes_done``). Never blocks, never raises."""
        if not self.enabled:
            return
        if bytes_moved is None:
            bytes_moved = bytes_done
        try:
            bytes_done = int(bytes_done)
            bytes_moved = int(bytes_moved)
        except (TypeError, ValueError):
            with self._cond:
                self._invalid_updates += 1
            return
        start = False
        with self._cond:
            if self._finishing:
                return
            if not self._started:
                self._start_locked()
                start = True
            if bytes_done > self._bytes_done:
                self._bytes_done = bytes_done
            if bytes_moved > self._bytes_moved:
                self._bytes_moved = bytes_moved
            self._sample_time = self._clock()
            idle = self._version == self._delivered
            self._version += 1
            if idle:
                self._cond.notify()
        if start:
            self._ensure_thread()

    def finish(self, ok=True, message=None):
        """Queue the final state and wait a bounded time for it to be sent. Never raises.

        ``ok=True``: Complete/Completed at 100 %. ``ok=False``: Transfer/Failed
        with ``message`` and the last numbers. Waits at most ``finish_timeout``
        seconds while the VMA answers; when it is failing or not answering
        (the last send failed, or one has been in flight for over 0.5 s) it
        returns once the final send failed or after 0.25 s: the copy is not
        held up by a broken VMA (the daemon thread keeps trying while the
        process lives).
        """
        if not self.enabled:
            return
        try:
            with self._cond:
                if self._finishing:
                    return
                self._start_locked()
                self._finishing = True
                if ok:
                    self._stage, self._status = 'Complete', 'Completed'
                    self._bytes_done = max(self._bytes_done, self.total_bytes)
                else:
                    self._status = 'Failed'
                self._message = message
                self._sample_time = self._clock()
                self._version += 1
                self._final_version = self._version
                self._cond.notify_all()
            if self._threaded:
                self._ensure_thread()
                self._wait_final()
            else:
                for dummy in range(FINAL_ATTEMPTS + 1):
                    if not self.poll(force=True):
                        break
        except Exception as exc:  # never let reporting fail the copy
            self._record_failure('finish: %s' % describe_exception(exc))

    def _wait_final(self):
        began = time.monotonic()
        deadline = began + self.finish_timeout
        with self._cond:
            while self._version != self._delivered:
                now = time.monotonic()
                if now >= deadline:
                    return
                if self._unhealthy_locked(now) and (self._final_attempts or now - began >= UNHEALTHY_GRACE):
                    return
                self._cond.wait(min(deadline - now, 0.05))

    def _unhealthy_locked(self, now):
        """The last send failed, or the one in flight has taken over SLOW_AFTER seconds (real time)."""
        if self._sending:
            return now - self._attempt_began >= SLOW_AFTER
        return self._consecutive_failures > 0

    # -- sending ----------------------------------------------------------------

    def _due_in_locked(self, now):
        """None: nothing to send; 0: send now; else seconds to wait."""
        if not self._started or self._sending or self._version == self._delivered:
            return None
        if self._attempted_at is None:
            return 0
        if self._finishing:
            if self._final_attempts == 0:
                return 0
            return max(0.0, self._attempted_at + FINAL_RETRY_DELAY - now)
        return max(0.0, self._attempted_at + self.interval - now)

    def _take_locked(self, now):
        """Snapshot the newest state for sending (caller holds the lock)."""
        elapsed = (self._sample_time or now) - (self._start_time or now)
        throughput = int(self._bytes_moved / elapsed) if elapsed > 0 else 0
        if self._finishing and self._status == 'Completed':
            percent = 100.0
        else:
            percent = compute_percent(self._bytes_done, self.total_bytes)
        body = dict(stage=self._stage, status=self._status, bytes_transferred=self._bytes_done,
                    total_bytes=self.total_bytes, throughput_bps=throughput, percent=percent,
                    disk_id=self.disk_id, sync_type=self.sync_type, message=self._message)
        self._sending = True
        self._attempted_at = now
        self._attempt_began = time.monotonic()
        return self._version, body, self._finishing

    def poll(self, force=False):
        """Send the newest state if it is due (``force``: if anything is pending). Returns True if it tried."""
        with self._cond:
            now = self._clock()
            due = self._due_in_locked(now)
            if due is None or (due > 0 and not force):
                return False
            job = self._take_locked(now)
        self._deliver(*job)
        return True

    def _deliver(self, version, body, final):
        error = None
        invalid = False
        try:
            self._sender(build_update(**body))
        except VmaValidationError as exc:
            error, invalid = str(exc), True
        except Exception as exc:  # a best-effort sender: every failure is only counted
            error = describe_exception(exc)
        with self._cond:
            self._sending = False
            self.attempts += 1
            if error is None:
                self.sent += 1
                self._consecutive_failures = 0
                self._delivered = max(self._delivered, version)
                if final:
                    self._final_delivered = True
            else:
                self._record_failure_locked(error)
                self._consecutive_failures += 1
                if final:
                    self._final_attempts += 1
                if invalid or (final and self._final_attempts >= FINAL_ATTEMPTS):
                    self._delivered = max(self._delivered, version)  # give up on this state
            self._cond.notify_all()

    def _record_failure(self, error):
        with self._cond:
            self._record_failure_locked(error)

    def _record_failure_locked(self, error):
        self.failed += 1
        if self._first_error is None:
            self._first_error = error
        self._last_error = error

    def _run(self):
        try:
            while True:
                with self._cond:
                    while True:
                        if self._finishing and self._version == self._delivered:
                            return
                        now = self._clock()
                        due = self._due_in_locked(now)
                        if due is None:
                            self._cond.wait()
                        elif due > 0:
                            self._cond.wait(due)
                        else:
                            break
                    job = self._take_locked(now)
                self._deliver(*job)
        except Exception as exc:  # never surfaces: the thread just ends
            self._record_failure('sender thread: %s' % describe_exception(exc))

    # -- results ------------------------------------------------------------------

    @property
    def stats(self):
        """``{'attempts', 'sent', 'failed'}`` counts of update sends."""
        with self._cond:
            return {'attempts': self.attempts, 'sent': self.sent, 'failed': self.failed}

    @property
    def warnings(self):
        """A few warning strings summarizing failed reporting (empty when all went well)."""
        with self._cond:
            warnings = list(self._setup_warnings)
            if not self.enabled:
                return warnings
            if self.failed:
                errors = self._first_error
                if self._last_error != self._first_error:
                    errors = 'first error: %s; last error: %s' % (self._first_error, self._last_error)
                warnings.append(
                    'Progress reporting to the VMA at %s for %s: %d of %d updates failed (%s). '
                    'The copy itself is not affected.'
                    % (self.vma_url, self._what(), self.failed, self.attempts, errors))
            if self._finishing and not self._final_delivered:
                if self._sending:
                    why = 'a request has been waiting %.1f s for an answer' % (time.monotonic() - self._attempt_began)
                elif self._last_error:
                    why = 'last error: %s' % self._last_error
                else:
                    why = 'not sent yet'
                warnings.append(
                    'The final progress update (%s) for %s was not confirmed by the VMA at %s (%s); '
                    'the VMA may show outdated progress.' % (self._status, self._what(), self.vma_url, why))
            if self._invalid_updates:
                warnings.append('%d progress updates for %s had non-numeric byte counts and were ignored.'
                                % (self._invalid_updates, self._what()))
            return warnings


# ---------------------------------------------------------------- module logic

def error_message(operation, exc, job_id=None):
    """The one failure message of a module: names the operation, the job and the cause."""
    if isinstance(exc, VmaRequestError):
        return str(exc)  # already 'Cannot <operation> for job ... at <url>: <reason>'
    what = operation
    if job_id and not (isinstance(exc, VmaValidationError) and exc.field == 'job_id'):
        what += ' for job %r' % (job_id,)
    return 'Cannot %s: %s' % (what, exc)


def post_progress(params, check_mode=False, client_factory=None):
    """What ``migratekit.migration.vma_progress`` does; returns its result dict.

    Bad input raises VmaValidationError. A VMA that cannot be reached or
    answers an error raises VmaRequestError when ``params['required']``, and
    otherwise gives a result with ``posted=False``, ``error`` and a warning
    (in ``result['warnings']``).
    """
    job_id = validate_job_id(resolve_job_id(params.get('job_id')))
    url = redact_url(update_url(params['vma_url'], job_id))
    body = build_update(params['stage'], params['status'],
                        bytes_transferred=params.get('bytes_transferred'),
                        total_bytes=params.get('total_bytes'),
                        throughput_bps=params.get('throughput_bps'),
                        percent=params.get('percent'),
                        disk_id=params.get('disk_id'),
                        sync_type=params.get('sync_type'),
                        message=params.get('msg'))
    result = dict(changed=False, posted=False, url=url, update=body, job_id=job_id, warnings=[])
    if check_mode:
        result['changed'] = True
        return result
    client = (client_factory or VmaClient)(
        params['vma_url'], token=params.get('token'), validate_certs=params.get('validate_certs', True))
    try:
        result['response'] = client.post_payload(job_id, body)
    except VmaRequestError as exc:
        if params.get('required'):
            raise
        result['error'] = str(exc)
        result['warnings'].append('%s (ignored: required=false; the VMA progress is best effort)' % exc)
        return result
    finally:
        client.close()
    result['changed'] = result['posted'] = True
    return result


def read_progress(params, client_factory=None):
    """What ``migratekit.migration.vma_progress_info`` does; returns its result dict.

    An unknown job gives ``found=False``; other failures raise VmaRequestError.
    """
    job_id = validate_job_id(resolve_job_id(params.get('job_id')))
    url = redact_url(progress_url(params['vma_url'], job_id))
    client = (client_factory or VmaClient)(
        params['vma_url'], token=params.get('token'), validate_certs=params.get('validate_certs', True))
    try:
        progress = client.get_progress(job_id)
        found = True
    except VmaNotFoundError:
        progress, found = {}, False
    finally:
        client.close()
    return dict(changed=False, found=found, progress=progress, url=url, job_id=job_id)
