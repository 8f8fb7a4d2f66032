# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the copy engine's pure parts and of the worker's decisions (no servers)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy, sync_state
from ansible_collections.migratekit.migration.plugins.module_utils._copy import job as copy_job
from ansible_collections.migratekit.migration.plugins.module_utils._copy import plan as copy_plan
from ansible_collections.migratekit.migration.plugins.module_utils.extents import write_extents_file

nbd = pytest.importorskip('nbd')

KiB = 1024
MiB = 1024 * KiB


# ---------------------------------------------------------------- splitting and alignment

def test_split_range_pieces_cover_the_range_and_respect_the_size():
    pieces = list(nbd_copy.split_range(0, 10 * MiB + 1, 4 * MiB))
    assert pieces == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 2 * MiB + 1)]


def test_split_range_realigns_after_an_unaligned_start():
    pieces = list(nbd_copy.split_range(1000, 3 * 4096, 4096, align=4096))
    assert pieces[0] == (1000, 3096)
    assert all(offset % 4096 == 0 for offset, _length in pieces[1:])
    assert sum(length for _offset, length in pieces) == 3 * 4096
    assert pieces[-1][0] + pieces[-1][1] == 1000 + 3 * 4096


def test_split_range_tail_of_a_disk_not_a_multiple_of_the_request_size():
    size = 5 * MiB + 513
    pieces = list(nbd_copy.split_range(0, size, 2 * MiB))
    assert pieces[-1] == (4 * MiB, MiB + 513)
    assert max(length for _offset, length in pieces) <= 2 * MiB


@pytest.mark.parametrize('request_size, align, maxima, expected', [
    (256 * KiB, 1, (0, 0), 256 * KiB),
    (64 * MiB, 1, (0, 0), 32 * MiB),                 # protocol limit
    (1 * MiB, 1, (0, 64 * KiB), 64 * KiB),           # target's maximum block size
    (1 * MiB, 1, (128 * KiB, 0), 128 * KiB),         # source's maximum block size
    (100000, 4096, (0, 0), 98304),                   # multiple of the minimum block size
    (4096, 65536, (0, 0), 65536),                    # never below one aligned block
])
def test_effective_request_size(request_size, align, maxima, expected):
    assert nbd_copy.effective_request_size(request_size, align, maxima) == expected


def test_align_extents_widens_to_the_block_size_and_merges_neighbours():
    extents = [(100, 10), (4000, 200), (9000, 10)]
    assert list(nbd_copy.align_extents(extents, 4096, 1 << 20)) == [(0, 12288)]
    assert list(nbd_copy.align_extents([(100, 10), (9000, 10)], 4096, 1 << 20)) == [(0, 4096), (8192, 4096)]


def test_align_extents_clips_to_the_capacity():
    capacity = 10000
    assert list(nbd_copy.align_extents([(9990, 10)], 4096, capacity)) == [(8192, capacity - 8192)]


def test_align_extents_is_lazy_with_align_one():
    extents = iter([(0, 1), (5, 1)])
    assert nbd_copy.align_extents(extents, 1, 10) is extents


def test_gaps_complement_the_extents():
    assert list(nbd_copy.gaps([(10, 5), (20, 5)], 30)) == [(0, 10), (15, 5), (25, 5)]
    assert list(nbd_copy.gaps([], 30)) == [(0, 30)]
    assert list(nbd_copy.gaps([(0, 30)], 30)) == []


def test_request_quantum():
    assert nbd_copy.request_quantum(256 * KiB, 1) == 64 * KiB
    assert nbd_copy.request_quantum(32 * MiB, 1) == 2 * MiB
    assert nbd_copy.request_quantum(16 * KiB, 512) == 16 * KiB
    assert nbd_copy.request_quantum(64 * KiB, 128 * KiB) == 128 * KiB


