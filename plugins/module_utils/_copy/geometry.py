# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure geometry of a copy: sizes, alignment, request splitting, block-status runs, length classes.

No I/O and no state: unit-tested without servers. The constants are the
engine's limits and defaults (picked from benchmarks/copy_bench.py runs, see
benchmarks/README.md).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import bisect
import errno
import os

from ansible_collections.migratekit.migration.plugins.module_utils.extents import coalesce_sorted

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
CHECKPOINT_INTERVAL = 5.0          # seconds of copying between two checkpoints, at most ...
CHECKPOINT_BYTES = 1 * GiB         # ... and bytes done between two checkpoints, at most

VERIFY_CHOICES = ('none', 'checksum')

# Request kinds
COPY, WRITE, ZERO, PROBE, VERIFY, FLUSH = range(6)
OPERATIONS = {COPY: 'read from source', WRITE: 'write to target', ZERO: 'write zeroes to target',
              PROBE: 'block status of source', VERIFY: 'verify read', FLUSH: 'flush target'}

STATE_HOLE = 1
STATE_ZERO = 2
BASE_ALLOCATION = 'base:allocation'

# errno values that retrying cannot fix (a bad request, a full or read-only
# target, a dropped connection: the engine does not reconnect).
PERMANENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    'EINVAL', 'EPERM', 'EACCES', 'EROFS', 'ENOSPC', 'EFBIG', 'EOVERFLOW', 'EDQUOT',
    'ENOTCONN', 'ESHUTDOWN', 'EPIPE', 'ECONNRESET', 'EBADF', 'ERANGE') if hasattr(errno, name))
UNSUPPORTED_ERRNOS = frozenset(getattr(errno, name) for name in ('ENOTSUP', 'EOPNOTSUPP') if hasattr(errno, name))


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


def merge_ranges(ranges):
    """Sorted, merged ``[start, end)`` pairs from ``(offset, length)`` or ``[start, end)`` ones (see callers)."""
    merged = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged


def uncovered(offset, length, covered):
    """The parts of ``[offset, offset + length)`` outside the sorted, merged ``[start, end)`` pairs ``covered``."""
    parts = []
    position, end = offset, offset + length
    index = bisect.bisect_right(covered, [offset, float('inf')]) - 1
    index = max(index, 0)
    while position < end and index < len(covered):
        start, stop = covered[index]
        if stop <= position:
            index += 1
            continue
        if start >= end:
            break
        if start > position:
            parts.append((position, start - position))
        position = max(position, stop)
        index += 1
    if position < end:
        parts.append((position, end - position))
    return parts
