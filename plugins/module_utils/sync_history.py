# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM's sync history, its change rate and its predicted cutover downtime.

The history is one JSON file per VM next to its sync state (``VM.json`` ->
``VM.history.json``, see docs/contracts.md): one record per cycle, each with
one entry per disk. :func:`append` adds a record under the same discipline
as the state file (an exclusive ``flock`` on a ``.lock`` file beside it, then
temp file, fsync, rename, fsync of the directory) and keeps the last
:data:`MAX_CYCLES` records.

:func:`predict` is the downtime model of docs/cutover-planning.md::

    predicted = guest shutdown + cycle overhead + final delta / throughput
    final delta (per disk) = change rate x seconds since the disk's last sync

The change rate of a disk is the bytes an incremental cycle found changed
divided by the seconds between its snapshot and the snapshot of the disk's
previous committed cycle; the shutdown, the overhead (a cycle's wall time
less its copies) and the throughput (bytes moved / copy seconds) are
measured from the VM's own cycles, with the documented defaults
(:data:`DEFAULTS`) until there are any.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import os

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state

HISTORY_VERSION = 1
MAX_CYCLES = 500
# Measurements used: the last RATE_WINDOW intervals of a disk for its change
# rate, the last THROUGHPUT_WINDOW copies that moved bytes for its
# throughput, the median of the last OVERHEAD_WINDOW cycles for the overhead.
RATE_WINDOW = 3
THROUGHPUT_WINDOW = 5
OVERHEAD_WINDOW = 5
# Before the VM has cycles of its own (documented in docs/cutover-planning.md).
DEFAULTS = {
    'shutdown_seconds': 60.0,     # a guest OS shutdown through VMware Tools
    'overhead_seconds': 30.0,     # snapshot, CBT query, NBD servers, snapshot removal
    'throughput_bps': 50000000.0,  # about 400 Mbit/s, under one NBDSSL stream's 1 Gbit/s
}
CYCLES = ('full_sync', 'incremental_sync', 'presync', 'cutover')
SYNC_TYPES = ('full', 'incremental')


class SyncHistoryError(MigratekitError):
    """The history file cannot be read or written, or a record is malformed; the message names it."""


def history_path(state_file):
    """The history file of the VM whose state file is ``state_file``: ``VM.json`` -> ``VM.history.json``."""
    base, ext = os.path.splitext(state_file)
    if ext != '.json':
        base = state_file
    return base + '.history.json'


def empty_history(vm_uuid=None):
    return {'version': HISTORY_VERSION, 'vm_uuid': vm_uuid, 'cycles': []}


def load(path):
    """The history in ``path``, or an empty one if the file does not exist."""
    history = sync_state.read_json(path, what='sync history file', error=SyncHistoryError)
    if history is None:
        return empty_history()
    if not isinstance(history, dict) or not isinstance(history.get('cycles', []), list):
        raise SyncHistoryError('sync history file %s: expected a JSON object with a "cycles" list' % path)
    history.setdefault('version', HISTORY_VERSION)
    history.setdefault('vm_uuid', None)
    history.setdefault('cycles', [])
    return history


# ---------------------------------------------------------------- times

def parse_time(value, what='time'):
    """A UTC datetime from ISO 8601 (``2026-12-02T01:40:00Z``, with or without fraction or offset), or None."""
    if value in (None, ''):
        return None
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None)
    text = str(value).strip()
    offset = datetime.timedelta(0)
    if text.endswith('Z'):
        text = text[:-1]
    elif len(text) > 6 and text[-6] in '+-' and text[-3] == ':':
        sign = 1 if text[-6] == '+' else -1
        offset = sign * datetime.timedelta(hours=int(text[-5:-3]), minutes=int(text[-2:]))
        text = text[:-6]
    for fmt in ('%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M:%S'):
        try:
            return datetime.datetime.strptime(text, fmt) - offset
        except ValueError:
            continue
    raise SyncHistoryError('%s %r is not an ISO 8601 time (expected e.g. 2026-12-02T01:40:00Z)' % (what, value))


def format_time(moment):
    return moment.strftime('%Y-%m-%dT%H:%M:%S.%fZ') if moment else None


def _seconds(later, earlier):
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds(), 3)


# ---------------------------------------------------------------- records