@pytest.mark.parametrize('length', [1, 511, 512, 4096, 65536, 65536 * 3 + 100, 262144, 200000, 262143])
def test_class_pieces_cover_exactly_with_few_distinct_lengths(length):
    pieces = list(nbd_copy.class_pieces(1000, length, 64 * KiB, 1))
    assert sum(piece for _offset, piece in pieces) == length
    assert pieces[0][0] == 1000
    for (offset, piece), (next_offset, _next) in zip(pieces, pieces[1:]):
        assert offset + piece == next_offset
    classes = nbd_copy.length_classes(256 * KiB, 64 * KiB, 1)
    assert all(piece in classes for _offset, piece in pieces)
    assert len(pieces) <= 1 + 16


def test_class_pieces_keep_an_unaligned_disk_tail_whole():
    pieces = list(nbd_copy.class_pieces(0, 4096 + 4096 + 100, 64 * KiB, 4096))
    assert pieces == [(0, 8192), (8192, 100)]


def test_length_classes_are_a_small_set():
    assert len(nbd_copy.length_classes(32 * MiB, nbd_copy.request_quantum(32 * MiB, 1), 1)) <= 16 + 21
    assert len(nbd_copy.length_classes(256 * KiB, 64 * KiB, 512)) == 4 + 7


# ---------------------------------------------------------------- block status

def test_runs_from_block_status_merges_and_clips():
    entries = [4096, 0, 4096, 0, 8192, 3, 1 << 30, 0]
    runs = nbd_copy.runs_from_block_status(0, 20480, entries)
    assert runs == [[0, 8192, False], [8192, 8192, True], [16384, 4096, False]]


def test_runs_from_block_status_partial_answer_covers_less():
    runs = nbd_copy.runs_from_block_status(1 << 20, 1 << 20, [65536, 0])
    assert runs == [[1 << 20, 65536, False]]


def test_hole_without_zero_flag_is_data():
    runs = nbd_copy.runs_from_block_status(0, 8192, [8192, nbd_copy.STATE_HOLE])
    assert runs == [[0, 8192, False]]


def test_align_runs_grows_data_and_shrinks_zero_runs():
    runs = [(0, 1000, False), (1000, 9000, True), (10000, 2288, False)]
    aligned = nbd_copy.align_runs(runs, 4096, 12288)
    assert aligned == [(0, 4096, False), (4096, 4096, True), (8192, 4096, False)]
    assert sum(length for _start, length, _zero in aligned) == 12288


def test_align_runs_drops_a_zero_run_smaller_than_a_block():
    runs = [(0, 5000, False), (5000, 2000, True), (7000, 1192, False)]
    assert nbd_copy.align_runs(runs, 4096, 8192) == [(0, 8192, False)]


def test_align_runs_keeps_an_unaligned_zero_tail_at_the_end_of_the_disk():
    runs = [(0, 4096, False), (4096, 5000, True)]
    assert nbd_copy.align_runs(runs, 4096, 9096) == [(0, 4096, False), (4096, 5000, True)]


# ---------------------------------------------------------------- extents input

def test_resolve_extents_sorts_and_merges_a_list():
    extents, header = nbd_copy.resolve_extents(extents=[[100, 10], [0, 50], [50, 10]])
    assert extents == [(0, 60), (100, 10)]
    assert header == {}


@pytest.mark.parametrize('bad', [[[1]], [['a', 2]], [[-1, 2]], ['x']])
def test_resolve_extents_rejects_bad_pairs(bad):
    with pytest.raises(nbd_copy.ValidationError, match=r'extents\[0\]'):
        nbd_copy.resolve_extents(extents=bad)


def test_resolve_extents_rejects_both_ways():
    with pytest.raises(nbd_copy.ValidationError, match='either'):
        nbd_copy.resolve_extents(extents=[], extents_file='/x')


def test_extents_file_is_re_iterable(tmp_path):
    path = str(tmp_path / 'e.json')
    write_extents_file(path, {'disk_key': 2000, 'capacity_bytes': 1 << 20, 'change_id': 'c/2',
                              'previous_change_id': 'c/1', 'sync_type': 'incremental'}, [(0, 512), (4096, 512)])
    source, header = nbd_copy.resolve_extents(extents_file=path)
    assert header['change_id'] == 'c/2'
    assert list(source) == [(0, 512), (4096, 512)]
    assert list(source) == [(0, 512), (4096, 512)]


