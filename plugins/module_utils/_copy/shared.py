# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the workers of one pass share: the work stream, the first failure, progress, zero buffers, checkpoints.

:class:`SharedState` makes the workers (:mod:`.worker`), runs them and, for a
checkpointed copy, runs the epochs that settle a watermark and hand it, after
a flush, to the checkpoint writer (:mod:`.checkpoint`).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import threading
import time

from ansible_collections.migratekit.migration.plugins.module_utils._copy.endpoints import nbd
from ansible_collections.migratekit.migration.plugins.module_utils._copy.errors import NbdCopyError
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import (
    BATCH,
    CHECKPOINT_BYTES,
    CHECKPOINT_INTERVAL,
    PROGRESS_MIN_INTERVAL,
    merge_ranges,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.worker import Worker


class _SafeIterator(object):
    """Hand out work items from one generator to several threads.

    The items come in ascending, disjoint ranges, so ``position`` (the end of
    the last one handed out) bounds everything still in the stream.
    """

    def __init__(self, generator, start=0):
        self.generator = generator
        self.lock = threading.Lock()
        self.position = start

    def take(self, count):
        with self.lock:
            items = []
            try:
                for _index in range(count):
                    items.append(next(self.generator))
            except StopIteration:
                pass
            if items:
                last = items[-1]
                self.position = last[1] + last[2]
            return items


class SharedState(object):
    """What the workers of one pass (a copy or a verify) share.

    The work stream (taken in batches), the first failure (which stops every
    worker), the throttled progress callback ``progress(done, moved)``, the
    zero-filled buffers for targets that cannot write zeroes, and the
    checkpoints of a copy.

    Checkpoints (``checkpoint(watermark)`` given): at least every
    CHECKPOINT_INTERVAL seconds and every CHECKPOINT_BYTES, an epoch starts;
    each worker marks the lowest offset of the work it holds unfinished (and
    of what is left in the stream); once every worker has marked, the lowest
    mark is the watermark: everything below it was written. One worker then
    flushes the target (several connections only with multi-conn, where one
    flush covers the writes of all) and, once the flush is answered, the
    watermark is handed to ``checkpoint``. So a checkpoint never names data
    that is not on the target's stable storage.
    """

    def __init__(self, items, progress=None, zero_view=None, checkpoint=None, start=0, base_done=0, done_above=()):
        self.work = _SafeIterator(items, start)
        self.progress = progress
        self.failed = False
        self.error = None
        self.workers = []
        self._zero_view = zero_view
        self._zero_buffers = {}
        self._fail_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._last_report = 0.0
        self.base_done = base_done
        self.checkpoint = checkpoint
        self.epoch = 0
        self.flush_due = None
        self.checkpoints = 0
        self._marks = None
        self._participants = set()
        self._checkpoint_lock = threading.Lock()
        self._last_checkpoint = time.monotonic()
        self._last_checkpoint_done = 0
        self._epoch_done = 0
        # [start, end) ranges done above the watermark: an earlier run's (skipped now) and this run's
        self.skip = merge_ranges(done_above)
        self._carry = [list(pair) for pair in self.skip]
        self._pool = []

    def next_item(self, worker):
        items = self.work.take(BATCH)
        if not items:
            return None
        worker.local.extend(reversed(items[1:]))
        return items[0]

    def fail(self, error):
        with self._fail_lock:
            if not self.failed:
                self.error = error
                self.failed = True

    def zero_buffer(self, length):
        """A read-only zero-filled nbd.Buffer of ``length`` bytes, shared, one per length."""
        buf = self._zero_buffers.get(length)
        if buf is None:
            buf = self._zero_buffers[length] = nbd.Buffer.from_buffer(self._zero_view[:length])
        return buf

    def report(self, force=False):
        if self.progress is None and self.checkpoint is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_MIN_INTERVAL:
            return
        if not self._report_lock.acquire(False):
            return
        try:
            self._last_report = now
            done = 0
            moved = 0
            for worker in self.workers:
                done += worker.done_bytes
                moved += worker.written
            if self.checkpoint is not None and self._marks is None and self.flush_due is None and (
                    now - self._last_checkpoint >= CHECKPOINT_INTERVAL
                    or done - self._last_checkpoint_done >= CHECKPOINT_BYTES):
                self._start_epoch(done)
            if self.progress is not None:
                self.progress(self.base_done + done, moved)
        except Exception:  # progress is best effort, never fails a copy
            pass
        finally:
            self._report_lock.release()

    # -- checkpoints ------------------------------------------------------------
    def _start_epoch(self, done):
        with self._checkpoint_lock:
            if not self._participants:
                return
            self._marks = {}
            self._epoch_done = done
            self.epoch += 1

    def mark(self, worker, epoch, low, finished=()):
        """``worker`` holds nothing unfinished below ``low`` (in epoch ``epoch``) and did ``finished``."""
        with self._checkpoint_lock:
            self._pool.extend(finished)
            if self._marks is None or epoch != self.epoch:
                return
            self._marks[worker.index] = low
            self._close_epoch_locked()

    def retire(self, worker):
        """``worker`` has stopped: an epoch no longer waits for it."""
        with self._checkpoint_lock:
            self._pool.extend(worker.finished)
            worker.finished = []
            self._participants.discard(worker.index)
            if self._marks is not None:
                self._marks.pop(worker.index, None)
                if self._participants:
                    self._close_epoch_locked()
                else:
                    self._marks = None

    def _close_epoch_locked(self):
        if self._participants and set(self._marks) >= self._participants:
            watermark = min(self._marks[index] for index in self._participants)
            # what is done above the watermark stays known (bounded: it lies between unfinished work)
            done = merge_ranges(self._carry + self._pool)
            self._carry = [[max(start, watermark), end] for start, end in done if end > watermark]
            self._pool = []
            self.flush_due = (watermark, [list(pair) for pair in self._carry])
            self._marks = None

    def take_flush(self):
        with self._checkpoint_lock:
            due, self.flush_due = self.flush_due, None
            return due

    def checkpointed(self, watermark, done_above=()):
        """The target was flushed after every write below ``watermark`` and in ``done_above``: record it."""
        try:
            self.checkpoint(watermark, done_above)
            self.checkpoints += 1
        except Exception as exc:  # a checkpoint that cannot be written must not pass unnoticed
            self.fail(NbdCopyError('cannot write the checkpoint of %s: %s' % (self.workers[0].plan.disk, exc),
                                   operation='write checkpoint'))
        self._last_checkpoint = time.monotonic()
        self._last_checkpoint_done = self._epoch_done

    def make_workers(self, plan, pairs):
        """One worker per ``(source, target)`` handle pair; returns them (the caller keeps them to close)."""
        self.workers = [Worker(plan, self, index, src, dst) for index, (src, dst) in enumerate(pairs)]
        self._participants = set(worker.index for worker in self.workers)
        return self.workers

    def run(self):
        """Run every worker (one in this thread, several in threads); raise the first failure once all drained."""
        if len(self.workers) == 1:
            self.workers[0].run()
        else:
            for worker in self.workers:
                worker.thread = threading.Thread(target=worker.run, name='nbd-copy-%d' % worker.index)
                worker.thread.daemon = True
                worker.thread.start()
            for worker in self.workers:
                worker.thread.join()
        self.report(force=True)
        if self.failed:
            raise self.error
