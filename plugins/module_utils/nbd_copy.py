# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy engine: copy a disk, or only its changed extents, between NBD servers.

Usable without Ansible. The shape (see docs/copy-engine.md):

* ``connections`` worker threads; each owns one source and one target libnbd
  handle, polls that pair itself and keeps up to ``requests_in_flight``
  asynchronous requests going on it. Buffers come from a per-worker pool of
  ``request_size`` bytearrays that is reused for the whole copy (a fresh
  ``nbd.Buffer`` per request, i.e. fresh pages to fault in, was the measured
  cost), so memory is bounded by connections x requests_in_flight x
  request_size whatever the disk size or the number of extents.
* Work is a lazy stream of requests shared by the workers: the extents (a list
  or a streamed extents file) split to the servers' block size limits, or, for
  a whole disk, 128 MiB segments that a worker first asks the source's
  ``base:allocation`` block status about.
* Data that reads back as zeros becomes a write-zeroes request; holes become
  write-zeroes requests (zero-filled writes if the target cannot zero) unless
  the caller says the target is already zero.
* Transient errors are retried per request with exponential backoff; a
  persistent one stops every worker and raises :class:`CopyIOError` naming the
  operation, disk, offset and error. Nothing is committed then.

:func:`copy_disk` runs the whole sequence (connect, validate, copy, flush,
verify, commit the changeId) and returns the result dict of the module.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import heapq
import os
import random
import select
import threading
import time

try:
    import nbd
    HAS_NBD = True
    NBD_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - depends on the system
    nbd = None
    HAS_NBD = False
    NBD_IMPORT_ERROR = _exc

from ansible_collections.migratekit.migration.plugins.module_utils.extents import (
    ExtentsError,
    coalesce_sorted,
    merge_extents,
    open_extents_file,
    validate_extents,
)
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# Defaults picked from benchmarks/copy_bench.py runs (see benchmarks/README.md).
DEFAULT_CONNECTIONS = 4
DEFAULT_REQUEST_SIZE = 256 * KiB
DEFAULT_REQUESTS_IN_FLIGHT = 32
DEFAULT_RETRIES = 5
DEFAULT_RETRY_DELAY = 0.1          # first backoff, doubled per attempt, jittered
MAX_RETRY_DELAY = 5.0
DEFAULT_IO_TIMEOUT = 300           # seconds without any reply while requests are in flight
MAX_CONNECTIONS = 16
MAX_REQUESTS_IN_FLIGHT = 1024
MIN_REQUEST_SIZE = 4 * KiB
MAX_REQUEST_SIZE = 32 * MiB        # the NBD protocol's practical limit for reads/writes
ZERO_REQUEST_SIZE = 128 * MiB      # write-zeroes requests carry no payload
SEGMENT_SIZE = 128 * MiB           # whole-disk work unit: one block-status walk each
BATCH = 16                         # requests a worker takes from the shared stream at once
PROGRESS_MIN_INTERVAL = 0.1

VERIFY_CHOICES = ('none', 'checksum')

# Request kinds
COPY, WRITE, ZERO, PROBE, VERIFY = range(5)
_OPERATION = {COPY: 'read from source', WRITE: 'write to target', ZERO: 'write zeroes to target',
              PROBE: 'block status of source', VERIFY: 'verify read'}

STATE_HOLE = 1
STATE_ZERO = 2
BASE_ALLOCATION = 'base:allocation'

# errno values that retrying cannot fix (a bad request, a full or read-only
# target, a dropped connection: the engine does not reconnect).
PERMANENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    'EINVAL', 'EPERM', 'EACCES', 'EROFS', 'ENOSPC', 'EFBIG', 'EOVERFLOW', 'EDQUOT',
    'ENOTCONN', 'ESHUTDOWN', 'EPIPE', 'ECONNRESET', 'EBADF', 'ERANGE') if hasattr(errno, name))
UNSUPPORTED_ERRNOS = frozenset(getattr(errno, name) for name in ('ENOTSUP', 'EOPNOTSUPP') if hasattr(errno, name))


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

class NbdCopyError(Exception):
    """Base of the engine's errors. ``operation``, ``disk`` and ``offset`` say where."""

    def __init__(self, message, operation=None, disk=None, offset=None):
        super(NbdCopyError, self).__init__(message)
        self.message = message
        self.operation = operation
        self.disk = disk
        self.offset = offset


class ConnectError(NbdCopyError):
    """A server could not be reached or did not negotiate."""


class ValidationError(NbdCopyError):
    """Bad input, found before anything was written."""


class CopyIOError(NbdCopyError):
    """A request failed persistently (after the retries). The target is incomplete."""

    def __init__(self, message, operation=None, disk=None, offset=None, length=None, errnum=None, attempts=None):
        super(CopyIOError, self).__init__(message, operation, disk, offset)
        self.length = length
        self.errnum = errnum
        self.attempts = attempts


class VerifyError(NbdCopyError):
    """verify=checksum found source and target different."""


class CommitError(NbdCopyError):
    """The copy succeeded but the sync state could not be committed."""


# --------------------------------------------------------------------------
# Pure helpers (unit-tested without servers)
# --------------------------------------------------------------------------

def errno_name(errnum):
    return errno.errorcode.get(errnum, str(errnum))


def describe_errno(errnum):
    try:
        return '%s (%s)' % (os.strerror(errnum), errno_name(errnum))
    except (ValueError, OverflowError):
        return 'error %s' % errnum


def align_down(value, align):
    return value - value % align


def align_up(value, align):
    rest = value % align
    return value if rest == 0 else value + align - rest