def _number(value, what, integer=False):
    if value in (None, ''):
        return None
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise SyncHistoryError('%s must be a number, got %r' % (what, value))
    if number < 0:
        raise SyncHistoryError('%s must not be negative, got %r' % (what, value))
    return number


def normalize_disk(disk, where):
    """One disk's entry of a cycle record, checked: the message names the record and the field."""
    if not isinstance(disk, dict):
        raise SyncHistoryError('%s: a disk entry must be a dict, got %r' % (where, disk))
    try:
        key = int(disk.get('key'))
    except (TypeError, ValueError):
        raise SyncHistoryError('%s: disk entry without a device key (key), got %r' % (where, disk.get('key')))
    where = '%s disk %d' % (where, key)
    sync_type = disk.get('sync_type') or None
    if sync_type is not None and sync_type not in SYNC_TYPES:
        raise SyncHistoryError('%s: sync_type must be one of %s, got %r' % (where, ', '.join(SYNC_TYPES), sync_type))
    started = parse_time(disk.get('started'), where + ' started')
    finished = parse_time(disk.get('finished'), where + ' finished')
    duration = _number(disk.get('duration'), where + ' duration')
    if duration is None:
        duration = _seconds(finished, started)
    moved = _number(disk.get('bytes_moved'), where + ' bytes_moved', integer=True) or 0
    throughput = _number(disk.get('throughput_bps'), where + ' throughput_bps')
    if not throughput and moved and duration:
        throughput = moved / duration
    return {
        'key': key,
        'label': disk.get('label') or '',
        'sync_type': sync_type,
        'started': format_time(started),
        'finished': format_time(finished),
        'changed_bytes': _number(disk.get('changed_bytes'), where + ' changed_bytes', integer=True),
        'bytes_moved': moved,
        'duration': duration,
        'throughput_bps': round(throughput or 0.0, 1),
        'change_id': disk.get('change_id') or None,
        'resumed': bool(disk.get('resumed')),
        'copied': bool(disk.get('copied')),
    }


def normalize_record(record):
    """A cycle record (see docs/contracts.md), checked and with its derived times (duration, downtime)."""
    if not isinstance(record, dict):
        raise SyncHistoryError('a cycle record must be a dict, got %r' % (record,))
    cycle = record.get('cycle')
    if cycle not in CYCLES:
        raise SyncHistoryError('cycle record: cycle must be one of %s, got %r' % (', '.join(CYCLES), cycle))
    where = 'cycle record (%s)' % cycle
    started = parse_time(record.get('started'), where + ' started')
    finished = parse_time(record.get('finished'), where + ' finished')
    if started is None or finished is None:
        raise SyncHistoryError('%s: started and finished are required' % where)
    snapshot_at = parse_time(record.get('snapshot_at'), where + ' snapshot_at')
    discover_at = parse_time(record.get('discover_at'), where + ' discover_at')
    power_off_at = parse_time(record.get('power_off_at'), where + ' power_off_at')
    committed_at = parse_time(record.get('committed_at'), where + ' committed_at')
    disks = record.get('disks') or []
    if not isinstance(disks, list):
        raise SyncHistoryError('%s: disks must be a list, got %r' % (where, disks))
    prediction = record.get('prediction') or None
    if prediction is not None and not isinstance(prediction, dict):
        raise SyncHistoryError('%s: prediction must be a dict, got %r' % (where, prediction))
    failed = bool(record.get('failed'))
    entries = sorted((normalize_disk(disk, where) for disk in disks), key=lambda d: d['key'])
    # the copies run one after the other from copy_started: a disk without times of its own gets them from there
    clock = parse_time(record.get('copy_started'), where + ' copy_started')
    for entry in entries:
        if clock is None or not entry['copied'] or entry['duration'] is None:
            continue
        if entry['started'] is None:
            entry['started'] = format_time(clock)
            entry['finished'] = format_time(clock + datetime.timedelta(seconds=entry['duration']))
        clock = parse_time(entry['finished'])
    return {
        'cycle': cycle,
        'started': format_time(started),
        'finished': format_time(finished),
        'duration': _seconds(finished, started),
        'snapshot_at': format_time(snapshot_at),
        'discover_at': format_time(discover_at),
        'failed': failed,
        'message': str(record.get('message') or '')[:1000],
        'power_off_at': format_time(power_off_at),
        'shutdown_seconds': _number(record.get('shutdown_seconds'), where + ' shutdown_seconds'),
        'committed_at': format_time(committed_at),
        # the cutover's downtime: from the power-off request to the last disk's commit
        'downtime_seconds': None if failed else _seconds(committed_at, power_off_at),
        'prediction': prediction,
        'disks': entries,
    }