def test_missing_extents_file_is_a_validation_error(tmp_path):
    with pytest.raises(nbd_copy.ValidationError, match='cannot read extents file'):
        nbd_copy.resolve_extents(extents_file=str(tmp_path / 'nope.json'))


# ---------------------------------------------------------------- the worker's decisions

class FakeHandle(object):
    """Records the asynchronous calls a worker makes; completions are driven by the test."""

    def __init__(self, zero_ok=True):
        self.calls = []

    def aio_pread(self, buf, offset, completion):
        self.calls.append(('pread', offset, len(buf)))

    def aio_pwrite(self, buf, offset, completion):
        self.calls.append(('pwrite', offset, len(buf), bytes(buf.to_buffer()[:4]) if hasattr(buf, 'to_buffer')
                           else None))

    def aio_zero(self, count, offset, completion):
        self.calls.append(('zero', offset, count))

    def aio_block_status(self, count, offset, extent, completion):
        self.calls.append(('block_status', offset, count))


class FakeShared(object):
    """The state a worker shares with the others of its pass, recording what the worker tells it."""

    def __init__(self, request_size):
        self.failed = False
        self.error = None
        self.zero_view = memoryview(bytearray(request_size))
        self.reports = 0

    def zero_buffer(self, length):
        return nbd.Buffer.from_buffer(self.zero_view[:length])

    def fail(self, error):
        if not self.failed:
            self.failed, self.error = True, error

    def report(self, force=False):
        self.reports += 1

    def next_item(self, worker):
        return None


def make_plan(skip_zeros=False, can_zero=True, retries=2):
    request_size, align = 64 * KiB, 1
    quantum = nbd_copy.request_quantum(request_size, align)
    return nbd_copy.CopyPlan(
        disk='disk 2000', source_uri='nbd+unix:///?socket=/s', target_uri='nbd+unix:///?socket=/t',
        capacity=16 * MiB, align=align, preferred=1, request_size=request_size, zero_size=1 * MiB,
        quantum=quantum, length_classes=nbd_copy.length_classes(request_size, quantum, align), connections=1,
        requests_in_flight=32, retries=retries, retry_delay=0.0, io_timeout=300.0, skip_zeros=skip_zeros,
        zero_by_write=not can_zero, block_status=True, fill_gaps=False, whole_disk=True)


class Err(object):
    def __init__(self, value):
        self.value = value


def make_worker(**kwargs):
    plan = make_plan(**kwargs)
    job = FakeShared(plan.request_size)
    worker = nbd_copy.Worker(plan, job, 0, FakeHandle(), FakeHandle())
    return job, worker


def complete(worker, req, err=0):
    req.done(Err(err))
    worker._process()


def test_data_read_becomes_a_write_of_the_same_buffer():
    job, worker = make_worker()
    worker._start((nbd_copy.COPY, 65536, 4096))
    assert worker.src.calls == [('pread', 65536, 4096)]
    req = _only_request(worker)
    worker.pool[req.slot][:4] = b'\x01\x02\x03\x04'
    complete(worker, req)
    assert worker.dst.calls == [('pwrite', 65536, 4096, b'\x01\x02\x03\x04')]
    complete(worker, req)
    assert worker.written == 4096 and worker.inflight == 0 and worker.free == [0]


def _only_request(worker):
    # the last request started: the one whose completion the fake holds
    return worker._last


@pytest.fixture(autouse=True)
def remember_requests(monkeypatch):
    original = nbd_copy.Worker._submit

    def submit(self, req):
        self._last = req
        return original(self, req)
    monkeypatch.setattr(nbd_copy._Worker, '_submit', submit)


