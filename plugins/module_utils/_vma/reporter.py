# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report one disk's copy progress to the VMA in the background, best effort (:class:`ProgressReporter`)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import math
import threading
import time

from ansible_collections.migratekit.migration.plugins.module_utils._vma.client import DEFAULT_TIMEOUT, VmaClient, describe_exception
from ansible_collections.migratekit.migration.plugins.module_utils._vma.wire import (
    STATUS_FAILED,
    STATUS_IN_PROGRESS,
    SYNC_TYPES,
    VmaError,
    VmaValidationError,
    build_update,
    compute_percent,
    normalize_disk_id,
    redact_url,
    resolve_job_id,
    validate_choice,
    validate_count,
    validate_job_id,
    validate_vma_url,
)

DEFAULT_INTERVAL = 2.0              # ProgressReporter: seconds between updates
DEFAULT_FINISH_TIMEOUT = 5.0        # ProgressReporter.finish(): longest wait
FINAL_ATTEMPTS = 3                  # ProgressReporter: tries of the final update
FINAL_RETRY_DELAY = 0.5
SLOW_AFTER = 0.5                    # a send taking longer means the VMA is slow or stalled
UNHEALTHY_GRACE = 0.25              # finish() wait when the VMA is failing or stalled


class ProgressReporter(object):
    """Reports one disk's copy progress to the VMA in the background, best effort.

    ::

        reporter = ProgressReporter(vma_url, job_id, disk_id, sync_type, total_bytes,
                                    token=None, validate_certs=True, interval=2.0)
        reporter.start()                          # Transfer/in_progress at 0 %, starts the sender thread
        reporter.update(bytes_done, bytes_moved)  # cheap, never blocks; the newest state wins
        reporter.finish(ok=True, message=None)    # final 100 % (or failed); bounded wait
        reporter.warnings                         # list of str, to return as module warnings

    Every update names the disk (``disk_id``): the appliance keeps each
    disk's numbers and sums them into the job's. A disk never ends the job:
    its updates say ``in_progress``, its last one too (at 100 %), so that
    the job is not seen as finished while other disks are still to copy; a
    failed copy says ``failed`` (with ``error_message``), the cycle fails
    with it. The job's end (``completed`` or ``failed``) is the VM-wide
    update the roles send with ``vma_progress``.

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
        self._status = STATUS_IN_PROGRESS
        self._done = False            # finished with ok=True: 100 %
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
        """Queue the Transfer/in_progress 0 % update and start the sender thread. Never blocks."""
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

        ``ok=True``: Transfer/in_progress at 100 % (all of ``total_bytes``
        done). ``ok=False``: Transfer/failed with ``message`` (sent as
        ``error_message``) and the last numbers. Waits at most ``finish_timeout``
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
                    self._done = True
                    self._bytes_done = max(self._bytes_done, self.total_bytes)
                else:
                    self._status = STATUS_FAILED
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
        if self._done:
            percent = 100.0
        else:
            percent = compute_percent(self._bytes_done, self.total_bytes)
        body = dict(stage='Transfer', status=self._status, bytes_transferred=self._bytes_done,
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
                    'the VMA may show outdated progress.'
                    % ('100 %' if self._done else self._status, self._what(), self.vma_url, why))
            if self._invalid_updates:
                warnings.append('%d progress updates for %s had non-numeric byte counts and were ignored.'
                                % (self._invalid_updates, self._what()))
            return warnings
