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
        vma_url=receiver.url, job_id='job/1', token=TOKEN, stage='Complete', status='completed',
        disk_id='2000', bytes_transferred=4096, total_bytes=4096, throughput_bps=1024, sync_type='incremental'),
        env={'ANSIBLE_DEPRECATION_WARNINGS': '1'})
    assert not out.failed, out.stdout + out.stderr
    assert out.result['changed'] is True and out.result['posted'] is True
    assert out.result['response']['status'] == 'success'
    assert out.result['url'] == receiver.url + '/api/v1/progress/job%2F1/update'
    entry, = received(receiver)
    assert entry['authorized'] is True and entry['job_id'] == 'job%2F1'
    assert entry['body'] == dict(stage='Complete', status='completed', disk_id='disk-2000', bytes_transferred=4096,
                                 total_bytes=4096, throughput_bps=1024, percent=100.0, sync_type='incremental')
    assert '[DEPRECATION WARNING]' not in out.output
    assert TOKEN not in out.stdout + out.stderr


def test_vma_progress_deprecated_status_still_works_and_says_so(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-old', token=TOKEN, stage='Complete', status='Completed',
        msg='done'), env={'ANSIBLE_DEPRECATION_WARNINGS': '1'})
    assert not out.failed and out.result['posted'] is True
    assert received(receiver)[-1]['body'] == dict(stage='Complete', status='completed')
    assert '[DEPRECATION WARNING]: status=Completed is deprecated: use status=completed' in out.warnings
    assert 'will be removed from migratekit.migration in version 1.0.0' in out.warnings
    assert '[WARNING]: msg is not sent: the VMA takes a message only as the error_message' in out.warnings


def test_vma_progress_check_mode_posts_nothing(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-2', token=TOKEN, stage='Discover', status='in_progress'), check=True)
    assert not out.failed and out.result['changed'] is True and out.result['posted'] is False
    assert out.result['update'] == dict(stage='Discover', status='in_progress')
    assert received(receiver) == []


def test_vma_progress_job_id_from_environment(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, token=TOKEN, stage='Discover', status='in_progress'), env={JOB_ID_ENV: 'awx-job-77'})
    assert not out.failed and out.result['job_id'] == 'awx-job-77'
    assert received(receiver)[0]['job_id'] == 'awx-job-77'


def test_vma_progress_failing_vma_is_a_warning_by_default(receiver):
    receiver.state.mode = 'fail'
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-3', token=TOKEN, stage='Transfer', status='failed', msg='copy failed'))
    assert not out.failed, out.stdout
    assert out.result['changed'] is False and out.result['posted'] is False
    assert 'HTTP 500' in out.result['error']
    assert "[WARNING]: Cannot post the progress update for job 'job-3'" in out.warnings
    entries = received(receiver)
    assert len(entries) == 3  # bounded retries
    assert entries[0]['body']['error_message'] == 'copy failed' and entries[0]['body']['status'] == 'failed'
    assert TOKEN not in out.stdout + out.stderr


def test_vma_progress_failing_vma_fails_when_required(receiver):
    receiver.state.mode = 'fail'
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-4', token=TOKEN, stage='Discover', status='in_progress', required=True))
    assert out.failed
    assert out.result['msg'].startswith("Cannot post the progress update for job 'job-4' at %s" % receiver.url)
    # the VMA's own text (plain text, as the appliance's http.Error writes it)
    assert out.result['msg'].endswith('HTTP 500: failed to update progress: the lab VMA is in fail mode')
    assert out.result['vma_error'] == 'failed to update progress: the lab VMA is in fail mode'


def test_vma_progress_bad_input_fails_before_posting(receiver):
    out = run_module('vma_progress', dict(
        vma_url=receiver.url, job_id='job-5', stage='Transfer', status='in_progress', percent=150))
    assert out.failed and out.result['msg'] == (
        "Cannot post a progress update to the VMA for job 'job-5': invalid percent: expected a number from 0 to "
        "100, got 150.0")
    out = run_module('vma_progress', dict(vma_url=receiver.url, stage='Discover', status='in_progress'))
    assert out.failed and 'invalid job_id' in out.result['msg'] and JOB_ID_ENV in out.result['msg']
    assert received(receiver) == []


def test_vma_progress_info(receiver):
    args = dict(vma_url=receiver.url, job_id='job 6', token=TOKEN)
    out = run_module('vma_progress_info', args, check=True)
    assert not out.failed and out.result['found'] is False and out.result['progress'] == {}
    assert out.result['finished'] is False
    run_module('vma_progress', dict(args, stage='Transfer', status='in_progress', disk_id='disk-2000',
                                    bytes_transferred=25, total_bytes=100, throughput_bps=2 * 1048576,
                                    sync_type='full'))
    out = run_module('vma_progress_info', args, check=True)
    assert not out.failed and out.result['changed'] is False and out.result['found'] is True
    assert out.result['finished'] is False
    progress = out.result['progress']
    # the appliance's GET shape (progress_handler.go VMAProgressResponse), with what it derives
    assert set(progress) == {'job_id', 'status', 'sync_type', 'phase', 'percentage', 'current_operation',
                             'bytes_transferred', 'total_bytes', 'throughput', 'timing', 'vm_info', 'phases',
                             'errors', 'last_error', 'disk_progresses'}
    assert (progress['job_id'], progress['status'], progress['phase'], progress['sync_type']) == (
        'job 6', 'in_progress', 'Transfer', 'full')
    assert progress['percentage'] == 25.0 and progress['current_operation'] == 'Transferring Data'
    assert (progress['bytes_transferred'], progress['total_bytes']) == (25, 100)
    assert progress['throughput']['current_mbps'] == 2.0 and progress['timing']['eta_seconds'] == 0
    assert progress['disk_progresses'] == [dict(disk_id='disk-2000', label='Disk disk-2000', bytes_transferred=25,
                                                total_bytes=100, percent=25.0, throughput_mbps=2.0,
                                                status='Streaming')]
    run_module('vma_progress', dict(args, stage='Complete', status='completed', bytes_transferred=100,
                                    total_bytes=100, percent=100))
    out = run_module('vma_progress_info', args)
    assert out.result['finished'] is True and out.result['progress']['status'] == 'completed'
    assert out.result['progress']['percentage'] == 100.0
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
        vma_url=receiver.url, job_id='job-7', token=TOKEN, stage='Discover', status='in_progress'))
    took = time.monotonic() - began
    assert not out.failed and out.result['posted'] is False
    assert 'no answer in time (read timeout)' in out.result['error']
    assert len(received(receiver)) == 1 and took < 5.0 + 5.0, took