def test_zero_data_becomes_a_write_zeroes_request_on_a_target_not_known_zero():
    job, worker = make_worker(skip_zeros=False)
    worker._start((nbd_copy.COPY, 0, 8192))
    req = _only_request(worker)
    worker.pool[req.slot][:8192] = bytes(8192)
    complete(worker, req)
    assert worker.dst.calls == [('zero', 0, 8192)]
    assert worker.free == [0], 'the buffer goes back to the pool before the zero request'
    complete(worker, req)
    assert worker.zeroed == 8192 and worker.written == 0 and worker.done_bytes == 8192


def test_zero_data_is_skipped_on_a_zero_target():
    job, worker = make_worker(skip_zeros=True)
    worker._start((nbd_copy.COPY, 0, 8192))
    req = _only_request(worker)
    worker.pool[req.slot][:8192] = bytes(8192)
    complete(worker, req)
    assert worker.dst.calls == []
    assert worker.done_bytes == 8192 and worker.inflight == 0


def test_zeroes_are_written_as_buffers_when_the_target_cannot_zero():
    job, worker = make_worker(can_zero=False)
    worker._start((nbd_copy.ZERO, 0, 3 * 64 * KiB))
    assert [call[:3] for call in worker.dst.calls] == [('pwrite', 0, 64 * KiB)]
    assert len(worker.local) == 2, 'the rest of the zero run is queued in request-size pieces'


def test_unsupported_write_zeroes_falls_back_to_zero_buffers():
    job, worker = make_worker()
    worker._start((nbd_copy.ZERO, 0, 128 * KiB))
    req = _only_request(worker)
    complete(worker, req, errno.ENOTSUP)
    assert worker.zero_by_write and not job.failed
    assert worker.local == [(nbd_copy.ZERO, 0, 128 * KiB)]


def _drain(worker):
    """Complete every outstanding request successfully (retries due or not), then the queued work."""
    import heapq
    while worker.retry or worker.local:
        if worker.retry:
            req = heapq.heappop(worker.retry)[2]
            worker._submit(req)
        else:
            worker._start(worker.local.pop())
        complete(worker, worker._last)


def _zeroed_by_write(worker):
    covered = sorted((call[1], call[2]) for call in worker.dst.calls if call[0] == 'pwrite')
    position = 0
    for offset, length in covered:
        assert offset == position, 'zero-filled writes leave [%d, %d) unwritten' % (position, offset)
        position = offset + length
    return position


@pytest.mark.parametrize('first_error', [errno.ENOTSUP, errno.EIO])
def test_write_zeroes_in_flight_when_the_target_refuses_them_are_written_in_full(first_error):
    # Several write-zeroes requests larger than a buffer are in flight when the
    # target answers ENOTSUP: each must end up written whole with zero buffers,
    # none as one buffer-sized write that leaves the rest of its range untouched.
    job, worker = make_worker(retries=2)
    reqs = []
    for index in range(3):
        worker._start((nbd_copy.ZERO, index * 256 * KiB, 256 * KiB))
        reqs.append(worker._last)
    complete(worker, reqs[0], first_error)
    complete(worker, reqs[1], errno.ENOTSUP)
    complete(worker, reqs[2], errno.ENOTSUP)
    _drain(worker)
    assert not job.failed
    assert _zeroed_by_write(worker) == 3 * 256 * KiB
    assert worker.inflight == 0


def test_transient_error_is_retried_with_backoff():
    job, worker = make_worker(retries=2)
    worker._start((nbd_copy.COPY, 4096, 4096))
    req = _only_request(worker)
    complete(worker, req, errno.EIO)
    assert not job.failed and len(worker.retry) == 1 and worker.retried == 1
    assert worker.inflight == 1, 'a request waiting for its retry keeps its buffer and slot'


def test_persistent_error_fails_with_operation_disk_and_offset():
    job, worker = make_worker(retries=1)
    worker._start((nbd_copy.COPY, 1 << 20, 4096))
    req = _only_request(worker)
    complete(worker, req, errno.EIO)
    worker._submit(worker.retry.pop()[2])
    complete(worker, req, errno.EIO)
    assert job.failed
    error = job.error
    assert isinstance(error, nbd_copy.CopyIOError)
    assert error.offset == 1 << 20 and error.disk == 'disk 2000' and error.attempts == 2
    assert 'read from source failed for disk 2000 at offset 1048576' in str(error)
    assert 'EIO' in str(error)
    assert worker.inflight == 0 and worker.free == [0]


