# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vma_progress and vma_progress_info for real: `ansible localhost -m ...`
against the lab's VMA receiver on 127.0.0.1."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import JOB_ID_ENV, received, run_module

TOKEN = 'module-integration-t0ken'


@pytest.fixture
def receiver(vma_receivers):
    return vma_receivers(token=TOKEN)


def test_vma_progress_posts_one_update(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job/1', token=TOKEN, stage='Complete', status='Completed',
        disk_id='2000', bytes_transferred=4096, total_bytes=4096, throughput_bps=1024, sync_type='incremental'))
    assert not out.failed, out.stdout + out.stderr
    assert out.result['changed'] is True and out.result['posted'] is True
    assert out.result['response']['status'] == 'success'
    assert out.result['url'] == receiver.url + '/api/v1/progress/job%2F1/update'
    entry, = received(receiver)
    assert entry['authorized'] is True and entry['job_id'] == 'job%2F1'
    assert entry['body'] == dict(stage='Complete', status='Completed', disk_id='disk-2000', bytes_transferred=4096,
                                 total_bytes=4096, throughput_bps=1024, percent=100.0, sync_type='incremental')
    assert TOKEN not in out.stdout + out.stderr


def test_vma_progress_check_mode_posts_nothing(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-2', token=TOKEN, stage='Discover', status='Running'), check=True)
    assert not out.failed and out.result['changed'] is True and out.result['posted'] is False
    assert out.result['update'] == dict(stage='Discover', status='Running')
    assert received(receiver) == []


def test_vma_progress_job_id_from_environment(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, token=TOKEN, stage='Discover', status='Queued'), env={JOB_ID_ENV: 'awx-job-77'})
    assert not out.failed and out.result['job_id'] == 'awx-job-77'
    assert received(receiver)[0]['job_id'] == 'awx-job-77'


def test_vma_progress_failing_vma_is_a_warning_by_default(receiver):
    receiver.state.mode = 'fail'
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-3', token=TOKEN, stage='Transfer', status='Failed', msg='copy failed'))
    assert not out.failed, out.stdout
    assert out.result['changed'] is False and out.result['posted'] is False
    assert 'HTTP 500' in out.result['error']
    assert "[WARNING]: Cannot post the progress update for job 'job-3'" in out.warnings
    entries = received(receiver)
    assert len(entries) == 3  # bounded retries
    assert entries[0]['body']['message'] == 'copy failed'
    assert TOKEN not in out.stdout + out.stderr


def test_vma_progress_failing_vma_fails_when_required(receiver):
    receiver.state.mode = 'fail'
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-4', token=TOKEN, stage='Discover', status='Running', required=True))
    assert out.failed
    assert out.result['msg'].startswith("Cannot post the progress update for job 'job-4' at %s" % receiver.url)
    assert 'HTTP 500: internal_error' in out.result['msg']


def test_vma_progress_bad_input_fails_before_posting(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-5', stage='Transfer', status='Running', percent=150))
    assert out.failed and out.result['msg'] == (
        "Cannot post a progress update to the VMA for job 'job-5': invalid percent: expected a number from 0 to "
        "100, got 150.0")
    out = run_module('vma_progress', dict(vma_url=receiver.url, stage='Discover', status='Running'))
    assert out.failed and 'invalid job_id' in out.result['msg'] and JOB_ID_ENV in out.result['msg']
    assert received(receiver) == []


def test_vma_progress_info(receiver):
    args = dict(vma_url=receiver.url, job_id='job 6', token=TOKEN)
    out = run_module('vma_progress_info', args, check=True)
    assert not out.failed and out.result['found'] is False and out.result['progress'] == {}
    run_module('vma_progress', dict(args, stage='Transfer', status='Running', disk_id='disk-2000',
                                    bytes_transferred=25, total_bytes=100))
    out = run_module('vma_progress_info', args, check=True)
    assert not out.failed and out.result['changed'] is False and out.result['found'] is True
    assert out.result['progress']['status'] == 'Running' and out.result['progress']['percent'] == 25.0
    assert out.result['url'] == receiver.url + '/api/v1/progress/job%206'
    out = run_module('vma_progress_info', dict(args, token='wrong-' + TOKEN))
    assert out.failed and out.result['msg'] == (
        "Cannot read the progress of job 'job 6' at %s/api/v1/progress/job%%206: HTTP 401: unauthorized: a valid "
        "bearer token is required" % receiver.url)
    assert TOKEN not in out.stdout + out.stderr


def test_vma_progress_stalled_vma_costs_one_read_timeout(receiver):
    receiver.state.stall_seconds = 30.0
    receiver.state.mode = 'stall'
    began = time.monotonic()
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-7', token=TOKEN, stage='Discover', status='Running'))
    took = time.monotonic() - began
    assert not out.failed and out.result['posted'] is False
    assert 'no answer in time (read timeout)' in out.result['error']
    assert len(received(receiver)) == 1 and took < 5.0 + 5.0, took
