# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the vma_progress and vma_progress_info modules (in process, with a fake HTTP session)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import vma
from ansible_collections.migratekit.migration.plugins.modules import vma_progress, vma_progress_info

TOKEN = 'module-unit-t0ken'
URL = 'http://vma.test:8081'


class Answer(object):
    def __init__(self, status_code=200, body=None):
        self.status_code = status_code
        self._body = body
        self.text = json.dumps(body) if body is not None else ''

    def json(self):
        if self._body is None:
            raise ValueError('no JSON')
        return self._body


class Session(object):
    calls = []
    answer = Answer(200, {'status': 'success'})
    error = None

    def __init__(self):
        self.headers = {}
        self.verify = None

    def request(self, method, url, json=None, timeout=None):
        Session.calls.append(dict(method=method, url=url, json=json, headers=dict(self.headers)))
        if Session.error is not None:
            raise Session.error
        return Session.answer

    def close(self):
        pass


@pytest.fixture
def session(monkeypatch):
    Session.calls = []
    Session.answer = Answer(200, {'status': 'success'})
    Session.error = None

    class Client(vma.VmaClient):
        def __init__(self, *args, **kwargs):
            kwargs.update(session=Session(), sleep=lambda seconds: None)
            super(Client, self).__init__(*args, **kwargs)

    monkeypatch.setattr(vma, 'VmaClient', Client)
    monkeypatch.delenv(vma.JOB_ID_ENV, raising=False)
    return Session


def test_posts_one_update(run_module, session):
    args = dict(vma_url=URL, job_id='job 1', token=TOKEN, stage='Transfer', status='in_progress', disk_id='2000',
                bytes_transferred=25, total_bytes=100, throughput_bps=7, sync_type='full')
    out = run_module(vma_progress, args)
    assert not out.failed and out.result['changed'] is True and out.result['posted'] is True
    call, = session.calls
    assert call['url'] == URL + '/api/v1/progress/job%201/update'
    assert call['json'] == dict(stage='Transfer', status='in_progress', bytes_transferred=25, total_bytes=100,
                                throughput_bps=7, percent=25.0, disk_id='disk-2000', sync_type='full')
    assert call['headers']['Authorization'] == 'Bearer ' + TOKEN
    assert out.result['response'] == {'status': 'success'}
    assert TOKEN not in json.dumps(out.result)


def test_msg_is_sent_as_error_message(run_module, session):
    args = dict(vma_url=URL, job_id='j', stage='Transfer', status='failed', msg='target write failed')
    out = run_module(vma_progress, args)
    assert not out.failed and out.warnings == []
    assert session.calls[0]['json'] == dict(stage='Transfer', status='failed', error_message='target write failed')


def test_msg_on_a_non_failed_update_is_not_sent_with_a_warning(run_module, session):
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Discover', status='in_progress', msg='hi'))
    assert not out.failed and out.result['posted'] is True
    assert session.calls[0]['json'] == dict(stage='Discover', status='in_progress')
    assert out.warnings == ['msg is not sent: the VMA takes a message only as the error_message of an update '
                            'with status=failed']


@pytest.mark.parametrize('alias, wire', [('Queued', 'in_progress'), ('Running', 'in_progress'),
                                         ('Completed', 'completed'), ('Failed', 'failed')])
def test_deprecated_status_names_are_sent_as_wire_values_with_a_deprecation(run_module, session, alias, wire):
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Complete', status=alias))
    assert not out.failed and out.result['posted'] is True
    assert session.calls[0]['json'] == dict(stage='Complete', status=wire)
    deprecation, = out.result['deprecations']
    assert deprecation['version'] == '1.0.0' and deprecation['collection_name'] == 'migratekit.migration'
    assert deprecation['msg'].startswith('status=%s is deprecated: use status=%s' % (alias, wire))


def test_check_mode_posts_nothing(run_module, session):
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Discover', status='in_progress'),
                     check_mode=True)
    assert out.result['changed'] is True and out.result['posted'] is False
    assert out.result['update'] == dict(stage='Discover', status='in_progress')
    assert session.calls == []