def test_permanent_errno_is_not_retried():
    job, worker = make_worker(retries=5)
    worker._start((nbd_copy.ZERO, 0, 4096))
    complete(worker, _only_request(worker), errno.ENOSPC)
    assert job.failed and worker.retried == 0
    assert 'write zeroes to target failed' in str(job.error)


def test_block_status_answer_becomes_copy_and_zero_requests_in_order():
    job, worker = make_worker()
    worker._start((nbd_copy.PROBE, 0, 4 * MiB))
    req = _only_request(worker)
    req.extent(nbd_copy.BASE_ALLOCATION, 0, [128 * KiB, 0, 1 * MiB, 3], Err(0))
    complete(worker, req)
    queued = list(reversed(worker.local))
    assert queued[0] == (nbd_copy.COPY, 0, 64 * KiB)
    assert queued[1] == (nbd_copy.COPY, 64 * KiB, 64 * KiB)
    assert queued[2] == (nbd_copy.ZERO, 128 * KiB, 1 * MiB)
    assert queued[-1] == (nbd_copy.PROBE, 128 * KiB + 1 * MiB, 4 * MiB - 128 * KiB - 1 * MiB)


def test_block_status_holes_are_skipped_on_a_zero_target():
    job, worker = make_worker(skip_zeros=True)
    worker._start((nbd_copy.PROBE, 0, 2 * MiB))
    req = _only_request(worker)
    req.extent(nbd_copy.BASE_ALLOCATION, 0, [1 * MiB, 3, 1 * MiB, 0], Err(0))
    complete(worker, req)
    assert all(item[0] == nbd_copy.COPY for item in worker.local)
    assert worker.done_bytes == 1 * MiB


def test_odd_lengths_are_split_into_classes_and_buffer_views_are_reused():
    job, worker = make_worker()
    worker._start((nbd_copy.COPY, 0, 65536 + 4096 + 100))
    assert worker.src.calls == [('pread', 0, 65536)]
    assert list(reversed(worker.local)) == [(nbd_copy.COPY, 65536, 4096), (nbd_copy.COPY, 69632, 64),
                                            (nbd_copy.COPY, 69696, 32), (nbd_copy.COPY, 69728, 4)]
    first = worker._last.buf
    worker.free.append(worker._last.slot)
    worker.inflight = 0
    worker.local = []
    worker._start((nbd_copy.COPY, 1 << 20, 65536))
    assert worker._last.buf is first, 'the same nbd.Buffer view is reused for the same slot and length'


def test_pool_is_bounded_and_reused():
    job, worker = make_worker()
    for index in range(4):
        worker._start((nbd_copy.COPY, index * 65536, 65536))
    assert len(worker.pool) == 4
    # complete everything, start again: no new buffers
    worker.completed = []
    for slot in range(4):
        worker.free.append(slot)
    worker.inflight = 0
    for index in range(4):
        worker._start((nbd_copy.COPY, index * 65536, 65536))
    assert len(worker.pool) == 4


# ---------------------------------------------------------------- errors

def test_error_message_names_operation_disk_and_offset():
    exc = nbd_copy.ValidationError('the target x is read-only', operation='validate target', disk='disk 2000')
    assert nbd_copy.error_message(exc) == 'validate target of disk 2000 failed: the target x is read-only'
    exc = nbd_copy.CopyIOError('write to target failed for disk 2000 at offset 5 (length 1) after 1 attempt: x',
                               operation='write to target', disk='disk 2000', offset=5)
    assert nbd_copy.error_message(exc).startswith('write to target failed for disk 2000 at offset 5')
    assert nbd_copy.error_details(exc) == {'failed_operation': 'write to target', 'failed_disk': 'disk 2000',
                                           'failed_offset': 5}