def effective_request_size(request_size, align, max_sizes=()):
    """Clamp ``request_size`` to the servers' maximum block sizes and alignment.

    ``max_sizes`` are the servers' advertised maximum request sizes (0 means
    none advertised). The result is a multiple of ``align``.
    """
    size = min(int(request_size), MAX_REQUEST_SIZE)
    for limit in max_sizes:
        if limit:
            size = min(size, limit)
    size = align_down(size, align)
    if size < align:
        size = align
    return size


def align_extents(extents, align, capacity):
    """Widen extents outward to ``align`` (clipped to ``capacity``) and re-merge.

    Copying a little more than what changed is harmless; a request the server
    rejects for alignment is not.
    """
    if align <= 1:
        return extents
    return coalesce_sorted(_widen(extents, align, capacity))


def _widen(extents, align, capacity):
    for offset, length in extents:
        start = align_down(offset, align)
        end = min(align_up(offset + length, align), capacity)
        yield (start, end - start)


def gaps(extents, capacity, start=0):
    """Yield the areas of ``[start, capacity)`` that sorted ``extents`` do not cover."""
    position = start
    for offset, length in extents:
        if offset > position:
            yield (position, offset - position)
        position = max(position, offset + length)
    if position < capacity:
        yield (position, capacity - position)


def split_range(offset, length, size, align=1):
    """Yield ``(offset, length)`` pieces of at most ``size`` bytes.

    Piece boundaries inside the range fall on multiples of ``align`` so that
    the pieces after an unaligned start stay aligned.
    """
    end = offset + length
    while offset < end:
        step_end = min(end, offset + size)
        if step_end < end and align > 1:
            aligned = align_down(step_end, align)
            if aligned > offset:
                step_end = aligned
        yield (offset, step_end - offset)
        offset = step_end


def runs_from_block_status(offset, length, entries):
    """Turn ``base:allocation`` entries into merged ``[start, length, is_zero]`` runs.

    ``entries`` is the flat ``[length, flags, length, flags, ...]`` list the
    server returned for a walk starting at ``offset``; the result is clipped
    to ``[offset, offset + length)`` and may cover less when the server
    answered for less.
    """
    runs = []
    end = offset + length
    position = offset
    for index in range(0, len(entries) - 1, 2):
        run_length, flags = entries[index], entries[index + 1]
        if run_length <= 0 or position >= end:
            break
        run_length = min(run_length, end - position)
        is_zero = bool(flags & STATE_ZERO)
        if runs and runs[-1][2] == is_zero:
            runs[-1][1] += run_length
        else:
            runs.append([position, run_length, is_zero])
        position += run_length
    return runs


def align_runs(runs, align, capacity):
    """Move run boundaries to multiples of ``align``, growing data runs.

    A block that is partly data and partly zero is copied as data; zero runs
    shrink and disappear when nothing aligned is left of them.
    """
    if align <= 1 or not runs:
        return [tuple(run) for run in runs]
    out = []
    for start, length, is_zero in runs:
        end = start + length
        if is_zero:
            at_capacity = end >= capacity
            start, end = align_up(start, align), min(align_down(end, align), capacity)
            if at_capacity:
                end = capacity  # the disk's own unaligned tail
        else:
            start, end = align_down(start, align), min(align_up(end, align), capacity)
        if out:
            prev_start, prev_len, prev_zero = out[-1]
            prev_end = prev_start + prev_len
            if start < prev_end:
                if prev_zero and not is_zero:
                    prev_end = start
                    out[-1] = (prev_start, prev_end - prev_start, prev_zero)
                    if prev_end <= prev_start:
                        out.pop()
                else:
                    start = prev_end
        if end > start:
            if out and out[-1][2] == is_zero and out[-1][0] + out[-1][1] == start:
                out[-1] = (out[-1][0], out[-1][1] + end - start, is_zero)
            else:
                out.append((start, end - start, is_zero))
    # zero runs that shrank leave gaps between data runs: those are data.
    filled = []
    position = out[0][0] if out else 0
    for start, length, is_zero in out:
        if start > position:
            filled.append((position, start - position, False))
        filled.append((start, length, is_zero))
        position = start + length
    merged = []
    for run in filled:
        if merged and merged[-1][2] == run[2] and merged[-1][0] + merged[-1][1] == run[0]:
            merged[-1] = (merged[-1][0], merged[-1][1] + run[1], run[2])
        else:
            merged.append(run)
    return merged


def request_quantum(request_size, align):
    """The unit of the large request lengths: a power of two, 64 KiB or more, at most 16 per request."""
    quantum = max(64 * KiB, align)
    while quantum * 16 < request_size:
        quantum *= 2
    return min(quantum, max(request_size, align))