def append(path, record, vm_uuid=None, max_cycles=MAX_CYCLES):
    """Append a cycle record to the history in ``path``; keep the last ``max_cycles``; return the stored record."""
    if int(max_cycles) < 1:
        raise SyncHistoryError('max_cycles must be at least 1, got %r' % (max_cycles,))
    entry = normalize_record(record)
    with sync_state._locked(path):  # pylint: disable=protected-access
        history = load(path)
        if history.get('vm_uuid') and vm_uuid and history['vm_uuid'] != vm_uuid:
            # another VM's (its state file was kept aside too): kept beside, never deleted; this VM starts anew
            entry['kept_aside'] = _keep_aside(path)
            history = empty_history()
        if vm_uuid:
            history['vm_uuid'] = vm_uuid
        cycles = history['cycles']
        entry['seq'] = (cycles[-1].get('seq', len(cycles)) + 1) if cycles else 1
        cycles.append(entry)
        history['cycles'] = cycles[-int(max_cycles):]
        sync_state.write_atomic(path, history, what='sync history file')
    return entry


def _keep_aside(path):
    stamp = datetime.datetime.utcnow().strftime('%Y%m%dT%H%M%SZ')
    aside, index = '%s.aside-%s' % (path, stamp), 1
    while os.path.exists(aside):
        index += 1
        aside = '%s.aside-%s-%d' % (path, stamp, index)
    try:
        os.rename(path, aside)
    except OSError as exc:
        raise SyncHistoryError('cannot keep sync history file %s aside as %s: %s' % (path, aside, exc))
    return aside


# ---------------------------------------------------------------- model

def _median(values):
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2.0


def disk_series(cycles):
    """Per disk key, its points in time order: one per committed disk of a successful cycle.

    A point: ``seq``, ``cycle``, ``at`` (the snapshot time), ``sync_type``,
    ``changed_bytes``, ``bytes_moved``, ``duration``, ``throughput_bps``,
    ``interval`` (seconds since the disk's previous committed snapshot) and
    ``change_rate_bps`` (changed bytes / interval, incremental cycles only).
    """
    series = {}
    last_at = {}
    for cycle in cycles:
        at = parse_time(cycle.get('snapshot_at')) or parse_time(cycle.get('started'))
        if cycle.get('failed') or at is None:
            continue
        for disk in cycle.get('disks') or []:
            if not disk.get('change_id'):
                continue
            key = int(disk['key'])
            interval = _seconds(at, last_at.get(key))
            rate = None
            if (disk.get('sync_type') == 'incremental' and interval and interval > 0
                    and disk.get('changed_bytes') is not None):
                rate = disk['changed_bytes'] / interval
            series.setdefault(key, []).append({
                'seq': cycle.get('seq'),
                'cycle': cycle.get('cycle'),
                'at': format_time(at),
                'sync_type': disk.get('sync_type'),
                'changed_bytes': disk.get('changed_bytes'),
                'bytes_moved': disk.get('bytes_moved') or 0,
                'duration': disk.get('duration'),
                'throughput_bps': disk.get('throughput_bps') or 0,
                'interval': interval,
                'change_rate_bps': None if rate is None else round(rate, 1),
            })
            last_at[key] = at
    return series


def _disk_rate(points):
    measured = [p for p in points if p['change_rate_bps'] is not None][-RATE_WINDOW:]
    if not measured:
        return None
    return sum(p['changed_bytes'] for p in measured) / sum(p['interval'] for p in measured)


def _disk_throughput(points):
    moved = [p for p in points if p['bytes_moved'] and p['duration']][-THROUGHPUT_WINDOW:]
    if not moved:
        return None
    return sum(p['bytes_moved'] for p in moved) / sum(p['duration'] for p in moved)


def _overhead(cycles):
    """Median over the last successful cycles of what a cutover's downtime holds besides the shutdown and the copies.

    That is the time from the snapshot request (``discover_at``) to the last
    commit less the copies; a record without those times counts its whole
    wall time less its copies and shutdown.
    """
    values = []
    for cycle in cycles:
        if cycle.get('failed') or cycle.get('duration') is None:
            continue
        copies = sum(disk.get('duration') or 0 for disk in cycle.get('disks') or [] if disk.get('copied'))
        span = _seconds(parse_time(cycle.get('committed_at')), parse_time(cycle.get('discover_at')))
        if span is not None:
            values.append(max(0.0, span - copies))
        else:
            values.append(max(0.0, cycle['duration'] - copies - (cycle.get('shutdown_seconds') or 0)))
    return _median(values[-OVERHEAD_WINDOW:])