# ---------------------------------------------------------------- the commit rule

class FakeCopy(object):
    """Stands in for DiskCopy in copy_disk(): records the order of the steps."""

    events = []
    fail_at = None

    def __init__(self, options, **kwargs):
        self.kwargs = kwargs
        self.capacity = 1 << 20
        self.extent_count = 2
        self.scope_bytes = 1 << 20
        self.flushed = False
        self.stats = {}
        self.progress = kwargs.get('progress')

    def _step(self, name):
        FakeCopy.events.append(name)
        if FakeCopy.fail_at == name:
            raise nbd_copy.CopyIOError('%s failed for disk 2000 at offset 4096' % name, operation=name,
                                       disk='disk 2000', offset=4096)

    def open(self):
        self._step('open')

    def settings(self):
        return {'connections': 1, 'request_size': 65536, 'requests_in_flight': 4}

    def preview(self):
        self._step('plan')
        return {'data_bytes': 4096, 'zero_bytes': 0, 'skipped_bytes': 0, 'extent_count': 1}

    def copy(self):
        self._step('copy')
        self.stats = {'bytes_written': 4096, 'bytes_zeroed': 0, 'bytes_skipped': 0, 'retried_requests': 0,
                      'copy_elapsed': 0.5}
        return self.stats

    def flush(self):
        self._step('flush')
        self.flushed = True

    def verify(self):
        self._step('verify')

    def close(self):
        FakeCopy.events.append('close')


@pytest.fixture
def fake_copy(monkeypatch):
    FakeCopy.events = []
    FakeCopy.fail_at = None
    original = sync_state.commit_disk

    def commit(*args, **kwargs):
        FakeCopy.events.append('commit')
        return original(*args, **kwargs)
    monkeypatch.setattr(copy_job, 'DiskCopy', FakeCopy)
    monkeypatch.setattr(sync_state, 'commit_disk', commit)
    return FakeCopy


def run_copy(tmp_path, **kwargs):
    params = dict(source='nbd+unix:///?socket=/s', target='nbd+unix:///?socket=/t', extents=[[0, 4096]],
                  sync_type='full', state_file=str(tmp_path / 'state.json'), vm_uuid='vm-1', disk_key=2000,
                  change_id='cbt/7')
    params.update(kwargs)
    return nbd_copy.copy_disk(**params)


def test_commit_comes_after_the_last_write_and_the_flush(tmp_path, fake_copy):
    result = run_copy(tmp_path, verify='checksum')
    assert fake_copy.events == ['open', 'copy', 'flush', 'verify', 'commit', 'close']
    state = sync_state.load(str(tmp_path / 'state.json'))
    assert state['disks']['2000']['change_id'] == 'cbt/7'
    assert result['committed_change_id'] == 'cbt/7' and result['state_updated'] and result['changed']
    assert result['verified'] is True


@pytest.mark.parametrize('step', ['open', 'copy', 'flush', 'verify'])
def test_a_failure_before_the_commit_leaves_the_state_untouched(tmp_path, fake_copy, step):
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-1', 2000, 'cbt/6', 1 << 20, 'nbd+unix:///?socket=/t')
    fake_copy.events[:] = []
    before = open(path).read()
    fake_copy.fail_at = step
    with pytest.raises(nbd_copy.CopyIOError):
        run_copy(tmp_path, verify='checksum', sync_type='full')
    assert 'commit' not in fake_copy.events
    assert fake_copy.events[-1] == 'close'
    assert open(path).read() == before


def test_check_mode_writes_nothing_and_commits_nothing(tmp_path, fake_copy):
    result = run_copy(tmp_path, check_mode=True)
    assert fake_copy.events == ['open', 'plan', 'close']
    assert not os.path.exists(str(tmp_path / 'state.json'))
    assert result['changed'] is True and result['plan']['data_bytes'] == 4096


