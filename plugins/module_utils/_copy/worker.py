# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy loop: worker threads over a pair of libnbd handles each, and the state they share.

Like nbdcopy's ``multi-thread-copying.c``. Each :class:`Worker` owns one
source and one target handle, polls that pair itself and keeps up to
``plan.requests_in_flight`` asynchronous requests going on it, with buffers
from its own pool (reused for the whole copy: a fresh ``nbd.Buffer`` per
request was the measured cost, and libnbd 1.14's bindings keep a reference to
every buffer they are given). Workers read the :class:`~.plan.CopyPlan` and
the :class:`~.shared.SharedState` only; the hot loop caches what it reads in locals.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import heapq
import random
import select
import time

from ansible_collections.migratekit.migration.plugins.module_utils._copy.endpoints import nbd
from ansible_collections.migratekit.migration.plugins.module_utils._copy.errors import CopyIOError, NbdCopyError, VerifyError
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import (
    BASE_ALLOCATION,
    COPY,
    FLUSH,
    MAX_RETRY_DELAY,
    OPERATIONS,
    PERMANENT_ERRNOS,
    PROBE,
    UNSUPPORTED_ERRNOS,
    VERIFY,
    WRITE,
    ZERO,
    align_down,
    align_runs,
    class_pieces,
    describe_errno,
    runs_from_block_status,
    split_range,
    uncovered,
)


class _Request(object):
    __slots__ = ('kind', 'offset', 'length', 'attempt', 'slot', 'buf', 'worker', 'slots',
                 'vbuf', 'vslot', 'pending', 'error', 'entries', 'by_write')

    def __init__(self, worker, kind, offset, length):
        self.worker = worker
        self.kind = kind
        self.offset = offset
        self.length = length
        self.attempt = 0
        self.slot = None
        self.buf = None
        self.slots = 1
        self.vbuf = None
        self.vslot = None
        self.pending = 0
        self.error = 0
        self.entries = None
        self.by_write = False

    def done(self, err):
        # Runs inside libnbd's notify call: only record, the worker loop acts.
        self.worker.completed.append((self, err.value))
        return 1

    def extent(self, metacontext, offset, entries, err):
        if metacontext == BASE_ALLOCATION:
            if self.entries is None:
                self.entries = list(entries)
            else:
                self.entries.extend(entries)
        return 0


