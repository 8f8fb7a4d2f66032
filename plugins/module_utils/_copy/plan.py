# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policy of one copy, decided once: :class:`CopyPlan`, and the work it makes.

Like nbdcopy's ``main.c``: once both ends are open, what they negotiated and
what the caller asked for settle the alignment, the request and zero sizes,
the request length classes, the number of connections (several only when
both ends offer multi-conn), and what may be skipped. The plan is immutable
and is all a worker knows of the copy. :func:`copy_items` and
:func:`verify_items` turn it and the extents into the stream of requests.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import (
    COPY,
    PROBE,
    SEGMENT_SIZE,
    VERIFY,
    ZERO,
    ZERO_REQUEST_SIZE,
    align_down,
    align_extents,
    effective_request_size,
    length_classes,
    request_quantum,
    split_range,
)


class CopyPlan(object):
    """What every worker of one copy works with; read-only once made by :meth:`negotiate`."""

    __slots__ = (
        'disk', 'source_uri', 'target_uri', 'capacity', 'align', 'preferred', 'request_size', 'zero_size',
        'quantum', 'length_classes', 'connections', 'requests_in_flight', 'retries', 'retry_delay',
        'io_timeout', 'skip_zeros', 'zero_by_write', 'block_status', 'fill_gaps', 'whole_disk',
    )

    def __init__(self, **values):
        missing = set(self.__slots__) - set(values)
        if missing:
            raise TypeError('CopyPlan needs %s' % ', '.join(sorted(missing)))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError('a CopyPlan is read-only (%s)' % name)

    @classmethod
    def negotiate(cls, source, target, disk, source_uri, target_uri, request_size, connections,
                  requests_in_flight, retries, retry_delay, io_timeout, whole_disk, fill_gaps, target_is_zero):
        """The plan for ``source`` and ``target`` (:class:`~.endpoints.ServerInfo`) and the caller's settings."""
        align = max(source.block_min, target.block_min, 1)
        preferred = max(align, source.block_preferred or 1, target.block_preferred or 1)
        size = effective_request_size(request_size, align, (source.block_max, target.block_max))
        if preferred > size:
            preferred = align
        quantum = request_quantum(size, align)
        return cls(
            disk=disk, source_uri=source_uri, target_uri=target_uri, capacity=source.size,
            align=align, preferred=preferred, request_size=size,
            zero_size=max(size, align_down(ZERO_REQUEST_SIZE, align)),
            quantum=quantum, length_classes=length_classes(size, quantum, align),
            # Several connections only when both servers say that is consistent (multi-conn),
            # as nbdcopy does; a source like nbdkit-vddk gets one connection, many requests.
            connections=connections if source.can_multi_conn and target.can_multi_conn else 1,
            requests_in_flight=requests_in_flight, retries=retries, retry_delay=retry_delay,
            io_timeout=io_timeout,
            # holes and zeros are skipped only on a whole-disk copy onto a target known to be zero
            skip_zeros=bool(whole_disk and target_is_zero),
            zero_by_write=not target.can_zero,
            block_status=bool(whole_disk and source.can_block_status),
            fill_gaps=bool(fill_gaps and not whole_disk and not target_is_zero),
            whole_disk=bool(whole_disk),
        )

    def uri(self, role):
        return self.source_uri if role == 'source' else self.target_uri

    def as_dict(self):
        return dict((name, getattr(self, name)) for name in self.__slots__)


def aligned_extents(plan, extents):
    return align_extents(iter(extents), plan.align, plan.capacity)


def copy_items(plan, extents, start=0):
    """The requests of a copy: block-status walks of a whole disk, or the (aligned) extents and their gaps.

    ``start`` resumes a copy: what lies below it was copied already (a
    checkpoint's watermark, which falls on a request boundary).
    """
    if plan.whole_disk:
        if plan.block_status:
            for offset, length in split_range(start, plan.capacity - start, SEGMENT_SIZE, plan.align):
                yield (PROBE, offset, length)
        else:
            for offset, length in split_range(start, plan.capacity - start, plan.request_size, plan.preferred):
                yield (COPY, offset, length)
        return
    position = start
    for offset, length in aligned_extents(plan, extents):
        if offset + length <= start:
            continue
        if offset < start:
            offset, length = start, offset + length - start
        if plan.fill_gaps and offset > position:
            for piece in split_range(position, offset - position, plan.zero_size, plan.align):
                yield (ZERO,) + piece
        for piece in split_range(offset, length, plan.request_size, plan.preferred):
            yield (COPY,) + piece
        position = offset + length
    if plan.fill_gaps and position < plan.capacity:
        for piece in split_range(position, plan.capacity - position, plan.zero_size, plan.align):
            yield (ZERO,) + piece


def bytes_below(plan, extents, watermark):
    """How much of the copy's scope lies below ``watermark`` (the part a resumed copy skips)."""
    if plan.whole_disk or plan.fill_gaps:
        return min(watermark, plan.capacity)
    total = 0
    for offset, length in aligned_extents(plan, extents):
        if offset >= watermark:
            break
        total += min(offset + length, watermark) - offset
    return total


def verify_items(plan, extents):
    """The read-back requests of a verify: the whole disk, or the copied extents."""
    if plan.whole_disk or plan.fill_gaps:
        scope = [(0, plan.capacity)]
    else:
        scope = aligned_extents(plan, extents)
    for offset, length in scope:
        for piece in split_range(offset, length, plan.request_size, plan.preferred):
            yield (VERIFY,) + piece