def _shutdown(cycles):
    measured = [c['shutdown_seconds'] for c in cycles if c.get('shutdown_seconds') is not None]
    return measured[-1] if measured else None


def last_throughput(cycles):
    """Bytes moved per copy second in the VM's last cycle that moved bytes, or None."""
    for cycle in reversed(cycles):
        disks = [d for d in cycle.get('disks') or [] if d.get('bytes_moved') and d.get('duration')]
        if disks and not cycle.get('failed'):
            return round(sum(d['bytes_moved'] for d in disks) / sum(d['duration'] for d in disks), 1)
    return None


def predict(state, cycles, now=None, max_downtime=None, defaults=None):
    """The predicted cutover downtime of a VM and its parts (docs/cutover-planning.md).

    ``state``: the VM's sync state (the disks to cut over are its committed
    disks); ``cycles``: its history; ``defaults`` override :data:`DEFAULTS`
    (keys ``shutdown_seconds``, ``overhead_seconds``, ``throughput_bps``).
    """
    now = parse_time(now) if now is not None else datetime.datetime.utcnow()
    chosen = dict(DEFAULTS)
    chosen.update(dict((k, float(v)) for k, v in (defaults or {}).items() if v is not None))
    series = disk_series(cycles)
    fallback_throughput = _disk_throughput([p for points in series.values() for p in points])

    disks = {}
    for key in sorted(int(k) for k in (state.get('disks') or {})):
        entry = state['disks'][str(key)]
        points = series.get(key, [])
        rate = _disk_rate(points)
        throughput = _disk_throughput(points)
        throughput_source = 'measured'
        if throughput is None:
            throughput, throughput_source = fallback_throughput, 'measured (other disks)'
        if throughput is None:
            throughput, throughput_source = chosen['throughput_bps'], 'default'
        last = parse_time(points[-1]['at']) if points else parse_time(entry.get('synced_at'))
        since = max(0.0, _seconds(now, last)) if last else None
        delta = (rate or 0.0) * (since or 0.0)
        disks[str(key)] = {
            'change_rate_bps': None if rate is None else round(rate, 1),
            'change_rate_source': 'measured' if rate is not None else 'none yet (taken as 0)',
            'last_sync': format_time(last),
            'since_last_sync_seconds': since,
            'final_delta_bytes': int(delta),
            'throughput_bps': round(throughput, 1),
            'throughput_source': throughput_source,
            'final_delta_seconds': round(delta / throughput, 3) if throughput else None,
        }
    shutdown, overhead = _shutdown(cycles), _overhead(cycles)
    parts = {
        'shutdown_seconds': round(shutdown if shutdown is not None else chosen['shutdown_seconds'], 3),
        'shutdown_source': 'measured' if shutdown is not None else 'default',
        'overhead_seconds': round(overhead if overhead is not None else chosen['overhead_seconds'], 3),
        'overhead_source': 'measured' if overhead is not None else 'default',
        # the disks are copied one after the other
        'final_delta_seconds': round(sum(d['final_delta_seconds'] or 0 for d in disks.values()), 3),
        'final_delta_bytes': sum(d['final_delta_bytes'] for d in disks.values()),
    }
    rates = [d['change_rate_bps'] for d in disks.values() if d['change_rate_bps'] is not None]
    predicted = parts['shutdown_seconds'] + parts['overhead_seconds'] + parts['final_delta_seconds']
    budget = float(max_downtime) if max_downtime else None
    result = {
        'at': format_time(now),
        'predicted_cutover_seconds': round(predicted, 3),
        'change_rate_bps': round(sum(rates), 1) if rates else None,
        'max_downtime': budget,
        'ready': None if budget is None else predicted <= budget,
        'disks': disks,
    }
    result.update(parts)
    return result


