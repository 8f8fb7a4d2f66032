# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One disk's copy job: :class:`DiskCopy` (open, preview, copy, flush, verify, close) and
:func:`run_copy`, the whole sequence a module runs (validate, copy, flush, verify, commit).

Nothing is written before :meth:`DiskCopy.open` and the input checks
succeeded; the changeId is committed only after the last write and the flush.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import time

from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils._copy.endpoints import (
    HAS_NBD,
    NBD_IMPORT_ERROR,
    ServerInfo,
    close_handle,
    nbd,
    open_handle,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.errors import (
    CommitError,
    ConnectError,
    CopyIOError,
    NbdCopyError,
    ValidationError,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import (
    BASE_ALLOCATION,
    DEFAULT_IO_TIMEOUT,
    DEFAULT_RETRY_DELAY,
    MAX_CONNECTIONS,
    MAX_REQUEST_SIZE,
    MAX_REQUESTS_IN_FLIGHT,
    MAX_RETRY_DELAY,
    MIN_REQUEST_SIZE,
    PERMANENT_ERRNOS,
    SEGMENT_SIZE,
    VERIFY_CHOICES,
    align_runs,
    runs_from_block_status,
    throughput,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy import checkpoint
from ansible_collections.migratekit.migration.plugins.module_utils._copy.plan import (
    CopyPlan,
    aligned_extents,
    bytes_below,
    copy_items,
    verify_items,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.shared import SharedState
from ansible_collections.migratekit.migration.plugins.module_utils.extents import (
    ExtentsError,
    merge_extents,
    open_extents_file,
    validate_extents,
)


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


class DiskCopy(object):
    """Copy one disk from ``options.source`` to ``options.target`` (NBD URIs).

    ``options`` give the engine settings (``connections``, ``request_size``,
    ``requests_in_flight``, ``retries``, ``io_timeout``, ``target_is_zero``).
    ``extents``: None for the whole disk, else a re-iterable of sorted, disjoint
    ``(offset, length)`` pairs (a list, or :class:`ExtentsFile`).
    ``fill_gaps``: with extents, also write zeros outside them (a full copy from
    allocated extents onto a target not known to be zero).
    ``progress``: callable ``(bytes_done, bytes_moved)``, called as requests
    complete (throttled) from worker threads; it must be cheap.

    Use: ``open()`` (connect, validate, settle :attr:`plan`; nothing written),
    ``preview()``, ``copy()``, ``flush()``, ``verify()``, ``close()``.
    """

    def __init__(self, options, extents=None, fill_gaps=False, progress=None, disk='disk',
                 retry_delay=DEFAULT_RETRY_DELAY):
        if not HAS_NBD:
            raise NbdCopyError('the nbd Python module (Debian package python3-libnbd) is required: %s'
                               % NBD_IMPORT_ERROR, operation='import nbd', disk=disk)
        self.options = options
        self.extents = extents
        self.fill_gaps = fill_gaps
        self.progress = progress
        self.disk = disk
        self.retry_delay = float(retry_delay)
        self._check_settings()
        self.plan = None
        self.source = None
        self.target = None
        self.pairs = []
        self.workers = []
        self.capacity = None
        self.extent_count = 0
        self.extent_bytes = 0
        self.scope_bytes = 0       # bytes the copy covers (progress total)
        self.flushed = False
        self.zero_view = None
        self.stats = {}
        self.shared = None
        self.resumed_bytes = 0

    def _check_settings(self):
        options = self.options

        def bad(name, value, expected):
            raise ValidationError('%s is %r, expected %s' % (name, value, expected), operation='validate',
                                  disk=self.disk)
        if not 1 <= options.connections <= MAX_CONNECTIONS:
            bad('connections', options.connections, 'an integer from 1 to %d' % MAX_CONNECTIONS)
        if not MIN_REQUEST_SIZE <= options.request_size <= MAX_REQUEST_SIZE:
            bad('request_size', options.request_size,
                'a size from %d to %d bytes' % (MIN_REQUEST_SIZE, MAX_REQUEST_SIZE))
        if not 1 <= options.requests_in_flight <= MAX_REQUESTS_IN_FLIGHT:
            bad('requests_in_flight', options.requests_in_flight,
                'an integer from 1 to %d' % MAX_REQUESTS_IN_FLIGHT)
        if not 0 <= options.retries <= 100:
            bad('retries', options.retries, 'an integer from 0 to 100')

    # -- setup ----------------------------------------------------------
    def open(self):
        """Connect, check the servers and the extents, settle the plan. Raises before anything is written."""
        options = self.options
        whole_disk = self.extents is None
        src = open_handle(options.source, 'source', self.disk, block_status=whole_disk)
        self.pairs.append([src, None])
        dst = open_handle(options.target, 'target', self.disk)
        self.pairs[0][1] = dst
        self.source = ServerInfo(src, 'source')
        self.target = ServerInfo(dst, 'target')
        self.capacity = self.source.size
        if self.target.read_only:
            raise ValidationError('the target %s of %s is read-only' % (options.target, self.disk),
                                  operation='validate target', disk=self.disk)
        if self.target.size < self.source.size:
            raise ValidationError('the target %s of %s is smaller than the source: %d < %d bytes'
                                  % (options.target, self.disk, self.target.size, self.source.size),
                                  operation='validate target', disk=self.disk)
        self.plan = CopyPlan.negotiate(
            self.source, self.target, disk=self.disk, source_uri=options.source, target_uri=options.target,
            request_size=options.request_size, connections=options.connections,
            requests_in_flight=options.requests_in_flight, retries=options.retries,
            retry_delay=self.retry_delay, io_timeout=float(options.io_timeout or DEFAULT_IO_TIMEOUT),
            whole_disk=whole_disk, fill_gaps=self.fill_gaps, target_is_zero=options.target_is_zero)
        self._scan_extents()
        if whole_disk or self.plan.fill_gaps:
            self.scope_bytes = self.capacity
        else:
            self.scope_bytes = self.extent_bytes
        return self

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
            for _offset, length in aligned_extents(self.plan, self.extents):
                total += length
        except ExtentsError as exc:
            raise ValidationError('%s (source %s has %d bytes)' % (exc, self.options.source, self.capacity),
                                  operation='validate extents', disk=self.disk)
        self.extent_count = count
        self.extent_bytes = total

    def _connect_more(self):
        whole_disk = self.extents is None
        while len(self.pairs) < self.plan.connections:
            src = open_handle(self.options.source, 'source', self.disk, block_status=whole_disk)
            dst = open_handle(self.options.target, 'target', self.disk)
            self.pairs.append([src, dst])

    def preview(self, scan=True):
        """What a copy would move, without writing: a dict for check mode.

        For a whole disk the source's block status is walked (``scan``), so
        ``data_bytes`` counts allocated bytes (zero detection may still turn
        some into zero requests).
        """
        plan = self.plan
        if self.extents is not None:
            data = self.extent_bytes
            zero = (self.capacity - data) if plan.fill_gaps else 0
            extents = self.extent_count
        elif scan and self.source.can_block_status:
            data, extents = self._scan_allocation()
            zero = 0 if plan.skip_zeros else self.capacity - data
        else:
            data, zero, extents = self.capacity, 0, 1 if self.capacity else 0
        return {
            'data_bytes': data,
            'zero_bytes': zero,
            'skipped_bytes': self.capacity - data - zero,
            'extent_count': extents,
            'capacity_bytes': self.capacity,
            'connections': plan.connections,
            'request_size': plan.request_size,
            'requests_in_flight': plan.requests_in_flight,
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
                                   % (self.options.source, self.disk, offset, exc.string),
                                   operation='block status of source', disk=self.disk, offset=offset)
            found = runs_from_block_status(offset, length, entries)
            if not found:
                found = [[offset, length, False]]
            for _start, run_length, is_zero in align_runs(found, self.plan.align, self.capacity):
                if not is_zero:
                    data += run_length
                    runs += 1
            offset = found[-1][0] + found[-1][1]
        return data, runs

    # -- work -----------------------------------------------------------
    def _run(self, items, checkpoint_to=None, start=0, base_done=0, done_above=()):
        self._connect_more()
        if self.zero_view is None:
            self.zero_view = memoryview(bytearray(self.plan.request_size))
        shared = SharedState(items, self.progress, self.zero_view, checkpoint=checkpoint_to, start=start,
                             base_done=base_done, done_above=done_above)
        self.workers = shared.make_workers(self.plan, self.pairs)
        self.shared = shared
        shared.run()

    def copy(self, start=0, checkpoint_to=None, done_above=()):
        """Copy from ``start`` (a checkpoint's watermark), skipping ``done_above``; return counters.

        ``checkpoint_to(watermark, done_above)`` is called after each checkpoint flush.
        Raises CopyIOError (nothing committed).
        """
        started = time.monotonic()
        self.resumed_bytes = resumed_bytes(self.plan, self.extents, start, done_above)
        self._run(copy_items(self.plan, self.extents, start), checkpoint_to, start, self.resumed_bytes, done_above)
        elapsed = time.monotonic() - started
        written = sum(w.written for w in self.workers)
        zeroed = sum(w.zeroed for w in self.workers)
        self.stats = {
            'bytes_written': written,
            'bytes_zeroed': zeroed,
            'bytes_skipped': max(0, self.capacity - written - zeroed - self.resumed_bytes),
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
        plan = self.plan
        for _src, dst in self.pairs:
            attempt = 0
            while True:
                try:
                    dst.flush()
                    break
                except nbd.Error as exc:
                    attempt += 1
                    if attempt > plan.retries or (exc.errnum in PERMANENT_ERRNOS):
                        raise CopyIOError('flush of the target %s of %s failed after %d attempt%s: %s'
                                          % (plan.target_uri, self.disk, attempt, '' if attempt == 1 else 's',
                                             exc.string),
                                          operation='flush target', disk=self.disk, errnum=exc.errnum,
                                          attempts=attempt)
                    time.sleep(min(MAX_RETRY_DELAY, plan.retry_delay * (2 ** (attempt - 1))))
        self.flushed = True
        return True

    def verify(self):
        """Read back the copied scope from both ends and compare. Raises VerifyError."""
        self._run(verify_items(self.plan, self.extents))
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
            'connections': self.plan.connections,
            'request_size': self.plan.request_size,
            'requests_in_flight': self.plan.requests_in_flight,
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


class _CopyInput(object):
    """What one run of :func:`run_copy` copies: the options resolved against the extents file's header."""

    def __init__(self, options):
        if options.verify not in VERIFY_CHOICES:
            raise ValidationError('verify is %r, expected one of %s' % (options.verify, ', '.join(VERIFY_CHOICES)),
                                  operation='validate')
        self.extents, header = resolve_extents(options.extents, options.extents_file)
        self.header = header
        self.disk_key = options.disk_key if options.disk_key is not None else header.get('disk_key')
        self.change_id = options.change_id or header.get('change_id')
        sync_type = options.sync_type
        if sync_type is not None and header.get('sync_type') and sync_type != header['sync_type']:
            # full over changed areas would zero the unchanged rest of the target;
            # incremental over allocated areas would leave stale data in the holes
            raise ValidationError('sync_type is %s but the extents file %s lists the areas of a %s copy; '
                                  'leave sync_type unset or use an extents file of a %s copy'
                                  % (sync_type, options.extents_file, header['sync_type'], sync_type),
                                  operation='validate')
        if sync_type is None:
            sync_type = header.get('sync_type') or ('full' if self.extents is None else 'incremental')
        if sync_type not in ('full', 'incremental'):
            raise ValidationError('sync_type is %r, expected full or incremental' % (sync_type,),
                                  operation='validate')
        if self.extents is None and sync_type == 'incremental':
            raise ValidationError('sync_type incremental needs extents or extents_file', operation='validate')
        self.sync_type = sync_type
        self.disk = 'disk %s' % self.disk_key if self.disk_key is not None else 'disk'
        self.digest = None
        if options.checkpoint_file:
            if not options.snapshot_moref:
                raise ValidationError('checkpoint_file needs snapshot_moref (the snapshot the source serves): a '
                                      'checkpoint is only valid for the frozen data it was taken on',
                                      operation='validate', disk=self.disk)
            try:
                self.digest = checkpoint.extents_digest(self.extents if not options.extents_file else None,
                                                        options.extents_file)
            except (IOError, OSError) as exc:
                raise ValidationError('cannot read extents file %s: %s' % (options.extents_file, exc),
                                      operation='read extents file', disk=self.disk)
        if options.state_file and (self.disk_key is None or not self.change_id):
            raise ValidationError('state_file needs disk_key and change_id (given or from the extents file header)',
                                  operation='validate', disk=self.disk)
        self.state = None
        if options.state_file:
            try:
                self.state = sync_state.load(options.state_file)
            except sync_state.SyncStateError as exc:
                raise ValidationError(str(exc), operation='read state', disk=self.disk)
            owner = self.state.get('vm_uuid')
            if options.vm_uuid and owner and owner != options.vm_uuid:
                raise ValidationError('sync state file %s belongs to VM %s, not %s'
                                      % (options.state_file, owner, options.vm_uuid),
                                      operation='read state', disk=self.disk)
            check_incremental_base(self.state, self.disk_key, header, options.target, sync_type,
                                   options.state_file)


def run_copy(options, check_mode=False, progress=None, progress_factory=None, retry_delay=DEFAULT_RETRY_DELAY):
    """Copy a disk and commit its changeId; return the module's result dict.

    ``options`` are the nbd_incremental_copy options (``nbd_copy.COPY_SPEC``).
    ``progress_factory(total_bytes, sync_type, disk_key)`` may return an object
    with ``start()``, ``update(done, moved)`` and ``finish(ok, message)`` (the
    VMA ProgressReporter); ``progress`` is a plain ``(done, moved)`` callable.
    Order: validate (nothing written on error) -> copy -> flush -> verify ->
    commit. Any error before the commit leaves the state file untouched.
    """
    request = _CopyInput(options)
    disk = request.disk
    job = DiskCopy(options, extents=request.extents, fill_gaps=(request.sync_type == 'full'),
                   progress=progress, disk=disk, retry_delay=retry_delay)
    reporter = None
    result = {}
    try:
        job.open()
        capacity = request.header.get('capacity_bytes')
        if capacity is not None and capacity != job.capacity:
            raise ValidationError('the extents file says %s has %d bytes but the source %s has %d'
                                  % (disk, capacity, options.source, job.capacity),
                                  operation='validate extents', disk=disk)
        result.update({'sync_type': request.sync_type, 'capacity_bytes': job.capacity,
                       'extent_count': job.extent_count, 'disk_key': request.disk_key})
        result.update(job.settings())
        if check_mode:
            _resume(options, request, job, result, check_mode=True)
            preview = job.preview()
            result.update({
                'changed': preview['data_bytes'] + preview['zero_bytes'] > 0,
                'plan': preview,
                'extent_count': preview['extent_count'],
                'bytes_written': 0, 'bytes_zeroed': 0, 'bytes_skipped': 0,
                'elapsed': 0.0, 'throughput_bps': 0, 'verified': False,
                'committed_change_id': None, 'state_updated': False,
            })
            return result
        if progress_factory is not None:
            reporter = progress_factory(job.scope_bytes, request.sync_type, request.disk_key)
            if reporter is not None:
                reporter.start()
                job.progress = _chain(progress, reporter.update)
        start, done_above, write_checkpoint = _resume(options, request, job, result)
        started = time.monotonic()
        job.copy(start, write_checkpoint, done_above)
        job.flush()
        verified = False
        if options.verify == 'checksum':
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
            'checkpoints': job.shared.checkpoints if job.shared is not None else 0,
        })
        if options.state_file:
            _commit(options, request, job.capacity, result)
        if options.checkpoint_file:
            checkpoint.remove(options.checkpoint_file)  # the disk is complete: nothing to resume
        if reporter is not None:
            reporter.finish(ok=True)
        return result
    except NbdCopyError as exc:
        if reporter is not None:
            reporter.finish(ok=False, message=exc.message)
        if options.checkpoint_file and job.shared is not None and job.shared.checkpoints:
            exc.resume = {'checkpoint_file': options.checkpoint_file,
                          'checkpoints': job.shared.checkpoints}
        raise
    except BaseException:
        if reporter is not None:
            reporter.finish(ok=False, message='copy of %s interrupted' % disk)
        raise
    finally:
        job.close()
        if reporter is not None:
            result['warnings'] = list(getattr(reporter, 'warnings', []) or [])


def _resume(options, request, job, result, check_mode=False):
    """Where the copy starts, from a checkpoint of the same copy, and the checkpoint writer (or None).

    A checkpoint of another copy (snapshot, changeId, extents, target, size
    or sync type differ) is removed before anything is written: its
    watermark says nothing about this copy.
    """
    if not options.checkpoint_file:
        return 0, (), None
    identity = {'snapshot': options.snapshot_moref, 'change_id': request.change_id,
                'extents_digest': request.digest, 'target': options.target, 'capacity_bytes': job.capacity,
                'sync_type': request.sync_type, 'disk_key': request.disk_key}
    saved = checkpoint.load(options.checkpoint_file)
    start, done_above, why = 0, (), None
    if saved is not None:
        why = checkpoint.mismatch(saved, identity)
        if why is None and 0 < saved['watermark'] <= job.capacity:
            start, done_above = saved['watermark'], saved['done_above']
    elif os.path.exists(options.checkpoint_file):
        why = 'the checkpoint %s cannot be read' % options.checkpoint_file
    if start:
        done = resumed_bytes(job.plan, job.extents, start, done_above)
        result['resumed_at_bytes'] = done
        result['resume'] = 'resumed at %d of %d bytes (%s)' % (done, job.scope_bytes, options.checkpoint_file)
    elif why:
        result['resume'] = 'not resumed: %s; copying from the start' % why
        if not check_mode:
            checkpoint.remove(options.checkpoint_file)
    if check_mode:
        return start, done_above, None

    def write_checkpoint(watermark, done):
        checkpoint.write(options.checkpoint_file, identity, watermark, done)
    return start, done_above, write_checkpoint


def resumed_bytes(plan, extents, start, done_above):
    """What an earlier run did of this copy: its scope below ``start`` and the ranges above it."""
    if not start:
        return 0
    return bytes_below(plan, extents, start) + sum(end - begin for begin, end in done_above)


def _commit(options, request, capacity, result):
    """Record the new changeId (after the flush), unless the state already holds exactly this sync."""
    entry = sync_state.disk_entry(request.state, request.disk_key) if request.state else None
    if (entry and entry.get('change_id') == request.change_id and entry.get('target') == options.target
            and entry.get('capacity_bytes') == capacity):
        result['committed_change_id'] = request.change_id
        return
    try:
        sync_state.commit_disk(options.state_file, options.vm_uuid, request.disk_key, request.change_id, capacity,
                               options.target)
    except sync_state.SyncStateError as exc:
        raise CommitError(str(exc), operation='commit changeId', disk=request.disk)
    result['committed_change_id'] = request.change_id
    result['state_updated'] = True


def _chain(first, second):
    if first is None:
        return second

    def both(done, moved):
        first(done, moved)
        second(done, moved)
    return both
