# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMA progress client and reporter against the lab's VMA receiver
(tests/lab/vma_receiver.py, a real HTTP server on 127.0.0.1): cadence and
content of the updates while "copying", and best-effort behaviour when the
receiver fails (500), stalls or is gone."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import socket
import statistics
import time

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import vma
from ansible_collections.migratekit.migration.tests.integration.helpers import received

pytest.importorskip('requests')

TOKEN = 'integration-t0ken-abc'
INTERVAL = 0.2


@pytest.fixture
def receiver(vma_receivers):
    """The lab receiver in-process on 127.0.0.1, port 0; ``.state.mode`` is ok/fail/stall."""
    return vma_receivers()


@pytest.fixture
def token_receiver(vma_receivers):
    return vma_receivers(token=TOKEN)


def closed_port_url():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return 'http://127.0.0.1:%d' % port


def simulated_copy(reporter, seconds, total):
    """Update the reporter every ~5 ms for ``seconds``, half of the bytes being holes; return the duration."""
    began = time.monotonic()
    reporter.start()
    done = moved = 0
    step = max(1, total // int(seconds / 0.005))
    while time.monotonic() - began < seconds and done < total:
        done = min(total, done + step)
        moved += step // 2
        reporter.update(done, moved)
        time.sleep(0.005)
    reporter.update(total, moved)
    reporter.finish(ok=True)
    return time.monotonic() - began


def hammer(reporter, count=10000):
    """``count`` updates as fast as possible; return how long they took."""
    began = time.monotonic()
    for i in range(count):
        reporter.update(i * 4096, i * 2048)
    return time.monotonic() - began


# ---------------------------------------------------------------- receiver ok

def test_updates_arrive_about_every_interval_with_final_100_percent(receiver):
    total = 64 * 1024 * 1024
    reporter = vma.ProgressReporter(receiver.url, 'job-ok', 2000, 'full', total, interval=INTERVAL)
    simulated_copy(reporter, 2.0, total)
    assert reporter.warnings == []
    updates = received(receiver)
    assert all(u['status_code'] == 200 and u['job_id'] == 'job-ok' for u in updates)
    bodies = [u['body'] for u in updates]
    assert all(b['disk_id'] == 'disk-2000' and b['sync_type'] == 'full' and b['total_bytes'] == total
               for b in bodies)
    assert bodies[0]['stage'] == 'Transfer' and bodies[0]['status'] == 'in_progress' and bodies[0]['percent'] == 0
    final = bodies[-1]
    # the disk is done; the job is not ended by a disk (the VM-wide update ends it)
    assert final['stage'] == 'Transfer' and final['status'] == 'in_progress'
    assert final['percent'] == 100.0 and final['bytes_transferred'] == total
    done = [b['bytes_transferred'] for b in bodies]
    assert done == sorted(done), 'bytes_transferred must be monotonic'
    assert all(b['status'] == 'in_progress' and b['stage'] == 'Transfer' for b in bodies)
    # cadence: start, then one update per interval while copying, then the final one right away
    stamps = [u['received_at'] for u in updates[:-1]]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert 6 <= len(updates) <= 13, len(updates)
    # gaps are measured on arrival, so one slow request shortens the next gap; no bursts, though
    assert min(gaps) >= INTERVAL * 0.3, gaps
    assert INTERVAL * 0.9 <= statistics.median(gaps) <= INTERVAL * 1.6, gaps
    # throughput counts moved bytes only (half of them here), over the elapsed time
    assert 0 < final['throughput_bps'] < total / 2.0 / 1.5
    job = vma.VmaClient(receiver.url).get_progress('job-ok')
    assert job['status'] == 'in_progress' and not vma.job_finished(job)
    disk, = job['disk_progresses']
    assert disk['disk_id'] == 'disk-2000' and disk['percent'] == 100.0
    assert disk['bytes_transferred'] == disk['total_bytes'] == job['bytes_transferred'] == job['total_bytes'] == total
    assert job['sync_type'] == 'full' and job['phase'] == 'Transfer'


def test_failed_copy_reports_failed_with_error_message(receiver):
    reporter = vma.ProgressReporter(receiver.url, 'job-bad', 'disk-2001', 'incremental', 1000, interval=INTERVAL)
    reporter.start()
    reporter.update(400, 100)
    reporter.finish(ok=False, message='write to target failed at offset 8192')
    final = received(receiver)[-1]['body']
    assert final['stage'] == 'Transfer' and final['status'] == 'failed' and final['disk_id'] == 'disk-2001'
    assert final['percent'] == 40.0 and final['error_message'] == 'write to target failed at offset 8192'
    assert reporter.warnings == []
    job = vma.VmaClient(receiver.url).get_progress('job-bad')
    assert job['status'] == 'failed' and vma.job_finished(job)
    assert job['disk_progresses'][0]['bytes_transferred'] == 400 and job['percentage'] == 40.0


def test_parallel_disks_report_independently(receiver):
    sizes = {2000: 10 ** 6, 2001: 3 * 10 ** 6, 2002: 0}
    reporters = dict((key, vma.ProgressReporter(receiver.url, 'job-multi', key, 'full', size, interval=INTERVAL))
                     for key, size in sizes.items())
    for r in reporters.values():
        r.start()
    client = vma.VmaClient(receiver.url)
    for step in range(1, 11):
        for key, r in reporters.items():
            r.update(step * sizes[key] // 10)
        time.sleep(0.03)
        if step == 5:
            reporters.pop(2000).finish()  # one disk done while the others still copy
            job = client.get_progress('job-multi')
            assert job['status'] == 'in_progress' and not vma.job_finished(job), job
    for r in reporters.values():
        r.finish()
    job = client.get_progress('job-multi')
    disks = dict((d['disk_id'], d) for d in job['disk_progresses'])
    assert sorted(disks) == ['disk-2000', 'disk-2001', 'disk-2002']
    for key, size in sizes.items():
        assert disks['disk-%d' % key]['bytes_transferred'] == disks['disk-%d' % key]['total_bytes'] == size
    assert job['bytes_transferred'] == job['total_bytes'] == sum(sizes.values())
    assert job['percentage'] == 100.0 and job['status'] == 'in_progress'


# ---------------------------------------------------------------- receiver failing, stalled, gone

@pytest.mark.parametrize('mode', ['fail', 'stall', 'down'])
def test_broken_vma_never_blocks_updates_and_finish_is_bounded(receiver, mode):
    url = receiver.url
    if mode == 'down':
        url = closed_port_url()
    receiver.state.stall_seconds = 8.0
    receiver.state.mode = mode
    reporter = vma.ProgressReporter(url, 'job-broken', 2000, 'full', 10 ** 9, token=TOKEN, interval=INTERVAL)
    reporter.start()
    time.sleep(0.1)  # the first send is in flight (stall) or has failed
    took = hammer(reporter)
    assert took < 0.5, 'update() must never block: 10,000 updates took %.3f s' % took
    time.sleep(INTERVAL * 2)
    took = hammer(reporter)
    assert took < 0.5, took
    began = time.monotonic()
    reporter.finish()
    took = time.monotonic() - began
    assert took < vma.SLOW_AFTER + vma.UNHEALTHY_GRACE + 0.5, 'finish() took %.2f s' % took
    warnings = reporter.warnings
    assert 1 <= len(warnings) <= 3, warnings
    assert any('not confirmed' in w for w in warnings)
    assert not any(TOKEN in w for w in warnings)
    if mode == 'fail':
        assert any('HTTP 500' in w and 'fail mode' in w for w in warnings), warnings
        assert received(receiver) and not received(receiver, 200)
    elif mode == 'stall':
        assert len(received(receiver)) == 1, 'nothing may queue behind a stalled send'
    else:
        assert any('Connection refused' in w for w in warnings), warnings


def test_copy_is_as_fast_with_a_stalled_or_failing_vma(receiver):
    """The same simulated 1 s copy, with the VMA ok, failing and stalled: the duration stays within noise."""
    receiver.state.stall_seconds = 8.0
    durations = {}
    for mode in ('ok', 'fail', 'stall'):
        receiver.state.mode = mode
        reporter = vma.ProgressReporter(receiver.url, 'job-' + mode, 2000, 'full', 10 ** 8, interval=INTERVAL)
        durations[mode] = simulated_copy(reporter, 1.0, 10 ** 8)
        assert bool(reporter.warnings) == (mode != 'ok'), (mode, reporter.warnings)
    assert durations['fail'] < durations['ok'] + 0.5, durations
    assert durations['stall'] < durations['ok'] + 0.5, durations


def test_vma_recovering_mid_copy_gets_the_final_state(receiver):
    receiver.state.mode = 'fail'
    reporter = vma.ProgressReporter(receiver.url, 'job-flaky', 2000, 'full', 1000, interval=INTERVAL)
    reporter.start()
    reporter.update(100)
    time.sleep(INTERVAL * 1.5)
    receiver.state.mode = 'ok'
    reporter.update(500)
    time.sleep(INTERVAL * 1.5)
    reporter.finish()
    ok = received(receiver, 200)
    assert ok and ok[-1]['body']['percent'] == 100.0 and ok[-1]['body']['bytes_transferred'] == 1000
    warnings = reporter.warnings
    assert len(warnings) == 1 and 'updates failed' in warnings[0] and 'HTTP 500' in warnings[0]


# ---------------------------------------------------------------- VmaClient

def test_client_posts_and_reads_with_a_quoted_job_id(receiver):
    client = vma.VmaClient(receiver.url + '/')
    answer = client.post_update('vm 1/disk?x', 'Discover', 'in_progress', sync_type='incremental')
    assert answer == {'status': 'success', 'job_id': 'vm 1/disk?x', 'auto_initialized': True}
    entry, = received(receiver)
    assert entry['job_id'] == 'vm%201%2Fdisk%3Fx'  # one raw path segment: quoted, not concatenated
    assert entry['body'] == {'stage': 'Discover', 'status': 'in_progress', 'sync_type': 'incremental'}
    job = client.get_progress('vm 1/disk?x')
    assert job['phase'] == 'Discover' and job['status'] == 'in_progress' and job['sync_type'] == 'incremental'
    assert client.post_update('vm 1/disk?x', 'Discover', 'in_progress') == {'status': 'success', 'job_id': 'vm 1/disk?x'}


def test_client_unknown_job_is_not_found(receiver):
    with pytest.raises(vma.VmaNotFoundError) as info:
        vma.VmaClient(receiver.url).get_progress('never-seen')
    assert info.value.status_code == 404 and str(info.value).endswith(': HTTP 404: job not found')


def test_client_retries_are_bounded(receiver):
    receiver.state.mode = 'fail'
    client = vma.VmaClient(receiver.url, retries=2, backoff=0.05)
    began = time.monotonic()
    with pytest.raises(vma.VmaHTTPError) as info:
        client.post_update('job-r', 'Transfer', 'in_progress', bytes_transferred=1)
    assert time.monotonic() - began < 2
    assert len(received(receiver)) == 3
    assert info.value.status_code == 500


def test_client_read_timeout(receiver):
    receiver.state.stall_seconds = 5.0
    receiver.state.mode = 'stall'
    client = vma.VmaClient(receiver.url, timeout=(1.0, 0.3), retries=0)
    began = time.monotonic()
    with pytest.raises(vma.VmaUnreachableError) as info:
        client.post_update('job-t', 'Transfer', 'in_progress')
    assert time.monotonic() - began < 1.5
    assert info.value.reason == 'no answer in time (read timeout)'


def test_client_bearer_token(token_receiver):
    vma.VmaClient(token_receiver.url, token=TOKEN).post_update('job-auth', 'Discover', 'in_progress')
    assert received(token_receiver)[-1]['authorized'] is True
    with pytest.raises(vma.VmaHTTPError) as info:
        vma.VmaClient(token_receiver.url, token='wrong-' + TOKEN).post_update('job-auth', 'Discover', 'in_progress')
    assert info.value.status_code == 401 and TOKEN not in str(info.value)


def test_client_down(receiver):
    url = closed_port_url()
    with pytest.raises(vma.VmaUnreachableError) as info:
        vma.VmaClient(url, retries=1, backoff=0.05).get_progress('j')
    assert 'Connection refused' in info.value.reason
    assert str(info.value).startswith("Cannot read the progress of job 'j' at %s/api/v1/progress/j: " % url)
