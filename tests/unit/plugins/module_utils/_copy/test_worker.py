# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The worker's decisions, with fake handles: reads become writes or zeroes, retries, fallbacks, buffers."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy

nbd = pytest.importorskip('nbd')

KiB = 1024
MiB = 1024 * KiB


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
        self.checkpoint = None
        self.skip = []
        self.epoch = 0
        self.flush_due = None
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