def class_pieces(offset, length, quantum, align):
    """Split one request into pieces whose lengths come from a small fixed set.

    The set: multiples of ``quantum`` (up to the request size) and powers of
    two times ``align`` below ``quantum``; plus, at the very end of a disk
    whose size is not a multiple of ``align``, that tail. No byte is added or
    dropped; an unusual length costs a few more requests.
    """
    big = length - length % quantum
    if big:
        yield (offset, big)
        offset += big
        length -= big
    while length >= align:
        piece = align << ((length // align).bit_length() - 1)
        yield (offset, piece)
        offset += piece
        length -= piece
    if length:
        yield (offset, length)


def length_classes(request_size, quantum, align):
    classes = set(range(quantum, request_size + 1, quantum))
    piece = align
    while piece < quantum:
        classes.add(piece)
        piece *= 2
    return frozenset(classes)


def throughput(bytes_moved, elapsed):
    return int(bytes_moved / elapsed) if elapsed > 0 else 0


class ExtentsFile(object):
    """A re-iterable view of an extents file: each iteration streams it anew."""

    def __init__(self, path):
        self.path = path
        self.header, _unused = open_extents_file(path)

    def __iter__(self):
        _header, extents = open_extents_file(self.path)
        return iter(extents)


def resolve_extents(extents=None, extents_file=None):
    """Return ``(extents_or_None, header)`` for the module's two ways of giving extents.

    ``extents`` (a list of pairs) is sorted and merged; an extents file is
    streamed. Neither means the whole disk.
    """
    if extents is not None and extents_file:
        raise ValidationError('give either extents or extents_file, not both', operation='validate')
    if extents_file:
        try:
            source = ExtentsFile(extents_file)
        except ExtentsError as exc:
            raise ValidationError(str(exc), operation='read extents file')
        return source, source.header
    if extents is not None:
        pairs = []
        for index, extent in enumerate(extents):
            if not isinstance(extent, (list, tuple)) or len(extent) != 2:
                raise ValidationError('extents[%d] is %r, expected [offset, length]' % (index, extent),
                                      operation='validate')
            try:
                offset, length = int(extent[0]), int(extent[1])
            except (TypeError, ValueError):
                raise ValidationError('extents[%d] is %r, expected two integers' % (index, extent),
                                      operation='validate')
            if offset < 0 or length < 0:
                raise ValidationError('extents[%d] is %r, expected non-negative integers' % (index, extent),
                                      operation='validate')
            pairs.append((offset, length))
        return list(merge_extents(pairs)), {}
    return None, {}


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------

class ServerInfo(object):
    """What one NBD server negotiated."""

    def __init__(self, handle, role):
        self.role = role
        self.size = handle.get_size()
        self.read_only = bool(handle.is_read_only())
        self.can_zero = bool(handle.can_zero())
        self.can_flush = bool(handle.can_flush())
        self.can_multi_conn = bool(handle.can_multi_conn())
        self.block_min = handle.get_block_size(nbd.SIZE_MINIMUM) or 1
        self.block_preferred = handle.get_block_size(nbd.SIZE_PREFERRED) or 0
        self.block_max = handle.get_block_size(nbd.SIZE_MAXIMUM) or 0
        try:
            self.can_block_status = bool(handle.can_meta_context(BASE_ALLOCATION))
        except nbd.Error:
            self.can_block_status = False

    def as_dict(self):
        return dict((key, value) for key, value in vars(self).items() if key != 'role')


def open_handle(uri, role, disk=None, block_status=False):
    """Connect one libnbd handle to ``uri``; ConnectError names the role and URI."""
    handle = nbd.NBD()
    try:
        handle.set_handle_name('migratekit-%s' % role)
        handle.set_pread_initialize(False)   # buffers are only read after a successful read
        handle.set_uri_allow_local_file(True)  # tls-psk-file=... in a user-given URI
        if block_status:
            handle.add_meta_context(BASE_ALLOCATION)
        handle.connect_uri(uri)
    except nbd.Error as exc:
        raise ConnectError('cannot connect to the %s %s of %s: %s' % (role, uri, disk or 'the disk', exc.string),
                           operation='connect to %s' % role, disk=disk)
    return handle


def close_handle(handle):
    if handle is None:
        return
    try:
        if handle.aio_is_ready() and not handle.aio_in_flight():
            handle.shutdown()
    except nbd.Error:
        pass


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------

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


class _Worker(object):
    """One thread, one source handle, one target handle, one buffer pool."""

    def __init__(self, job, index, src, dst):
        self.job = job
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
        self.zero_by_write = not job.target.can_zero
        self.thread = None

    # -- buffers --------------------------------------------------------
    def _take_slot(self):
        if self.free:
            return self.free.pop()
        self.pool.append(memoryview(bytearray(self.job.request_size)))
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
            self.job.fail(NbdCopyError('copy worker %d failed: %s: %s' % (self.index, type(exc).__name__, exc),
                                       operation='copy', disk=self.job.disk))

    def _loop(self):
        job = self.job
        cap = job.requests_in_flight
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
            if job.failed:
                if self.inflight == 0 or not self._drainable():
                    break
            else:
                if self.retry:
                    now = time.monotonic()
                    while self.retry and self.retry[0][0] <= now:
                        self._submit(heapq.heappop(self.retry)[2])
                while self.inflight < cap and not job.failed:
                    if self.local:
                        item = self.local.pop()
                    elif exhausted:
                        break
                    else:
                        item = job.next_item(self)
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
                elif time.monotonic() - last_io > job.io_timeout:
                    job.fail(CopyIOError('no reply from the %s for %d s (%s of %s)'
                                         % (' and '.join(waiting), job.io_timeout, job.disk,
                                            ', '.join(job.uri(role) for role in waiting)),
                                         operation='wait for %s' % waiting[0], disk=job.disk))
                    self.inflight = 0
                    return
            for handle, role in ((self.src, 'source'), (self.dst, 'target')):
                if handle.aio_is_dead() or handle.aio_is_closed():
                    if not job.failed:
                        job.fail(CopyIOError('the connection to the %s %s was lost' % (role, job.uri(role)),
                                             operation='connect to %s' % role, disk=job.disk))
                    self.inflight = 0
                    return

    def _drainable(self):
        # After a failure elsewhere: wait for requests already sent, drop queued retries.
        if self.retry:
            for _due, _seq, req in self.retry:
                self._release(req)
                self.inflight -= req.slots
            self.retry = []
        return self.inflight > 0

    def _start(self, item):
        kind, offset, length = item
        if kind == COPY or kind == VERIFY or (kind == ZERO and self.zero_by_write):
            job = self.job
            if length > job.request_size:
                pieces = list(split_range(offset, length, job.request_size, job.align))
            else:
                pieces = [(offset, length)]
            if len(pieces) > 1 or length not in job.length_classes:
                pieces = [piece for big in pieces
                          for piece in class_pieces(big[0], big[1], job.quantum, job.align)]
            if len(pieces) > 1:
                for piece in reversed(pieces[1:]):
                    self.local.append((kind,) + piece)
                offset, length = pieces[0]
        req = _Request(self, kind, offset, length)
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
                    if req.length > self.job.request_size:
                        # sent as write-zeroes before the fallback (a retry): the zero
                        # buffer is request_size long, so write it in pieces
                        self.inflight -= req.slots
                        self._start((ZERO, req.offset, req.length))
                        return
                    req.by_write = True
                    self.dst.aio_pwrite(self.job.zero_buffer(req.length), req.offset, req.done)
                else:
                    req.by_write = False
                    self.dst.aio_zero(req.length, req.offset, req.done)
            elif kind == PROBE:
                req.entries = None
                self.src.aio_block_status(req.length, req.offset, req.extent, req.done)
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
        job = self.job
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
            if job.failed and kind in (COPY, PROBE, VERIFY):
                # another request failed for good: send nothing new, just drain
                self._release(req)
                self.inflight -= req.slots
                continue
            if kind == COPY:
                if req.buf.is_zero():
                    self._release(req)
                    if job.skip_zeros:
                        self.done_bytes += req.length
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
                self.inflight -= 1
            elif kind == ZERO:
                self.zeroed += req.length
                self.done_bytes += req.length
                self.inflight -= 1
            elif kind == PROBE:
                self.inflight -= 1
                self._probed(req)
            elif kind == VERIFY:
                if self.pool[req.slot][:req.length] != self.pool[req.vslot][:req.length]:
                    job.fail(VerifyError(
                        'verify: %s differs between source and target in [%d, %d)'
                        % (job.disk, req.offset, req.offset + req.length),
                        operation='verify', disk=job.disk, offset=self._first_difference(req)))
                self._release(req)
                self.verified += req.length
                self.done_bytes += req.length
                self.inflight -= 2
        job.report()

    def _first_difference(self, req):
        left, right = self.pool[req.slot], self.pool[req.vslot]
        for index in range(req.length):
            if left[index] != right[index]:
                return req.offset + index
        return req.offset

    def _probed(self, req):
        job = self.job
        entries = req.entries or []
        runs = runs_from_block_status(req.offset, req.length, entries)
        if not runs:
            runs = [[req.offset, req.length, False]]
        covered = runs[-1][0] + runs[-1][1] - req.offset
        items = []
        if covered < req.length:
            rest = align_down(req.offset + covered, job.align)
            if rest <= req.offset:
                rest = req.offset + covered
            # the remainder is walked again first
            items.append((PROBE, rest, req.offset + req.length - rest))
            runs = [r for r in runs if r[0] < rest]
            if runs and runs[-1][0] + runs[-1][1] > rest:
                runs[-1][1] = rest - runs[-1][0]
        for start, length, is_zero in reversed(align_runs(runs, job.align, job.capacity)):
            if is_zero:
                if job.skip_zeros:
                    self.done_bytes += length
                    continue
                pieces = list(split_range(start, length, job.zero_size, job.align))
                kind = ZERO
            else:
                self.data_runs += 1
                pieces = list(split_range(start, length, job.request_size, job.preferred))
                kind = COPY
            for offset, piece in reversed(pieces):
                items.append((kind, offset, piece))
        # self.local is a LIFO: push in reverse so the lowest offset comes first
        self.local.extend(items)

    def _failed(self, req, err, message=None):
        job = self.job
        if req.kind == ZERO and err in UNSUPPORTED_ERRNOS and not req.by_write:
            # The target refuses write-zeroes: write zero-filled buffers instead.
            self.zero_by_write = True
            self.inflight -= req.slots
            self.local.append((ZERO, req.offset, req.length))
            return
        if req.kind == PROBE and err in UNSUPPORTED_ERRNOS:
            # No block status after all: copy the segment, zero detection still applies.
            self.inflight -= 1
            pieces = list(split_range(req.offset, req.length, job.request_size, job.preferred))
            for offset, piece in reversed(pieces):
                self.local.append((COPY, offset, piece))
            return
        if req.attempt < job.retries and err not in PERMANENT_ERRNOS and not job.failed:
            req.attempt += 1
            self.retried += 1
            delay = min(MAX_RETRY_DELAY, job.retry_delay * (2 ** (req.attempt - 1)))
            delay *= 0.5 + random.random()
            self.seq += 1
            heapq.heappush(self.retry, (time.monotonic() + delay, self.seq, req))
            return
        self._release(req)
        self.inflight -= req.slots
        if job.failed:
            return
        operation = _OPERATION[req.kind]
        detail = describe_errno(err)
        if message:
            detail = '%s (%s)' % (detail, message)
        attempts = req.attempt + 1
        job.fail(CopyIOError(
            '%s failed for %s at offset %d (length %d) after %d attempt%s: %s'
            % (operation, job.disk, req.offset, req.length, attempts, '' if attempts == 1 else 's', detail),
            operation=operation, disk=job.disk, offset=req.offset, length=req.length, errnum=err,
            attempts=attempts))


class _SafeIterator(object):
    """Hand out work items from one generator to several threads."""

    def __init__(self, generator):
        self.generator = generator
        self.lock = threading.Lock()
        self.error = None

    def take(self, count):
        with self.lock:
            items = []
            try:
                for _index in range(count):
                    items.append(next(self.generator))
            except StopIteration:
                pass
            return items


class DiskCopy(object):
    """Copy one disk from ``source`` to ``target`` (NBD URIs).

    ``extents``: None for the whole disk, else a re-iterable of sorted, disjoint
    ``(offset, length)`` pairs (a list, or :class:`ExtentsFile`).
    ``fill_gaps``: with extents, also write zeros outside them (a full copy from
    allocated extents onto a target not known to be zero).
    ``target_is_zero``: the target reads as zeros everywhere: holes and zero
    data are skipped instead of written.
    ``progress``: callable ``(bytes_done, bytes_moved)``, called as requests
    complete (throttled) from worker threads; it must be cheap.

    Use: ``open()`` (connect and validate, nothing written), ``plan()``,
    ``copy()``, ``flush()``, ``verify()``, ``close()``.
    """

    def __init__(self, source, target, extents=None, fill_gaps=False, target_is_zero=False,
                 connections=DEFAULT_CONNECTIONS, request_size=DEFAULT_REQUEST_SIZE,
                 requests_in_flight=DEFAULT_REQUESTS_IN_FLIGHT, retries=DEFAULT_RETRIES,
                 retry_delay=DEFAULT_RETRY_DELAY, progress=None, disk='disk', io_timeout=None):
        if not HAS_NBD:
            raise NbdCopyError('the nbd Python module (Debian package python3-libnbd) is required: %s'
                               % NBD_IMPORT_ERROR, operation='import nbd', disk=disk)
        self.source_uri = source
        self.target_uri = target
        self.extents = extents
        self.fill_gaps = bool(fill_gaps and extents is not None and not target_is_zero)
        self.target_is_zero = bool(target_is_zero)
        self.requested_connections = int(connections)
        self.requested_request_size = int(request_size)
        self.requests_in_flight = int(requests_in_flight)
        self.retries = int(retries)
        self.retry_delay = float(retry_delay)
        self.io_timeout = float(io_timeout or DEFAULT_IO_TIMEOUT)
        self.progress = progress
        self.disk = disk
        self._check_settings()
        self.source = None
        self.target = None
        self.pairs = []
        self.connections = 1
        self.capacity = None
        self.align = 1
        self.preferred = 1
        self.request_size = None
        self.zero_size = ZERO_REQUEST_SIZE
        self.extent_count = 0
        self.scope_bytes = 0       # bytes the copy covers (progress total)
        self.extent_bytes = 0
        self.skip_zeros = False
        self.failed = False
        self.error = None
        self._fail_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._last_report = 0.0
        self.workers = []
        self.work = None
        self.flushed = False
        self.zero_view = None
        self.zero_views = {}
        self.quantum = 64 * KiB
        self.length_classes = frozenset()
        self.stats = {}

    def _check_settings(self):
        def bad(name, value, expected):
            raise ValidationError('%s is %r, expected %s' % (name, value, expected), operation='validate',
                                  disk=self.disk)
        if not 1 <= self.requested_connections <= MAX_CONNECTIONS:
            bad('connections', self.requested_connections, 'an integer from 1 to %d' % MAX_CONNECTIONS)
        if not MIN_REQUEST_SIZE <= self.requested_request_size <= MAX_REQUEST_SIZE:
            bad('request_size', self.requested_request_size,
                'a size from %d to %d bytes' % (MIN_REQUEST_SIZE, MAX_REQUEST_SIZE))
        if not 1 <= self.requests_in_flight <= MAX_REQUESTS_IN_FLIGHT:
            bad('requests_in_flight', self.requests_in_flight, 'an integer from 1 to %d' % MAX_REQUESTS_IN_FLIGHT)
        if not 0 <= self.retries <= 100:
            bad('retries', self.retries, 'an integer from 0 to 100')

    def uri(self, role):
        return self.source_uri if role == 'source' else self.target_uri

    # -- setup ----------------------------------------------------------
    def open(self):
        """Connect, check the servers and the extents. Raises before anything is written."""
        src = open_handle(self.source_uri, 'source', self.disk, block_status=self.extents is None)
        self.pairs.append([src, None])
        dst = open_handle(self.target_uri, 'target', self.disk)
        self.pairs[0][1] = dst
        self.source = ServerInfo(src, 'source')
        self.target = ServerInfo(dst, 'target')
        self.capacity = self.source.size
        if self.target.read_only:
            raise ValidationError('the target %s of %s is read-only' % (self.target_uri, self.disk),
                                  operation='validate target', disk=self.disk)
        if self.target.size < self.source.size:
            raise ValidationError('the target %s of %s is smaller than the source: %d < %d bytes'
                                  % (self.target_uri, self.disk, self.target.size, self.source.size),
                                  operation='validate target', disk=self.disk)
        self.align = max(self.source.block_min, self.target.block_min, 1)
        self.preferred = max(self.align, self.source.block_preferred or 1, self.target.block_preferred or 1)
        self.request_size = effective_request_size(self.requested_request_size, self.align,
                                                   (self.source.block_max, self.target.block_max))
        if self.preferred > self.request_size:
            self.preferred = self.align
        self.zero_size = max(self.request_size, align_down(ZERO_REQUEST_SIZE, self.align))
        self.quantum = request_quantum(self.request_size, self.align)
        self.length_classes = length_classes(self.request_size, self.quantum, self.align)
        # Several connections only when both servers say that is consistent (multi-conn),
        # as nbdcopy does; a source like nbdkit-vddk gets one connection, many requests.
        if self.source.can_multi_conn and self.target.can_multi_conn:
            self.connections = self.requested_connections
        else:
            self.connections = 1
        self._scan_extents()
        if self.extents is None:
            self.skip_zeros = self.target_is_zero
            self.scope_bytes = self.capacity
        else:
            self.skip_zeros = False
            self.scope_bytes = self.capacity if self.fill_gaps else self.extent_bytes
        return self

    def _aligned_extents(self):
        return align_extents(iter(self.extents), self.align, self.capacity)

    def _scan_extents(self):
        """Validate every extent against the source size (streaming), count them."""
        if self.extents is None:
            self.extent_count = 0
            self.extent_bytes = self.capacity
            return
        count = 0
        try:
            for _extent in validate_extents(self.extents, self.capacity, 'extents of %s' % self.disk):
                count += 1
            total = 0
            for _offset, length in self._aligned_extents():
                total += length
        except ExtentsError as exc:
            raise ValidationError('%s (source %s has %d bytes)' % (exc, self.source_uri, self.capacity),
                                  operation='validate extents', disk=self.disk)
        self.extent_count = count
        self.extent_bytes = total

    def _connect_more(self):
        while len(self.pairs) < self.connections:
            src = open_handle(self.source_uri, 'source', self.disk, block_status=self.extents is None)
            dst = open_handle(self.target_uri, 'target', self.disk)
            self.pairs.append([src, dst])

    def plan(self, scan=True):
        """What a copy would move, without writing: a dict for check mode.

        For a whole disk the source's block status is walked (``scan``), so
        ``data_bytes`` counts allocated bytes (zero detection may still turn
        some into zero requests).
        """
        if self.extents is not None:
            data = self.extent_bytes
            zero = (self.capacity - data) if self.fill_gaps else 0
            extents = self.extent_count
        elif scan and self.source.can_block_status:
            data, extents = self._scan_allocation()
            zero = 0 if self.target_is_zero else self.capacity - data
        else:
            data, zero, extents = self.capacity, 0, 1 if self.capacity else 0
        return {
            'data_bytes': data,
            'zero_bytes': zero,
            'skipped_bytes': self.capacity - data - zero,
            'extent_count': extents,
            'capacity_bytes': self.capacity,
            'connections': self.connections,
            'request_size': self.request_size,
            'requests_in_flight': self.requests_in_flight,
        }

    def _scan_allocation(self):
        handle = self.pairs[0][0]
        offset = 0
        data = 0
        runs = 0
        while offset < self.capacity:
            length = min(SEGMENT_SIZE * 8, self.capacity - offset)
            entries = []

            def extent(metacontext, _offset, values, _err):
                if metacontext == BASE_ALLOCATION:
                    entries.extend(values)
                return 0
            try:
                handle.block_status(length, offset, extent)
            except nbd.Error as exc:
                raise ConnectError('block status of the source %s of %s at offset %d failed: %s'
                                   % (self.source_uri, self.disk, offset, exc.string),
                                   operation='block status of source', disk=self.disk, offset=offset)
            found = runs_from_block_status(offset, length, entries)
            if not found:
                found = [[offset, length, False]]
            for start, run_length, is_zero in align_runs(found, self.align, self.capacity):
                if not is_zero:
                    data += run_length
                    runs += 1
            offset = found[-1][0] + found[-1][1]
        return data, runs

    # -- work -----------------------------------------------------------
    def _copy_items(self):
        if self.extents is None:
            if self.source.can_block_status:
                for offset, length in split_range(0, self.capacity, SEGMENT_SIZE, self.align):
                    yield (PROBE, offset, length)
            else:
                for offset, length in split_range(0, self.capacity, self.request_size, self.preferred):
                    yield (COPY, offset, length)
            return
        position = 0
        for offset, length in self._aligned_extents():
            if self.fill_gaps and offset > position:
                for piece in split_range(position, offset - position, self.zero_size, self.align):
                    yield (ZERO,) + piece
            for piece in split_range(offset, length, self.request_size, self.preferred):
                yield (COPY,) + piece
            position = offset + length
        if self.fill_gaps and position < self.capacity:
            for piece in split_range(position, self.capacity - position, self.zero_size, self.align):
                yield (ZERO,) + piece

    def _verify_items(self):
        if self.extents is None or self.fill_gaps:
            scope = [(0, self.capacity)]
        else:
            scope = self._aligned_extents()
        for offset, length in scope:
            for piece in split_range(offset, length, self.request_size, self.preferred):
                yield (VERIFY,) + piece

    def zero_buffer(self, length):
        """A read-only zero-filled nbd.Buffer of ``length`` bytes, shared, one per length."""
        buf = self.zero_views.get(length)
        if buf is None:
            buf = self.zero_views[length] = nbd.Buffer.from_buffer(self.zero_view[:length])
        return buf

    def next_item(self, worker):
        items = self.work.take(BATCH)
        if not items:
            return None
        first = items[0]
        worker.local.extend(reversed(items[1:]))
        return first

    def fail(self, error):
        with self._fail_lock:
            if not self.failed:
                self.error = error
                self.failed = True

    def report(self, force=False):
        if self.progress is None:
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
            self.progress(done, moved)
        except Exception:  # progress is best effort, never fails a copy
            pass
        finally:
            self._report_lock.release()

    def _run(self, items):
        self._connect_more()
        if self.zero_view is None:
            self.zero_view = memoryview(bytearray(self.request_size))
            self.zero_views = {}
        self.work = _SafeIterator(items)
        self.failed = False
        self.error = None
        self.workers = [_Worker(self, index, src, dst) for index, (src, dst) in enumerate(self.pairs)]
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

    def copy(self):
        """Copy; return counters. Raises CopyIOError (nothing flushed, nothing committed)."""
        started = time.monotonic()
        self._run(self._copy_items())
        elapsed = time.monotonic() - started
        written = sum(w.written for w in self.workers)
        zeroed = sum(w.zeroed for w in self.workers)
        self.stats = {
            'bytes_written': written,
            'bytes_zeroed': zeroed,
            'bytes_skipped': max(0, self.capacity - written - zeroed),
            'retried_requests': sum(w.retried for w in self.workers),
            'copy_elapsed': elapsed,
        }
        if self.extents is None:
            self.extent_count = sum(w.data_runs for w in self.workers)
        return dict(self.stats)

    def flush(self):
        """Flush every target connection (each one when the target lacks multi-conn)."""
        if not self.target.can_flush:
            self.flushed = False
            return False
        for _src, dst in self.pairs:
            attempt = 0
            while True:
                try:
                    dst.flush()
                    break
                except nbd.Error as exc:
                    attempt += 1
                    if attempt > self.retries or (exc.errnum in PERMANENT_ERRNOS):
                        raise CopyIOError('flush of the target %s of %s failed after %d attempt%s: %s'
                                          % (self.target_uri, self.disk, attempt, '' if attempt == 1 else 's',
                                             exc.string),
                                          operation='flush target', disk=self.disk, errnum=exc.errnum,
                                          attempts=attempt)
                    time.sleep(min(MAX_RETRY_DELAY, self.retry_delay * (2 ** (attempt - 1))))
        self.flushed = True
        return True

    def verify(self):
        """Read back the copied scope from both ends and compare. Raises VerifyError."""
        self._run(self._verify_items())
        return sum(w.verified for w in self.workers)

    def close(self):
        """Disconnect. Drops every reference to the handles so that libnbd closes them now
        (pending callbacks refer to the workers, which refer to the handles)."""
        for src, dst in self.pairs:
            close_handle(src)
            close_handle(dst)
        for worker in self.workers:
            worker.src = worker.dst = None
            worker.completed = []
            worker.retry = []
            worker.local = []
        self.workers = []
        self.pairs = []

    def settings(self):
        return {
            'connections': self.connections,
            'request_size': self.request_size,
            'requests_in_flight': self.requests_in_flight,
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# --------------------------------------------------------------------------
# The whole sequence, as the module runs it
# --------------------------------------------------------------------------

def check_incremental_base(state, disk_key, header, target, sync_type, state_file):
    """Refuse an incremental copy whose base is not what the target holds.

    The extents of an incremental copy are relative to
    ``header['previous_change_id']``; applying them to a target synced to
    another changeId (or to another target) would silently corrupt it.
    """
    if sync_type != 'incremental' or state is None or disk_key is None:
        return
    entry = sync_state.disk_entry(state, disk_key)
    if entry is None:
        raise ValidationError('%s has no synced state for disk %s: an incremental copy needs the previous '
                              "cycle's changeId; run a full copy" % (state_file, disk_key),
                              operation='validate state', disk='disk %s' % disk_key)
    previous = header.get('previous_change_id')
    if previous and entry.get('change_id') and previous != entry['change_id']:
        raise ValidationError('the extents of disk %s are relative to changeId %s but %s records %s for it; '
                              'run a full copy' % (disk_key, previous, state_file, entry['change_id']),
                              operation='validate state', disk='disk %s' % disk_key)
    if entry.get('target') and entry['target'] != target:
        raise ValidationError('disk %s was synced to %s, not %s; an incremental copy needs the same target, '
                              'run a full copy' % (disk_key, entry['target'], target),
                              operation='validate state', disk='disk %s' % disk_key)


def copy_disk(source, target, extents=None, extents_file=None, sync_type=None, target_is_zero=False,
              connections=DEFAULT_CONNECTIONS, request_size=DEFAULT_REQUEST_SIZE,
              requests_in_flight=DEFAULT_REQUESTS_IN_FLIGHT, retries=DEFAULT_RETRIES,
              retry_delay=DEFAULT_RETRY_DELAY, verify='none', state_file=None, vm_uuid=None,
              disk_key=None, change_id=None, progress=None, progress_factory=None, check_mode=False,
              io_timeout=None):
    """Copy a disk and commit its changeId; return the module's result dict.

    ``progress_factory(total_bytes, sync_type, disk_key)`` may return an object with
    ``start()``, ``update(done, moved)`` and ``finish(ok, message)`` (the VMA
    ProgressReporter); ``progress`` is a plain ``(done, moved)`` callable.
    Order: validate (nothing written on error) -> copy -> flush -> verify ->
    commit. Any error before the commit leaves the state file untouched.
    """
    if verify not in VERIFY_CHOICES:
        raise ValidationError('verify is %r, expected one of %s' % (verify, ', '.join(VERIFY_CHOICES)),
                              operation='validate')
    extent_source, header = resolve_extents(extents, extents_file)
    if disk_key is None and header.get('disk_key') is not None:
        disk_key = header['disk_key']
    if not change_id and header.get('change_id'):
        change_id = header['change_id']
    if sync_type is not None and header.get('sync_type') and sync_type != header['sync_type']:
        # full over changed areas would zero the unchanged rest of the target;
        # incremental over allocated areas would leave stale data in the holes
        raise ValidationError('sync_type is %s but the extents file %s lists the areas of a %s copy; '
                              'leave sync_type unset or use an extents file of a %s copy'
                              % (sync_type, extents_file, header['sync_type'], sync_type), operation='validate')
    if sync_type is None:
        sync_type = header.get('sync_type') or ('full' if extent_source is None else 'incremental')
    if sync_type not in ('full', 'incremental'):
        raise ValidationError('sync_type is %r, expected full or incremental' % (sync_type,), operation='validate')
    if extent_source is None and sync_type == 'incremental':
        raise ValidationError('sync_type incremental needs extents or extents_file', operation='validate')
    disk = 'disk %s' % disk_key if disk_key is not None else 'disk'
    if state_file and (disk_key is None or not change_id):
        raise ValidationError('state_file needs disk_key and change_id (given or from the extents file header)',
                              operation='validate', disk=disk)
    state = None
    if state_file:
        try:
            state = sync_state.load(state_file)
        except sync_state.SyncStateError as exc:
            raise ValidationError(str(exc), operation='read state', disk=disk)
        if vm_uuid and state.get('vm_uuid') and state['vm_uuid'] != vm_uuid:
            raise ValidationError('sync state file %s belongs to VM %s, not %s' % (state_file, state['vm_uuid'],
                                                                                   vm_uuid),
                                  operation='read state', disk=disk)
        check_incremental_base(state, disk_key, header, target, sync_type, state_file)

    job = DiskCopy(source, target, extents=extent_source, fill_gaps=(sync_type == 'full'),
                   target_is_zero=target_is_zero, connections=connections, request_size=request_size,
                   requests_in_flight=requests_in_flight, retries=retries, retry_delay=retry_delay,
                   progress=progress, disk=disk, io_timeout=io_timeout)
    reporter = None
    result = {}
    try:
        job.open()
        if header.get('capacity_bytes') is not None and header['capacity_bytes'] != job.capacity:
            raise ValidationError('the extents file says %s has %d bytes but the source %s has %d'
                                  % (disk, header['capacity_bytes'], source, job.capacity),
                                  operation='validate extents', disk=disk)
        result.update({'sync_type': sync_type, 'capacity_bytes': job.capacity,
                       'extent_count': job.extent_count, 'disk_key': disk_key})
        result.update(job.settings())
        if check_mode:
            plan = job.plan()
            result.update({
                'changed': plan['data_bytes'] + plan['zero_bytes'] > 0,
                'plan': plan,
                'extent_count': plan['extent_count'],
                'bytes_written': 0, 'bytes_zeroed': 0, 'bytes_skipped': 0,
                'elapsed': 0.0, 'throughput_bps': 0, 'verified': False,
                'committed_change_id': None, 'state_updated': False,
            })
            return result
        if progress_factory is not None:
            reporter = progress_factory(job.scope_bytes, sync_type, disk_key)
            if reporter is not None:
                reporter.start()
                job.progress = _chain(progress, reporter.update)
        started = time.monotonic()
        job.copy()
        job.flush()
        verified = False
        if verify == 'checksum':
            job.verify()
            verified = True
        elapsed = time.monotonic() - started
        stats = job.stats
        result.update({
            'changed': stats['bytes_written'] + stats['bytes_zeroed'] > 0,
            'bytes_written': stats['bytes_written'],
            'bytes_zeroed': stats['bytes_zeroed'],
            'bytes_skipped': stats['bytes_skipped'],
            'extent_count': job.extent_count,
            'retried_requests': stats['retried_requests'],
            'elapsed': round(elapsed, 3),
            'throughput_bps': throughput(stats['bytes_written'], stats['copy_elapsed']),
            'verified': verified,
            'flushed': job.flushed,
            'committed_change_id': None,
            'state_updated': False,
        })
        if state_file:
            entry = sync_state.disk_entry(state, disk_key) if state else None
            if (entry and entry.get('change_id') == change_id and entry.get('target') == target
                    and entry.get('capacity_bytes') == job.capacity):
                result['committed_change_id'] = change_id
            else:
                try:
                    sync_state.commit_disk(state_file, vm_uuid, disk_key, change_id, job.capacity, target)
                except sync_state.SyncStateError as exc:
                    raise CommitError(str(exc), operation='commit changeId', disk=disk)
                result['committed_change_id'] = change_id
                result['state_updated'] = True
        if reporter is not None:
            reporter.finish(ok=True)
        return result
    except NbdCopyError as exc:
        if reporter is not None:
            reporter.finish(ok=False, message=exc.message)
        raise
    except BaseException:
        if reporter is not None:
            reporter.finish(ok=False, message='copy of %s interrupted' % disk)
        raise
    finally:
        job.close()
        if reporter is not None:
            result['warnings'] = list(getattr(reporter, 'warnings', []) or [])


def _chain(first, second):
    if first is None:
        return second

    def both(done, moved):
        first(done, moved)
        second(done, moved)
    return both


def progress_factory(reporter_class, params):
    """Return a ``progress_factory`` for :func:`copy_disk` building VMA reporters from module params.

    ``reporter_class`` is ``vma.ProgressReporter`` (passed in so that this
    module does not need ``requests``).
    """
    def factory(total_bytes, sync_type, disk_key):
        disk_id = params.get('disk_id')
        if not disk_id and disk_key is not None:
            disk_id = 'disk-%s' % disk_key
        return reporter_class(params['vma_url'], params.get('job_id'), disk_id, sync_type, total_bytes,
                              token=params.get('token'), validate_certs=params.get('validate_certs', True),
                              interval=params.get('progress_interval') or 2.0)
    return factory


def error_message(exc):
    """The failure message: names the operation, the disk and (for I/O) the offset."""
    message = getattr(exc, 'message', None) or str(exc)
    if isinstance(exc, CopyIOError) and exc.offset is not None:
        return message
    prefix = getattr(exc, 'operation', None)
    if not prefix:
        return message
    disk = getattr(exc, 'disk', None)
    if disk and disk not in message:
        prefix += ' of %s' % disk
    offset = getattr(exc, 'offset', None)
    if offset is not None and 'offset' not in message:
        prefix += ' at offset %d' % offset
    return '%s failed: %s' % (prefix, message)


def error_details(exc):
    """Structured fields of a failure for the module result."""
    details = {}
    for key in ('operation', 'disk', 'offset'):
        value = getattr(exc, key, None)
        if value is not None:
            details['failed_' + key if key != 'operation' else 'failed_operation'] = value
    return details