class Worker(object):
    """One thread, one source handle, one target handle, one buffer pool.

    It knows the copy only through its ``plan`` (read-only) and ``shared``
    (:class:`~.shared.SharedState`: the work stream, the failure flag, progress, zero buffers).
    """

    def __init__(self, plan, shared, index, src, dst):
        self.plan = plan
        self.shared = shared
        self.index = index
        self.src = src
        self.dst = dst
        self.completed = []
        self.local = []           # requests split off locally, used as a LIFO of ready work
        self.retry = []           # heap of (due, seq, request)
        self.seq = 0
        self.inflight = 0         # slot units in use (a verify request uses 2)
        self.pool = []            # memoryviews of request_size bytearrays
        self.views = []           # per slot: {length: nbd.Buffer view}
        self.free = []
        self.written = 0
        self.zeroed = 0
        self.done_bytes = 0
        self.verified = 0
        self.retried = 0
        self.data_runs = 0
        self.zero_by_write = plan.zero_by_write
        self.thread = None
        self.active = set()       # requests started and not finished (for the checkpoint's watermark)
        self.epoch_seen = 0
        self.finished = []        # [start, end) of work done since the last mark (checkpointed copies only)
        self.track = shared.checkpoint is not None

    # -- buffers --------------------------------------------------------
    def _take_slot(self):
        if self.free:
            return self.free.pop()
        self.pool.append(memoryview(bytearray(self.plan.request_size)))
        self.views.append({})
        return len(self.pool) - 1

    def _buffer(self, slot, length):
        # One nbd.Buffer per (slot, length), reused: libnbd 1.14's Python
        # bindings keep a reference to every buffer object passed to
        # aio_pread/aio_pwrite, so a new view per request would leak ~200
        # bytes each. Request lengths come from a small set (see
        # class_pieces), which bounds these views.
        views = self.views[slot]
        buf = views.get(length)
        if buf is None:
            buf = views[length] = nbd.Buffer.from_buffer(self.pool[slot][:length])
        return buf

    def _release(self, req):
        if req.slot is not None:
            self.free.append(req.slot)
            req.slot = None
            req.buf = None
        if req.vslot is not None:
            self.free.append(req.vslot)
            req.vslot = None
            req.vbuf = None

    # -- the loop -------------------------------------------------------
    def run(self):
        try:
            self._loop()
        except Exception as exc:  # a bug or an unexpected libnbd state: fail the job, never hang
            self.shared.fail(NbdCopyError('copy worker %d failed: %s: %s' % (self.index, type(exc).__name__, exc),
                                          operation='copy', disk=self.plan.disk))
        finally:
            self.shared.retire(self)

    # -- checkpoints ----------------------------------------------------
    def _outstanding_min(self):
        """The lowest offset of work this worker holds and has not finished (None: none)."""
        low = None
        for req in self.active:
            if req.kind != FLUSH and (low is None or req.offset < low):
                low = req.offset
        for item in self.local:
            if low is None or item[1] < low:
                low = item[1]
        return low

    def _mark_epoch(self):
        # Atomic with the stream: no item moves from the stream to a worker meanwhile.
        shared = self.shared
        epoch = shared.epoch
        self.epoch_seen = epoch
        with shared.work.lock:
            low = self._outstanding_min()
            position = shared.work.position
        finished, self.finished = self.finished, []
        shared.mark(self, epoch, position if low is None else min(low, position), finished)

    def _send_checkpoint_flush(self):
        due = self.shared.take_flush()
        if due is None:
            return
        req = _Request(self, FLUSH, due[0], 0)
        req.entries = due[1]      # the ranges done above the watermark, checkpointed with it
        self.active.add(req)
        self.inflight += 1
        self._submit(req)

    def _loop(self):
        plan, shared = self.plan, self.shared
        cap = plan.requests_in_flight
        poller = select.poll()
        sfd = self.src.aio_get_fd()
        dfd = self.dst.aio_get_fd()
        poller.register(sfd, 0)
        poller.register(dfd, 0)
        pairs = ((self.src, sfd), (self.dst, dfd))
        exhausted = False
        last_io = time.monotonic()
        pollin = select.POLLIN
        pollout = select.POLLOUT
        read_mask = select.POLLIN | select.POLLHUP | select.POLLERR
        dir_read = nbd.AIO_DIRECTION_READ
        dir_write = nbd.AIO_DIRECTION_WRITE
        while True:
            if shared.failed:
                if self.inflight == 0 or not self._drainable():
                    break
            else:
                if shared.epoch != self.epoch_seen:
                    self._mark_epoch()
                if shared.flush_due is not None:
                    self._send_checkpoint_flush()
                if self.retry:
                    now = time.monotonic()
                    while self.retry and self.retry[0][0] <= now:
                        self._submit(heapq.heappop(self.retry)[2])
                while self.inflight < cap and not shared.failed:
                    if self.local:
                        item = self.local.pop()
                    elif exhausted:
                        break
                    else:
                        item = shared.next_item(self)
                        if item is None:
                            exhausted = True
                            break
                    self._start(item)
                if self.inflight == 0 and exhausted and not self.local:
                    break
            timeout = 500
            if self.retry:
                timeout = max(0, min(timeout, int((self.retry[0][0] - time.monotonic()) * 1000) + 1))
            for handle, fd in pairs:
                direction = handle.aio_get_direction()
                events = 0
                if direction & dir_read:
                    events |= pollin
                if direction & dir_write:
                    events |= pollout
                poller.modify(fd, events)
            ready = poller.poll(timeout)
            for fd, revents in ready:
                handle = self.src if fd == sfd else self.dst
                if revents & read_mask:
                    handle.aio_notify_read()
                if revents & pollout:
                    handle.aio_notify_write()
            if self.completed:
                self._process()
                last_io = time.monotonic()
            elif not ready:
                waiting = [role for handle, role in ((self.src, 'source'), (self.dst, 'target'))
                           if handle.aio_in_flight()]
                if not waiting:
                    last_io = time.monotonic()
                elif time.monotonic() - last_io > plan.io_timeout:
                    shared.fail(CopyIOError('no reply from the %s for %d s (%s of %s)'
                                            % (' and '.join(waiting), plan.io_timeout, plan.disk,
                                               ', '.join(plan.uri(role) for role in waiting)),
                                            operation='wait for %s' % waiting[0], disk=plan.disk))
                    self.inflight = 0
                    return
            for handle, role in ((self.src, 'source'), (self.dst, 'target')):
                if handle.aio_is_dead() or handle.aio_is_closed():
                    if not shared.failed:
                        shared.fail(CopyIOError('the connection to the %s %s was lost' % (role, plan.uri(role)),
                                                operation='connect to %s' % role, disk=plan.disk))
                    self.inflight = 0
                    return

    def _drainable(self):
        # After a failure elsewhere: wait for requests already sent, drop queued retries.
        if self.retry:
            for _due, _seq, req in self.retry:
                self._release(req)
                self.active.discard(req)
                self.inflight -= req.slots
            self.retry = []
        return self.inflight > 0

    def _start(self, item):
        kind, offset, length = item
        if self.shared.skip and (kind == COPY or kind == ZERO):
            # a resumed copy: what an earlier run did above its watermark is not done again
            parts = uncovered(offset, length, self.shared.skip)
            if not parts:
                self.done_bytes += length
                return
            self.done_bytes += length - sum(part[1] for part in parts)
            for part in reversed(parts[1:]):
                self.local.append((kind,) + part)
            offset, length = parts[0]
        if kind == COPY or kind == VERIFY or (kind == ZERO and self.zero_by_write):
            plan = self.plan
            if length > plan.request_size:
                pieces = list(split_range(offset, length, plan.request_size, plan.align))
            else:
                pieces = [(offset, length)]
            if len(pieces) > 1 or length not in plan.length_classes:
                pieces = [piece for big in pieces
                          for piece in class_pieces(big[0], big[1], plan.quantum, plan.align)]
            if len(pieces) > 1:
                for piece in reversed(pieces[1:]):
                    self.local.append((kind,) + piece)
                offset, length = pieces[0]
        req = _Request(self, kind, offset, length)
        self.active.add(req)
        if kind == COPY:
            req.slot = self._take_slot()
            req.buf = self._buffer(req.slot, length)
        elif kind == VERIFY:
            req.slots = 2
            req.slot = self._take_slot()
            req.buf = self._buffer(req.slot, length)
            req.vslot = self._take_slot()
            req.vbuf = self._buffer(req.vslot, length)
        self.inflight += req.slots
        self._submit(req)

    def _submit(self, req):
        kind = req.kind
        try:
            if kind == COPY:
                self.src.aio_pread(req.buf, req.offset, req.done)
            elif kind == WRITE:
                self.dst.aio_pwrite(req.buf, req.offset, req.done)
            elif kind == ZERO:
                if self.zero_by_write:
                    if req.length > self.plan.request_size:
                        # sent as write-zeroes before the fallback (a retry): the zero
                        # buffer is request_size long, so write it in pieces
                        self.inflight -= req.slots
                        self.active.discard(req)
                        self._start((ZERO, req.offset, req.length))
                        return
                    req.by_write = True
                    self.dst.aio_pwrite(self.shared.zero_buffer(req.length), req.offset, req.done)
                else:
                    req.by_write = False
                    self.dst.aio_zero(req.length, req.offset, req.done)
            elif kind == PROBE:
                req.entries = None
                self.src.aio_block_status(req.length, req.offset, req.extent, req.done)
            elif kind == FLUSH:
                self.dst.aio_flush(req.done)
            elif kind == VERIFY:
                req.pending = 2
                req.error = 0
                self.src.aio_pread(req.buf, req.offset, req.done)
                try:
                    self.dst.aio_pread(req.vbuf, req.offset, req.done)
                except nbd.Error:
                    req.pending = 1
                    raise
        except nbd.Error as exc:
            self._failed(req, exc.errnum or errno.EIO, exc.string)

    def _process(self):
        done, self.completed = self.completed, []
        plan, shared = self.plan, self.shared
        for req, err in done:
            kind = req.kind
            if kind == VERIFY:
                req.pending -= 1
                if err:
                    req.error = err
                if req.pending > 0:
                    continue
                err = req.error
            if err:
                self._failed(req, err)
                continue
            if shared.failed and kind in (COPY, PROBE, VERIFY, FLUSH):
                # another request failed for good: send nothing new, just drain
                self._release(req)
                self.active.discard(req)
                self.inflight -= req.slots
                continue
            if kind == COPY:
                if req.buf.is_zero():
                    self._release(req)
                    if plan.skip_zeros:
                        self.done_bytes += req.length
                        if self.track:
                            self.finished.append([req.offset, req.offset + req.length])
                        self.active.discard(req)
                        self.inflight -= 1
                        continue
                    req.kind = ZERO
                else:
                    req.kind = WRITE
                req.attempt = 0
                self._submit(req)
            elif kind == WRITE:
                self._release(req)
                self.written += req.length
                self.done_bytes += req.length
                if self.track:
                    self.finished.append([req.offset, req.offset + req.length])
                self.active.discard(req)
                self.inflight -= 1
            elif kind == ZERO:
                self.zeroed += req.length
                self.done_bytes += req.length
                if self.track:
                    self.finished.append([req.offset, req.offset + req.length])
                self.active.discard(req)
                self.inflight -= 1
            elif kind == PROBE:
                self.inflight -= 1
                self._probed(req)
                self.active.discard(req)
            elif kind == FLUSH:
                self.active.discard(req)
                self.inflight -= 1
                shared.checkpointed(req.offset, req.entries)
            elif kind == VERIFY:
                if self.pool[req.slot][:req.length] != self.pool[req.vslot][:req.length]:
                    shared.fail(VerifyError(
                        'verify: %s differs between source and target in [%d, %d)'
                        % (plan.disk, req.offset, req.offset + req.length),
                        operation='verify', disk=plan.disk, offset=self._first_difference(req)))
                self._release(req)
                self.verified += req.length
                self.done_bytes += req.length
                self.active.discard(req)
                self.inflight -= 2
        shared.report()

    def _first_difference(self, req):
        left, right = self.pool[req.slot], self.pool[req.vslot]
        for index in range(req.length):
            if left[index] != right[index]:
                return req.offset + index
        return req.offset

    def _probed(self, req):
        plan = self.plan
        entries = req.entries or []
        runs = runs_from_block_status(req.offset, req.length, entries)
        if not runs:
            runs = [[req.offset, req.length, False]]
        covered = runs[-1][0] + runs[-1][1] - req.offset
        items = []
        if covered < req.length:
            rest = align_down(req.offset + covered, plan.align)
            if rest <= req.offset:
                rest = req.offset + covered
            # the remainder is walked again first
            items.append((PROBE, rest, req.offset + req.length - rest))
            runs = [r for r in runs if r[0] < rest]
            if runs and runs[-1][0] + runs[-1][1] > rest:
                runs[-1][1] = rest - runs[-1][0]
        for start, length, is_zero in reversed(align_runs(runs, plan.align, plan.capacity)):
            if is_zero:
                if plan.skip_zeros:
                    self.done_bytes += length
                    if self.track:
                        self.finished.append([start, start + length])
                    continue
                pieces = list(split_range(start, length, plan.zero_size, plan.align))
                kind = ZERO
            else:
                self.data_runs += 1
                pieces = list(split_range(start, length, plan.request_size, plan.preferred))
                kind = COPY
            for offset, piece in reversed(pieces):
                items.append((kind, offset, piece))
        # self.local is a LIFO: push in reverse so the lowest offset comes first
        self.local.extend(items)

    def _failed(self, req, err, message=None):
        plan, shared = self.plan, self.shared
        if req.kind == ZERO and err in UNSUPPORTED_ERRNOS and not req.by_write:
            # The target refuses write-zeroes: write zero-filled buffers instead.
            self.zero_by_write = True
            self.inflight -= req.slots
            self.active.discard(req)
            self.local.append((ZERO, req.offset, req.length))
            return
        if req.kind == PROBE and err in UNSUPPORTED_ERRNOS:
            # No block status after all: copy the segment, zero detection still applies.
            self.inflight -= 1
            self.active.discard(req)
            pieces = list(split_range(req.offset, req.length, plan.request_size, plan.preferred))
            for offset, piece in reversed(pieces):
                self.local.append((COPY, offset, piece))
            return
        if req.attempt < plan.retries and err not in PERMANENT_ERRNOS and not shared.failed:
            req.attempt += 1
            self.retried += 1
            delay = min(MAX_RETRY_DELAY, plan.retry_delay * (2 ** (req.attempt - 1)))
            delay *= 0.5 + random.random()
            self.seq += 1
            heapq.heappush(self.retry, (time.monotonic() + delay, self.seq, req))
            return
        self._release(req)
        self.active.discard(req)
        self.inflight -= req.slots
        if shared.failed:
            return
        operation = OPERATIONS[req.kind]
        detail = describe_errno(err)
        if message:
            detail = '%s (%s)' % (detail, message)
        attempts = req.attempt + 1
        shared.fail(CopyIOError(
            '%s failed for %s at offset %d (length %d) after %d attempt%s: %s'
            % (operation, plan.disk, req.offset, req.length, attempts, '' if attempts == 1 else 's', detail),
            operation=operation, disk=plan.disk, offset=req.offset, length=req.length, errnum=err,
            attempts=attempts))