def test_same_change_id_again_does_not_rewrite_the_state(tmp_path, fake_copy):
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-1', 2000, 'cbt/7', 1 << 20, 'nbd+unix:///?socket=/t')
    fake_copy.events[:] = []
    mtime = os.stat(path).st_mtime_ns
    result = run_copy(tmp_path)
    assert 'commit' not in fake_copy.events
    assert result['committed_change_id'] == 'cbt/7' and not result['state_updated']
    assert os.stat(path).st_mtime_ns == mtime


def test_incremental_on_another_base_fails_before_connecting(tmp_path, fake_copy):
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-1', 2000, 'cbt/5', 1 << 20, 'nbd+unix:///?socket=/t')
    fake_copy.events[:] = []
    extents_file = str(tmp_path / 'e.json')
    write_extents_file(extents_file, {'disk_key': 2000, 'capacity_bytes': 1 << 20, 'change_id': 'cbt/7',
                                      'previous_change_id': 'cbt/6', 'sync_type': 'incremental'}, [(0, 4096)])
    with pytest.raises(nbd_copy.ValidationError, match='relative to changeId cbt/6'):
        nbd_copy.copy_disk('nbd+unix:///?socket=/s', 'nbd+unix:///?socket=/t', extents_file=extents_file,
                           state_file=path, vm_uuid='vm-1')
    assert fake_copy.events == []


def test_incremental_without_state_for_the_disk_fails(tmp_path, fake_copy):
    with pytest.raises(nbd_copy.ValidationError, match='no synced state for disk 2000'):
        run_copy(tmp_path, sync_type='incremental')
    assert fake_copy.events == []


def test_incremental_onto_another_target_fails(tmp_path, fake_copy):
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-1', 2000, 'cbt/6', 1 << 20, 'nbd+unix:///?socket=/other')
    fake_copy.events[:] = []
    with pytest.raises(nbd_copy.ValidationError, match='was synced to'):
        run_copy(tmp_path, sync_type='incremental')


def test_state_file_of_another_vm_is_refused_before_copying(tmp_path, fake_copy):
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-other', 2000, 'cbt/6', 1 << 20, 'nbd+unix:///?socket=/t')
    fake_copy.events[:] = []
    with pytest.raises(nbd_copy.ValidationError, match='belongs to VM vm-other'):
        run_copy(tmp_path)
    assert fake_copy.events == []


@pytest.mark.parametrize('header_type,given', [('incremental', 'full'), ('full', 'incremental')])
def test_sync_type_contradicting_the_extents_file_fails_before_connecting(tmp_path, fake_copy, header_type, given):
    # full over changed areas would zero every unchanged area of the target;
    # incremental over allocated areas would leave stale data in the holes
    path = str(tmp_path / 'state.json')
    sync_state.commit_disk(path, 'vm-1', 2000, 'cbt/6', 1 << 20, 'nbd+unix:///?socket=/t')
    fake_copy.events[:] = []
    extents_file = str(tmp_path / 'e.json')
    write_extents_file(extents_file, {'disk_key': 2000, 'capacity_bytes': 1 << 20, 'change_id': 'cbt/7',
                                      'previous_change_id': 'cbt/6' if header_type == 'incremental' else None,
                                      'sync_type': header_type}, [(0, 4096)])
    before = open(path).read()
    with pytest.raises(nbd_copy.ValidationError, match='sync_type'):
        nbd_copy.copy_disk('nbd+unix:///?socket=/s', 'nbd+unix:///?socket=/t', extents_file=extents_file,
                           sync_type=given, state_file=path, vm_uuid='vm-1')
    assert fake_copy.events == []
    assert open(path).read() == before


def test_header_gives_disk_key_change_id_and_sync_type(tmp_path, fake_copy):
    extents_file = str(tmp_path / 'e.json')
    write_extents_file(extents_file, {'disk_key': 2001, 'capacity_bytes': 1 << 20, 'change_id': 'cbt/1',
                                      'previous_change_id': None, 'sync_type': 'full'}, [(0, 4096)])
    result = nbd_copy.copy_disk('nbd+unix:///?socket=/s', 'nbd+unix:///?socket=/t', extents_file=extents_file,
                                state_file=str(tmp_path / 'state.json'))
    assert result['sync_type'] == 'full' and result['disk_key'] == 2001
    state = json.load(open(str(tmp_path / 'state.json')))
    assert state['disks']['2001']['change_id'] == 'cbt/1'


