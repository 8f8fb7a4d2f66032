# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Extent lists: merge, clip, split into requests, and the per-disk extents file.

An extent is an ``(offset, length)`` pair of byte positions on a disk. The
extents file is JSON written one extent per line, so that a reader can stream
a million extents without holding them (see docs/contracts.md).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import tempfile

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

EXTENTS_KEY_LINE = '"extents": ['


class ExtentsError(MigratekitError, ValueError):
    """An extent list or extents file is not usable; the message says why."""


def merge_extents(extents):
    """Yield sorted extents with overlapping and adjacent ones merged.

    ``extents`` may be unsorted; zero-length extents are dropped. Sorting needs
    the whole list, so callers with a huge, already sorted stream should use
    :func:`coalesce_sorted` instead.
    """
    return coalesce_sorted(sorted(e for e in extents if e[1] > 0))


def coalesce_sorted(extents):
    """Merge overlapping or adjacent extents of an already sorted stream."""
    cur_start = cur_end = None
    for offset, length in extents:
        if length <= 0:
            continue
        end = offset + length
        if cur_start is None:
            cur_start, cur_end = offset, end
        elif offset < cur_start:
            raise ExtentsError('extents are not sorted: offset %d comes after %d' % (offset, cur_start))
        elif offset <= cur_end:
            cur_end = max(cur_end, end)
        else:
            yield (cur_start, cur_end - cur_start)
            cur_start, cur_end = offset, end
    if cur_start is not None:
        yield (cur_start, cur_end - cur_start)


def clip_extents(extents, capacity):
    """Yield the parts of ``extents`` that lie inside ``[0, capacity)``."""
    for offset, length in extents:
        end = min(offset + length, capacity)
        start = max(offset, 0)
        if end > start:
            yield (start, end - start)


def validate_extents(extents, capacity, what='extents'):
    """Yield ``extents`` unchanged, raising ExtentsError on the first bad one.

    Bad means: not a pair of non-negative integers, zero length, outside the
    disk, or not sorted and disjoint.
    """
    previous_end = 0
    for index, extent in enumerate(extents):
        try:
            offset, length = extent
        except (TypeError, ValueError):
            raise ExtentsError('%s[%d] is %r, expected [offset, length]' % (what, index, extent))
        if not (_is_int(offset) and _is_int(length)) or offset < 0 or length <= 0:
            raise ExtentsError('%s[%d] is %r, expected non-negative integers with a positive length'
                               % (what, index, extent))
        if offset + length > capacity:
            raise ExtentsError('%s[%d] = [%d, %d] ends at %d, beyond the disk size %d'
                               % (what, index, offset, length, offset + length, capacity))
        if offset < previous_end:
            raise ExtentsError('%s[%d] = [%d, %d] overlaps or precedes the previous extent (sorted, '
                               'disjoint extents expected)' % (what, index, offset, length))
        previous_end = offset + length
        yield (offset, length)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def split_extents(extents, max_request, alignment=1):
    """Yield requests no longer than ``max_request`` covering ``extents``.

    Request boundaries inside an extent fall on multiples of ``alignment``
    (the server's preferred block size) where possible, so requests stay
    aligned after an unaligned extent start.
    """
    if max_request <= 0:
        raise ExtentsError('request size must be positive, got %d' % max_request)
    for offset, length in extents:
        end = offset + length
        while offset < end:
            step_end = min(end, offset + max_request)
            if step_end < end and alignment > 1:
                aligned = step_end - step_end % alignment
                if aligned > offset:
                    step_end = aligned
            yield (offset, step_end - offset)
            offset = step_end


def total_length(extents):
    return sum(length for _offset, length in extents)


def write_extents_file(path, header, extents):
    """Write an extents file atomically; return ``(extent_count, changed_bytes)``.

    ``header`` holds the other keys (disk_key, capacity_bytes, change_id,
    previous_change_id, sync_type). ``extents`` may be any iterable of sorted,
    merged extents; it is consumed once.
    """
    extents = list(extents)
    header = dict(header)
    header['extent_count'] = len(extents)
    header['changed_bytes'] = total_length(extents)
    header.pop('extents', None)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix='.extents-', dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            head = json.dumps(header, sort_keys=True)
            handle.write(head[:-1] + ', ' + EXTENTS_KEY_LINE + '\n')
            for index, (offset, length) in enumerate(extents):
                handle.write('[%d, %d]%s\n' % (offset, length, ',' if index < len(extents) - 1 else ''))
            handle.write(']}\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp_path, path)
    except BaseException:
        _unlink_quietly(tmp_path)
        raise
    return header['extent_count'], header['changed_bytes']


def open_extents_file(path):
    """Return ``(header, extents_iterator)`` for an extents file.

    Files in the streaming layout written by :func:`write_extents_file` are
    read line by line; any other valid JSON with the same keys is loaded
    whole. The iterator validates order and the disk size as it goes.
    """
    try:
        handle = open(path)
    except (IOError, OSError) as exc:
        raise ExtentsError('cannot read extents file %s: %s' % (path, exc))
    with handle:
        first = handle.readline()
    if first.rstrip().endswith(EXTENTS_KEY_LINE):
        try:
            header = json.loads(first.rstrip()[:-len(EXTENTS_KEY_LINE)].rstrip().rstrip(',') + '}')
        except ValueError as exc:
            raise ExtentsError('extents file %s has a malformed header: %s' % (path, exc))
        _check_header(path, header)
        _check_complete(path)
        return header, validate_extents(_stream_lines(path, header.get('extent_count')),
                                        header['capacity_bytes'], path)
    try:
        with open(path) as handle:
            data = json.load(handle)
    except ValueError as exc:
        raise ExtentsError('extents file %s is not valid JSON: %s' % (path, exc))
    if not isinstance(data, dict) or not isinstance(data.get('extents'), list):
        raise ExtentsError('extents file %s must be a JSON object with an "extents" list' % path)
    extents = data.pop('extents')
    _check_header(path, data)
    return data, validate_extents(extents, data['capacity_bytes'], path)


def _check_header(path, header):
    capacity = header.get('capacity_bytes')
    if not _is_int(capacity) or capacity < 0:
        raise ExtentsError('extents file %s: capacity_bytes is %r, expected a non-negative integer'
                           % (path, capacity))


def _check_complete(path):
    """Refuse a streaming-layout file that does not end with its closing ``]}`` (cut short)."""
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16))
        if not handle.read().rstrip().endswith(b']}'):
            raise ExtentsError('extents file %s is truncated: it does not end with "]}"' % path)


def _stream_lines(path, expected_count=None):
    count = 0
    with open(path) as handle:
        handle.readline()
        for line in handle:
            line = line.strip().rstrip(',')
            if not line or line == ']}':
                continue
            try:
                extent = tuple(json.loads(line))
            except ValueError:
                raise ExtentsError('extents file %s: bad extent line %r' % (path, line[:80]))
            count += 1
            yield extent
    if expected_count is not None and count != expected_count:
        raise ExtentsError('extents file %s holds %d extents, its header says extent_count %d'
                           % (path, count, expected_count))


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
