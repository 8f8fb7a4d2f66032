# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A copy's progress published in a file, for whoever runs the copy in the background.

The sync roles run each disk's copy as an async task and, while it runs, read
this file on the appliance (wherever it is: the controller or a delegated
host) and print each disk's progress to the play's output (see
docs/cutover-planning.md, "Progress at the terminal"). :class:`ProgressFile`
has the interface of the VMA reporter (``start``, ``update``, ``finish``,
``warnings``): a background thread replaces the file atomically every
``interval`` seconds with the newest figures, and once more at the end with
``state`` ``done`` or ``failed``.

:class:`Watchdog` ends the copy (SIGTERM to itself) when the process running
the cycle is gone: a copy running in the background never outlives the
playbook that started it (its checkpoint stays, the next cycle resumes from
it).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os
import signal
import tempfile
import threading
import time

STATE_RUNNING = 'running'
STATE_DONE = 'done'
STATE_FAILED = 'failed'


def process_alive(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
    except (IOError, OSError, ValueError):
        return False
    return fields[0] not in ('Z', 'X')


def write_json_atomic(path, data):
    """Replace ``path`` by ``data`` (temp file and rename in its directory; no fsync: it is a view)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(data, handle, sort_keys=True)
        os.rename(tmp, path)
    except (IOError, OSError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def mark_failed(path, message):
    """Say in ``path`` that the copy failed (also when it failed before it started reporting); best effort."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        data = {}
    if data.get('state') == STATE_FAILED:
        return
    data.update({'state': STATE_FAILED, 'message': message, 'eta_seconds': 0,
                 'updated': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ')})
    try:
        write_json_atomic(path, data)
    except (IOError, OSError):
        pass


class ProgressFile(object):
    """Publishes one disk's copy progress in ``path`` every ``interval`` seconds (best effort)."""

    def __init__(self, path, disk, sync_type, total_bytes, interval=2.0, clock=time.monotonic):
        self.path = path
        self.disk = disk
        self.sync_type = sync_type
        self.total_bytes = int(total_bytes or 0)
        self.interval = max(0.1, float(interval or 2.0))
        self.clock = clock
        self.warnings = []
        self._done = self._moved = 0
        self._started = None
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def snapshot(self, state=STATE_RUNNING, message=None):
        """The figures now: bytes done of the total, percent, rate and ETA."""
        with self._lock:
            done, moved = self._done, self._moved
        elapsed = max(self.clock() - self._started, 0.0) if self._started is not None else 0.0
        rate = done / elapsed if elapsed > 0 else 0.0
        if state == STATE_DONE:
            done = max(done, self.total_bytes)
        remaining = max(self.total_bytes - done, 0)
        return {
            'disk': self.disk,
            'sync_type': self.sync_type,
            'state': state,
            'bytes_done': done,
            'bytes_moved': moved,
            'total_bytes': self.total_bytes,
            'percent': round(100.0 * done / self.total_bytes, 1) if self.total_bytes else 100.0,
            'rate_bps': round(rate, 1),
            'eta_seconds': 0 if state != STATE_RUNNING else (round(remaining / rate, 1) if rate > 0 else None),
            'elapsed': round(elapsed, 1),
            'updated': datetime.datetime.utcnow().strftime('%Y-%m-%dT%H:%M:%SZ'),
            'pid': os.getpid(),
            'message': message,
        }

    def _publish(self, state=STATE_RUNNING, message=None):
        if not self.path:
            return
        try:
            write_json_atomic(self.path, self.snapshot(state, message))
        except (IOError, OSError) as exc:
            if not self.warnings:
                self.warnings.append('cannot write the progress file %s: %s' % (self.path, exc))

    def _run(self):
        while not self._stop.wait(min(self.interval, 0.5)):
            if self.clock() - self._last >= self.interval:
                self._last = self.clock()
                self._publish()

    def start(self):
        self._started = self._last = self.clock()
        self._publish()
        self._thread = threading.Thread(target=self._run, name='progress-file')
        self._thread.daemon = True
        self._thread.start()

    def update(self, bytes_done, bytes_moved=None):
        with self._lock:
            self._done = int(bytes_done)
            if bytes_moved is not None:
                self._moved = int(bytes_moved)

    def finish(self, ok=True, message=None):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._publish(STATE_DONE if ok else STATE_FAILED, message)


class Watchdog(object):
    """Ends this process (SIGTERM) within ``period`` seconds of process ``pid`` being gone."""

    def __init__(self, pid, period=0.5, terminate=None):
        self.pid = pid
        self.period = period
        self.terminate = terminate or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self._stop = threading.Event()
        self._thread = None

    def _run(self):
        while not self._stop.wait(self.period):
            if not process_alive(self.pid):
                self.terminate()
                return

    def start(self):
        self._thread = threading.Thread(target=self._run, name='watchdog')
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()


class Fanout(object):
    """Several reporters as one (the VMA's and the progress file)."""

    def __init__(self, reporters):
        self.reporters = [r for r in reporters if r is not None]

    def start(self):
        for reporter in self.reporters:
            reporter.start()

    def update(self, bytes_done, bytes_moved=None):
        for reporter in self.reporters:
            reporter.update(bytes_done, bytes_moved)

    def finish(self, ok=True, message=None):
        for reporter in self.reporters:
            reporter.finish(ok=ok, message=message)

    @property
    def warnings(self):
        return [w for reporter in self.reporters for w in (getattr(reporter, 'warnings', None) or [])]