def test_state_file_needs_a_change_id(tmp_path, fake_copy):
    with pytest.raises(nbd_copy.ValidationError, match='needs disk_key and change_id'):
        run_copy(tmp_path, change_id=None)


def test_progress_reporter_gets_start_updates_and_finish(tmp_path, fake_copy):
    calls = []

    class Reporter(object):
        warnings = ['vma slow']

        def __init__(self, total, sync_type, disk_key):
            calls.append(('new', total, sync_type, disk_key))

        def start(self):
            calls.append('start')

        def update(self, done, moved):
            calls.append(('update', done, moved))

        def finish(self, ok=True, message=None):
            calls.append(('finish', ok, message))
    result = run_copy(tmp_path, progress_factory=Reporter)
    assert calls == [('new', 1 << 20, 'full', 2000), 'start', ('finish', True, None)]
    assert result['warnings'] == ['vma slow']
    calls[:] = []
    fake_copy.fail_at = 'copy'
    with pytest.raises(nbd_copy.CopyIOError):
        run_copy(tmp_path, progress_factory=Reporter)
    assert calls[-1][0] == 'finish' and calls[-1][1] is False and 'offset 4096' in calls[-1][2]


def test_progress_factory_builds_a_reporter_from_module_params():
    seen = {}

    class Reporter(object):
        def __init__(self, *args, **kwargs):
            seen['args'], seen['kwargs'] = args, kwargs
    params = {'vma_url': 'http://127.0.0.1:1', 'job_id': 'j', 'token': 's3cret', 'validate_certs': False,
              'disk_id': None, 'progress_interval': 0.5}
    nbd_copy.progress_factory(Reporter, params)(100, 'incremental', 2000)
    assert seen['args'] == ('http://127.0.0.1:1', 'j', 'disk-2000', 'incremental', 100)
    assert seen['kwargs'] == {'token': 's3cret', 'validate_certs': False, 'interval': 0.5}


# ---------------------------------------------------------------- bounded memory

def test_a_huge_extents_file_is_streamed_not_held(tmp_path):
    """Validation and the request stream hold one extent at a time (40,000 here; a list of them would be megabytes)."""
    import tracemalloc
    count = 40000
    capacity = count * 8192
    path = str(tmp_path / 'many.json')
    with open(path, 'w') as handle:
        handle.write('{"capacity_bytes": %d, "change_id": "c/2", "disk_key": 2000, "extent_count": %d, '
                     '"changed_bytes": %d, "previous_change_id": "c/1", "sync_type": "incremental", '
                     '"extents": [\n' % (capacity, count, count * 512))
        for index in range(count):
            handle.write('[%d, 512]%s\n' % (index * 8192, ',' if index < count - 1 else ''))
        handle.write(']}\n')
    options = nbd_copy.COPY_SPEC.options(source='nbd+unix:///?socket=/s', target='nbd+unix:///?socket=/t')
    job = nbd_copy.DiskCopy(options, extents=nbd_copy.ExtentsFile(path), disk='disk 2000')
    job.capacity = capacity
    job.plan = nbd_copy.CopyPlan(**dict(make_plan().as_dict(), capacity=capacity, align=4096, preferred=4096,
                                        request_size=256 * KiB, zero_size=128 * MiB, whole_disk=False))
    tracemalloc.start()
    try:
        job._scan_extents()
        requests = 0
        for _item in copy_plan.copy_items(job.plan, job.extents):
            requests += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert job.extent_count == count and job.extent_bytes == count * 4096  # widened to the 4 KiB blocks
    assert requests == count
    assert peak < 1 * MiB, 'peak %d bytes: the extents were held in memory' % peak