def explain(prediction):
    """The prediction and its parts in one line, for the gate's message and the play's summary."""
    def mib(value):
        return '%.1f MiB' % ((value or 0) / 1048576.0)
    disks = ', '.join('disk %s: %s/s x %ss = %s at %s/s' % (
        key, mib(d['change_rate_bps']), int(d['since_last_sync_seconds'] or 0), mib(d['final_delta_bytes']),
        mib(d['throughput_bps']), ) for key, d in sorted(prediction['disks'].items()))
    return ('predicted downtime %.0f s = guest shutdown %.0f s (%s) + cycle overhead %.0f s (%s) '
            '+ final delta %s / throughput = %.1f s (%s)'
            % (prediction['predicted_cutover_seconds'], prediction['shutdown_seconds'], prediction['shutdown_source'],
               prediction['overhead_seconds'], prediction['overhead_source'], mib(prediction['final_delta_bytes']),
               prediction['final_delta_seconds'], disks or 'no disks'))


# ---------------------------------------------------------------- the sync_history module

HISTORY_SPEC = ArgumentSpec(dict(
    state_file=dict(type='path', required=True),
    history_file=dict(type='path'),
    vm_uuid=dict(type='str'),
    record=dict(type='dict', required=True),
    max_cycles=dict(type='int', default=MAX_CYCLES),
))

LIBRARIES = ()


def sync_history_module(options, check_mode=False):
    """The sync_history module (:data:`HISTORY_SPEC`): append one cycle record to the VM's history."""
    path = options.history_file or history_path(options.state_file)
    if check_mode:
        entry = normalize_record(options.record)
        return {'changed': True, 'history_file': path, 'record': entry}
    entry = append(path, options.record, vm_uuid=options.vm_uuid or None, max_cycles=options.max_cycles)
    return {'changed': True, 'history_file': path, 'record': entry, 'cycles': len(load(path)['cycles'])}


# ---------------------------------------------------------------- the sync_state_info module

INFO_SPEC = ArgumentSpec(dict(
    state_file=dict(type='path', required=True),
    history_file=dict(type='path'),
    history_cycles=dict(type='int', default=MAX_CYCLES),
    max_downtime=dict(type='float', default=0),
    default_shutdown_seconds=dict(type='float', default=DEFAULTS['shutdown_seconds']),
    default_overhead_seconds=dict(type='float', default=DEFAULTS['overhead_seconds']),
    default_throughput_bps=dict(type='float', default=DEFAULTS['throughput_bps']),
))


def vm_report(state_file, history_file=None, history_cycles=MAX_CYCLES, max_downtime=None, defaults=None, now=None):
    """Everything the cutover and the report read about one VM: its state, history, rate and prediction."""
    if history_cycles < 0:
        raise SyncHistoryError('history_cycles must be 0 or more, got %r' % (history_cycles,))
    described = sync_state.describe(state_file)
    path = history_file or history_path(state_file)
    cycles = load(path)['cycles']
    prediction = predict({'disks': described['disks']}, cycles, now=now, max_downtime=max_downtime,
                         defaults=defaults)
    series = disk_series(cycles)
    described.update({
        'history_file': path,
        'history': cycles[-history_cycles:] if history_cycles else [],
        'history_count': len(cycles),
        'series': dict((str(key), points[-history_cycles:] if history_cycles else [])
                       for key, points in series.items()),
        'change_rate_bps': prediction['change_rate_bps'],
        'last_throughput_bps': last_throughput(cycles),
        'predicted_cutover_seconds': prediction['predicted_cutover_seconds'],
        'ready': prediction['ready'],
        'prediction': prediction,
        'prediction_text': explain(prediction),
    })
    return described


def sync_state_info_module(options, check_mode=False):
    """The sync_state_info module (:data:`INFO_SPEC`): read-only, the same in check mode."""
    if options.max_downtime < 0:
        raise SyncHistoryError('max_downtime must be 0 (no budget) or a number of seconds, got %r'
                               % (options.max_downtime,))
    defaults = {'shutdown_seconds': options.default_shutdown_seconds,
                'overhead_seconds': options.default_overhead_seconds,
                'throughput_bps': options.default_throughput_bps}
    for name, value in sorted(defaults.items()):
        if value < 0 or (name == 'throughput_bps' and value == 0):
            raise SyncHistoryError('default_%s must be a positive number, got %r' % (name, value))
    result = vm_report(options.state_file, history_file=options.history_file,
                       history_cycles=options.history_cycles, max_downtime=options.max_downtime or None,
                       defaults=defaults)
    result['changed'] = False
    return result