def test_job_id_from_environment(run_module, monkeypatch, session):
    monkeypatch.setenv(vma.JOB_ID_ENV, 'env/job')
    out = run_module(vma_progress, dict(vma_url=URL, stage='Discover', status='in_progress'))
    assert out.result['job_id'] == 'env/job'
    assert session.calls[0]['url'] == URL + '/api/v1/progress/env%2Fjob/update'


def test_missing_job_id_fails_naming_the_option_and_variable(run_module, session):
    out = run_module(vma_progress, dict(vma_url=URL, stage='Discover', status='in_progress'))
    assert out.failed
    assert out.result['msg'].startswith('Cannot post a progress update to the VMA: invalid job_id: expected')
    assert vma.JOB_ID_ENV in out.result['msg']
    assert session.calls == []


@pytest.mark.parametrize('args, field', [
    (dict(percent=101.0), 'percent'),
    (dict(bytes_transferred=-1), 'bytes_transferred'),
    (dict(total_bytes=-2), 'total_bytes'),
    (dict(vma_url='vma.example.com'), 'vma_url'),
])
def test_bad_input_fails_before_posting(run_module, session, args, field):
    base = dict(vma_url=URL, job_id='job-9', stage='Transfer', status='in_progress')
    base.update(args)
    out = run_module(vma_progress, base)
    assert out.failed and "for job 'job-9': invalid %s" % field in out.result['msg']
    assert session.calls == []


def test_bad_choice_is_rejected_by_the_argument_spec(run_module, session):
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Copy', status='in_progress'))
    assert out.failed and 'stage' in out.result['msg'] and 'Discover' in out.result['msg']
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Transfer', status='running'))
    assert out.failed and 'status' in out.result['msg'] and 'in_progress, completed, failed' in out.result['msg']


def test_unreachable_vma_is_a_warning_by_default(run_module, session):
    session.answer = Answer(503, {'error': 'maintenance'})
    args = dict(vma_url=URL, job_id='j', token=TOKEN, stage='Complete', status='completed')
    out = run_module(vma_progress, args)
    assert not out.failed
    assert out.result['changed'] is False and out.result['posted'] is False
    assert 'HTTP 503: maintenance' in out.result['error']
    assert len(out.warnings) == 1 and 'HTTP 503: maintenance' in out.warnings[0]
    assert len(session.calls) == 3  # bounded retries
    assert TOKEN not in json.dumps(out.result)


def test_unreachable_vma_fails_when_required(run_module, session):
    session.error = OSError('connection refused')
    args = dict(vma_url=URL, job_id='j', stage='Transfer', status='failed', msg='boom', required=True)
    out = run_module(vma_progress, args)
    assert out.failed
    assert out.result['msg'] == ("Cannot post the progress update for job 'j' at "
                                 "http://vma.test:8081/api/v1/progress/j/update: OSError: connection refused")


def test_info_reads_progress(run_module, session):
    session.answer = Answer(200, {'job_id': 'j', 'status': 'in_progress', 'percentage': 50.0})
    out = run_module(vma_progress_info, dict(vma_url=URL, job_id='j'), check_mode=True)
    assert not out.failed and out.result['changed'] is False and out.result['found'] is True
    assert out.result['progress']['percentage'] == 50.0 and out.result['finished'] is False
    assert session.calls[0]['method'] == 'GET' and session.calls[0]['url'] == URL + '/api/v1/progress/j'


def test_info_unknown_job_is_not_found(run_module, session):
    session.answer = Answer(404, {'error': 'job not found'})
    out = run_module(vma_progress_info, dict(vma_url=URL, job_id='nope'))
    assert not out.failed and out.result['found'] is False and out.result['progress'] == {}


def test_info_error_fails_naming_operation_and_job(run_module, session):
    session.answer = Answer(500, {'error': 'db down'})
    out = run_module(vma_progress_info, dict(vma_url=URL, job_id='j'))
    assert out.failed and out.result['msg'] == ("Cannot read the progress of job 'j' at "
                                                "http://vma.test:8081/api/v1/progress/j: HTTP 500: db down")


def test_missing_requests_is_a_clear_failure(run_module, monkeypatch, session):
    monkeypatch.setattr(vma_progress, 'LIBRARIES', [('requests', 'ImportError: No module named requests')])
    out = run_module(vma_progress, dict(vma_url=URL, job_id='j', stage='Discover', status='in_progress'))
    assert out.failed and 'requests' in out.result['msg']
