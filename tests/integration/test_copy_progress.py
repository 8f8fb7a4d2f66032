# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of a real copy reaching the lab's VMA receiver, and a VMA that fails or stalls.

The copy runs through the same path as the nbd_incremental_copy module
(nbd_copy.copy_disk with VMA reporters from nbd_copy.progress_factory), from
one nbdkit to another whose `rate` filter makes the copy last about five
seconds, so the 2-second reporting rhythm can be seen.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy, vma
from ansible_collections.migratekit.migration.tests.integration.helpers import MiB, compare, received, write_image

pytest.importorskip('nbd')
pytest.importorskip('requests')
pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

SIZE = 48 * MiB
# nbdkit's rate filter counts bits; measured here, 50 Mbit/s makes the copy
# of 48 MiB last about 5.7 s (60M: 4.5 s, 30M: 10.9 s).
TARGET_RATE = 'rate=50M'
INTERVAL = 2.0


@pytest.fixture
def disk(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, [(0, os.urandom(SIZE))])

    def fresh_copy_servers(name):
        target = write_image(str(tmp_path / (name + '.img')), SIZE)
        src = nbdkit(name + '-src', 'file', source, read_only=True)
        dst = nbdkit(name + '-dst', 'file', target, TARGET_RATE, filters=['rate'])
        return src.uri, dst.uri, target
    return source, fresh_copy_servers


def copy_with_progress(source_uri, target_uri, vma_url, job_id):
    params = {'vma_url': vma_url, 'job_id': job_id, 'disk_id': None, 'token': None,
              'validate_certs': True, 'progress_interval': INTERVAL}
    return nbd_copy.copy_disk(source_uri, target_uri, sync_type='full', target_is_zero=True, disk_key=2000,
                              progress_factory=nbd_copy.progress_factory(vma.ProgressReporter, params))


def test_updates_arrive_every_two_seconds_with_monotonic_bytes_and_a_final_100_percent(disk, vma_receivers):
    source, servers = disk
    receiver = vma_receivers()
    src, dst, target = servers('ok')

    result = copy_with_progress(src, dst, receiver.url, 'job-ok')

    compare(source, target)
    assert result['bytes_written'] == SIZE and not result.get('warnings')
    updates = [u for u in received(receiver) if u['job_id'] == 'job-ok']
    bodies = [u['body'] for u in updates]
    assert all(u['status_code'] == 200 for u in updates)
    assert all(b['disk_id'] == 'disk-2000' and b['sync_type'] == 'full' for b in bodies)
    assert bodies[0]['status'] == 'in_progress' and bodies[0]['bytes_transferred'] == 0
    final = bodies[-1]
    # the disk is done at 100 %; ending the job is the VM-wide update's business
    assert (final['stage'], final['status'], final['percent']) == ('Transfer', 'in_progress', 100)
    assert final['bytes_transferred'] == final['total_bytes'] == SIZE
    assert all(b['stage'] == 'Transfer' and b['status'] == 'in_progress' for b in bodies)
    sent = [b['bytes_transferred'] for b in bodies]
    assert sent == sorted(sent), 'bytes_transferred went backwards: %s' % sent
    # The periodic updates in between: at least two for a ~5 s copy, each about 2 s after the previous.
    running = [u for u in updates[1:-1] if u['body']['status'] == 'in_progress']
    assert len(running) >= 2, bodies
    assert all(0 < u['body']['bytes_transferred'] < SIZE and u['body']['throughput_bps'] > 0 for u in running)
    times = [u['received_at'] for u in updates[:1] + running]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert all(1.5 <= gap <= 3.0 for gap in gaps), gaps
    # what the appliance keeps: the disk's bytes, and the job's aggregate from them
    job = vma.VmaClient(receiver.url).get_progress('job-ok')
    disk_entry, = job['disk_progresses']
    assert (disk_entry['disk_id'], disk_entry['bytes_transferred'], disk_entry['total_bytes'],
            disk_entry['percent']) == ('disk-2000', SIZE, SIZE, 100.0)
    assert disk_entry['throughput_mbps'] == final['throughput_bps'] / 1048576.0
    assert job['bytes_transferred'] == job['total_bytes'] == SIZE and job['percentage'] == 100.0
    assert job['sync_type'] == 'full' and job['status'] == 'in_progress'


@pytest.mark.parametrize('mode', ['fail', 'stall'])
def test_a_failing_or_stalled_vma_neither_fails_nor_slows_the_copy(disk, vma_receivers, mode):
    source, servers = disk
    receiver = vma_receivers()
    src, dst, target = servers('baseline')
    baseline = copy_with_progress(src, dst, receiver.url, 'job-baseline')
    assert not baseline.get('warnings')

    receiver.state.mode = mode
    src, dst, target = servers(mode)
    result = copy_with_progress(src, dst, receiver.url, 'job-' + mode)

    compare(source, target)
    assert result['bytes_written'] == SIZE
    assert result['elapsed'] <= baseline['elapsed'] * 1.25 + 0.5, (result['elapsed'], baseline['elapsed'])
    assert result['warnings'] and any('job-' + mode in w for w in result['warnings']), result['warnings']
    if mode == 'fail':
        assert received(receiver, status_code=500), 'the failing VMA saw no update'
