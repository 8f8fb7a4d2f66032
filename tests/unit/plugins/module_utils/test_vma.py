# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the VMA progress client: validation, URLs, retries, and the
ProgressReporter's throttling, coalescing and warnings (controllable clock,
injected sender; no network)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import threading
import time

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import vma

TOKEN = 'unit-token-5ecret'
URL = 'http://vma.test:8081'


# ---------------------------------------------------------------- helpers

class FakeClock(object):
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Recorder(object):
    """A sender that records bodies; fails while ``fail`` is set."""

    def __init__(self, fail=None):
        self.bodies = []
        self.fail = fail

    def __call__(self, body):
        if self.fail is not None:
            raise self.fail
        self.bodies.append(body)


def reporter(sender, clock, total=1000, interval=2.0, **kwargs):
    kwargs.setdefault('threaded', False)
    return vma.ProgressReporter(URL, 'job-1', 2000, 'incremental', total, interval=interval,
                                clock=clock, sender=sender, **kwargs)


class FakeResponse(object):
    def __init__(self, status_code=200, body=None, text=None):
        self.status_code = status_code
        self._body = body
        self.text = text if text is not None else (json.dumps(body) if body is not None else '')

    def json(self):
        if self._body is None:
            return json.loads(self.text)
        return self._body


class FakeSession(object):
    """Answers requests from a script: FakeResponse objects or exceptions."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []
        self.headers = {}
        self.verify = None
        self.closed = False

    def request(self, method, url, json=None, timeout=None):
        self.calls.append(dict(method=method, url=url, json=json, timeout=timeout,
                               headers=dict(self.headers), verify=self.verify))
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed = True


def client(*script, **kwargs):
    sleeps = []
    session = FakeSession(*script)
    kwargs.setdefault('token', TOKEN)
    c = vma.VmaClient(URL, session=session, sleep=sleeps.append, **kwargs)
    return c, session, sleeps


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize('field, kwargs', [
    ('stage', dict(stage='Copy')),
    ('status', dict(status='running')),
    ('status', dict(status='In_Progress')),
    ('status', dict(status=None)),
    ('sync_type', dict(sync_type='delta')),
    ('percent', dict(percent=100.5)),
    ('percent', dict(percent=-1)),
    ('percent', dict(percent=float('nan'))),
    ('percent', dict(percent=True)),
    ('percent', dict(percent='50')),
    ('bytes_transferred', dict(bytes_transferred=-1)),
    ('bytes_transferred', dict(bytes_transferred=1.5)),
    ('total_bytes', dict(total_bytes=True)),
    ('total_bytes', dict(total_bytes='10')),
    ('throughput_bps', dict(throughput_bps=-5)),
])
def test_build_update_rejects_bad_values_naming_the_field(field, kwargs):
    args = dict(stage='Transfer', status='in_progress')
    args.update(kwargs)
    with pytest.raises(vma.VmaValidationError) as info:
        vma.build_update(**args)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert str(info.value).startswith('invalid %s: expected ' % field)


def test_validation_message_lists_the_vocabulary():
    with pytest.raises(ValueError, match='expected one of Discover, Creating Snapshot, Transfer, Complete, got .Copy.'):
        vma.build_update('Copy', 'in_progress')
    with pytest.raises(ValueError, match='one of in_progress, completed, failed'):
        vma.build_update('Transfer', 'Done')


def test_build_update_full_body():
    body = vma.build_update('Transfer', 'in_progress', bytes_transferred=50, total_bytes=200, throughput_bps=10,
                            disk_id=2000, sync_type='full')
    assert body == dict(stage='Transfer', status='in_progress', bytes_transferred=50, total_bytes=200,
                        throughput_bps=10, percent=25.0, disk_id='disk-2000', sync_type='full')
    assert vma.build_update('Discover', 'in_progress') == dict(stage='Discover', status='in_progress')
    assert vma.build_update('Creating Snapshot', 'in_progress')['stage'] == 'Creating Snapshot'
    assert vma.build_update('Complete', 'completed', percent=100)['percent'] == 100.0
    assert vma.build_update('Transfer', 'in_progress', bytes_transferred=0, total_bytes=0) == dict(
        stage='Transfer', status='in_progress', bytes_transferred=0, total_bytes=0)


@pytest.mark.parametrize('alias, wire', [
    ('Queued', 'in_progress'), ('Running', 'in_progress'), ('Completed', 'completed'), ('Failed', 'failed'),
])
def test_deprecated_status_names_go_out_as_the_wire_values(alias, wire):
    assert vma.wire_status(alias) == wire
    assert vma.build_update('Discover', alias)['status'] == wire
    assert vma.STATUSES == ('in_progress', 'completed', 'failed')


def test_the_failure_text_is_sent_as_error_message_and_only_with_failed():
    body = vma.build_update('Transfer', 'failed', disk_id='disk-2000', message='target write failed')
    assert body == dict(stage='Transfer', status='failed', disk_id='disk-2000', error_message='target write failed')
    assert 'message' not in body
    assert vma.build_update('Transfer', 'Failed', message='x')['error_message'] == 'x'
    for status in ('in_progress', 'completed', 'Running'):
        body = vma.build_update('Complete', status, message='3 disks, 12 bytes moved')
        assert 'error_message' not in body and 'message' not in body


def test_percent_is_floored_so_100_means_done():
    assert vma.compute_percent(99999, 100000) == 99.99
    assert vma.compute_percent(100000, 100000) == 100.0
    assert vma.compute_percent(5, 0) == 0.0
    assert vma.compute_percent(300, 200) == 100.0


def test_message_is_cut():
    body = vma.build_update('Transfer', 'failed', message='x' * 5000)
    assert len(body['error_message']) == vma.MAX_MESSAGE_LENGTH and body['error_message'].endswith('...')


@pytest.mark.parametrize('disk_id, expected', [
    (2000, 'disk-2000'), ('2000', 'disk-2000'), ('disk-2000', 'disk-2000'), ('scsi0:1', 'scsi0:1'),
    (None, None), ('', None),
])
def test_disk_id_normalized(disk_id, expected):
    assert vma.normalize_disk_id(disk_id) == expected


@pytest.mark.parametrize('job_id', ['', None, '.', '..', 'a\nb', 'tab\there', 'x' * 257, 42])
def test_bad_job_ids(job_id, monkeypatch):
    monkeypatch.delenv(vma.JOB_ID_ENV, raising=False)
    with pytest.raises(vma.VmaValidationError) as info:
        vma.validate_job_id(vma.resolve_job_id(job_id))
    assert info.value.field == 'job_id'
    assert vma.JOB_ID_ENV in str(info.value)


def test_job_id_from_environment(monkeypatch):
    monkeypatch.setenv(vma.JOB_ID_ENV, 'env-job')
    assert vma.resolve_job_id(None) == 'env-job'
    assert vma.resolve_job_id('') == 'env-job'
    assert vma.resolve_job_id('param-job') == 'param-job'


@pytest.mark.parametrize('url', ['ftp://vma', 'http://', 'vma.example.com', 'http://vma?x=1', 'http://vma/#f',
                                 'http://vma:99999', '', None, '   '])
def test_bad_vma_urls(url):
    with pytest.raises(vma.VmaValidationError) as info:
        vma.validate_vma_url(url)
    assert info.value.field == 'vma_url'


def test_bad_vma_url_message_hides_credentials():
    with pytest.raises(vma.VmaValidationError) as info:
        vma.validate_vma_url('ftp://user:pw-secret@vma')
    assert 'pw-secret' not in str(info.value)


def test_token_validation_never_shows_the_token():
    with pytest.raises(vma.VmaValidationError) as info:
        vma.validate_token('abc\r\nX-Evil: 1' + TOKEN)
    assert TOKEN not in str(info.value) and info.value.field == 'token'
    assert vma.validate_token('  %s\n' % TOKEN) == TOKEN
    assert vma.validate_token('') is None


# ---------------------------------------------------------------- URLs

@pytest.mark.parametrize('job_id, quoted', [
    ('job-1', 'job-1'),
    ('a/b c?d#e%f', 'a%2Fb%20c%3Fd%23e%25f'),
    ('../admin', '..%2Fadmin'),
    ('caf\u00e9', 'caf%C3%A9'),
    ('x;y=1&z', 'x%3By%3D1%26z'),
])
def test_job_id_is_quoted_in_urls(job_id, quoted):
    assert vma.update_url(URL, job_id) == URL + '/api/v1/progress/' + quoted + '/update'
    assert vma.progress_url(URL + '/', job_id) == URL + '/api/v1/progress/' + quoted


def test_base_url_with_path_prefix():
    assert vma.update_url('https://h.example/vma/', 'j') == 'https://h.example/vma/api/v1/progress/j/update'


def test_redact_url():
    assert vma.redact_url('https://u:p@h:1/x') == 'https://h:1/x'
    assert vma.redact_url('https://h/x') == 'https://h/x'


def test_argument_spec():
    spec = vma.PROGRESS_INFO_SPEC.argument_spec
    assert spec['vma_url']['required'] is True
    assert spec['token']['no_log'] is True
    assert spec['job_id']['fallback'][1] == [vma.JOB_ID_ENV]
    assert spec['validate_certs']['default'] is True
    assert vma.REPORTING_SPEC.argument_spec['vma_url']['required'] is False
    merged = vma.PROGRESS_INFO_SPEC.merge(vma.REPORTING_SPEC)
    assert merged.argument_spec is not vma.PROGRESS_INFO_SPEC.argument_spec
    assert vma.PROGRESS_INFO_SPEC.argument_spec['vma_url']['required'] is True


# ---------------------------------------------------------------- VmaClient

def test_post_update_sends_json_with_bearer_token_and_timeouts():
    c, session, sleeps = client(FakeResponse(200, {'status': 'success', 'job_id': 'a/b'}), validate_certs=False)
    answer = c.post_update('a/b', 'Transfer', 'in_progress', bytes_transferred=1, total_bytes=4,
                           disk_id='disk-2000')
    assert answer == {'status': 'success', 'job_id': 'a/b'}
    call, = session.calls
    assert call['method'] == 'POST'
    assert call['url'] == URL + '/api/v1/progress/a%2Fb/update'
    assert call['json'] == dict(stage='Transfer', status='in_progress', bytes_transferred=1, total_bytes=4,
                                percent=25.0, disk_id='disk-2000')
    assert call['headers']['Authorization'] == 'Bearer ' + TOKEN
    assert call['timeout'] == vma.DEFAULT_TIMEOUT == (3.0, 5.0)
    assert call['verify'] is False
    assert sleeps == []
    assert TOKEN not in repr(c)


def test_no_token_no_authorization_header():
    c, session, dummy = client(FakeResponse(200, {}), token=None)
    c.post_update('j', 'Discover', 'in_progress')
    assert 'Authorization' not in session.calls[0]['headers']
    assert session.calls[0]['verify'] is True


def test_invalid_update_is_not_sent():
    c, session, dummy = client(FakeResponse(200, {}))
    with pytest.raises(vma.VmaValidationError):
        c.post_update('j', 'Transfer', 'in_progress', percent=101)
    with pytest.raises(vma.VmaValidationError):
        c.post_update('..', 'Transfer', 'in_progress')
    assert session.calls == []


def test_retries_with_backoff_then_succeeds():
    c, session, sleeps = client(FakeResponse(503, text='busy'), OSError('reset'), FakeResponse(200, text='ok'))
    assert c.post_update('j', 'Transfer', 'in_progress') == {}
    assert len(session.calls) == 3
    assert sleeps == [0.5, 1.0]


def test_retries_are_bounded_and_error_names_operation_job_disk_and_url():
    c, session, sleeps = client(FakeResponse(500, {'error': 'db down', 'details': 'retry later'}))
    with pytest.raises(vma.VmaHTTPError) as info:
        c.post_update('job 7', 'Transfer', 'in_progress', disk_id='disk-2001')
    assert len(session.calls) == 1 + vma.DEFAULT_RETRIES
    assert sleeps == [0.5, 1.0]
    err = info.value
    assert err.status_code == 500 and err.details['vma_error'] == 'db down: retry later'
    assert str(err) == ("Cannot post the progress update for job 'job 7' (disk-2001) at "
                        "http://vma.test:8081/api/v1/progress/job%207/update: HTTP 500: db down: retry later")
    assert TOKEN not in str(err)


def test_backoff_is_capped():
    c, session, sleeps = client(FakeResponse(502), retries=5, backoff=0.5)
    with pytest.raises(vma.VmaHTTPError):
        c.get_progress('j')
    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_read_timeouts_are_not_retried():
    requests = pytest.importorskip('requests')
    c, session, sleeps = client(requests.exceptions.ReadTimeout('read timed out'))
    with pytest.raises(vma.VmaUnreachableError, match='no answer in time'):
        c.post_update('j', 'Transfer', 'in_progress')
    assert len(session.calls) == 1 and sleeps == []


def test_client_errors_are_not_retried():
    c, session, sleeps = client(FakeResponse(400, text='invalid request body: bad stage\n'))
    with pytest.raises(vma.VmaHTTPError) as info:
        c.post_update('j', 'Transfer', 'in_progress')
    assert len(session.calls) == 1 and sleeps == []
    assert info.value.details['vma_error'] == 'invalid request body: bad stage'


def test_get_progress():
    job = {'job_id': 'j', 'status': 'in_progress', 'percentage': 12.5}
    c, session, dummy = client(FakeResponse(200, job))
    assert c.get_progress('j') == job
    assert session.calls[0]['method'] == 'GET' and session.calls[0]['url'] == URL + '/api/v1/progress/j'
    assert session.calls[0]['json'] is None


def test_get_progress_not_found_and_bad_answers():
    c, dummy, dummy2 = client(FakeResponse(404, text='job not found\n'))
    with pytest.raises(vma.VmaNotFoundError) as info:
        c.get_progress('nope')
    assert "read the progress of job 'nope'" in str(info.value) and 'HTTP 404: job not found' in str(info.value)
    c, dummy, dummy2 = client(FakeResponse(200, text='<html>'))
    with pytest.raises(vma.VmaResponseError, match='not a JSON object'):
        c.get_progress('j')


def test_unreachable_errors_are_short():
    requests = pytest.importorskip('requests')
    exc = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: /x (Caused by "
        "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=1): Failed to establish a new connection: "
        "[Errno 111] Connection refused\"))")
    c, dummy, sleeps = client(exc, retries=1)
    with pytest.raises(vma.VmaUnreachableError) as info:
        c.post_update('j', 'Transfer', 'in_progress')
    assert info.value.reason == 'connection failed ([Errno 111] Connection refused)'
    assert info.value.status_code is None and sleeps == [0.5]
    assert vma.describe_exception(requests.exceptions.ReadTimeout('x')) == 'no answer in time (read timeout)'
    assert vma.describe_exception(requests.exceptions.ConnectTimeout('x')) == 'connection timed out'


def test_client_closes_its_session():
    c, session, dummy = client(FakeResponse(200, {}))
    with c:
        pass
    assert session.closed


# ---------------------------------------------------------------- ProgressReporter: throttling, coalescing

def test_start_sends_transfer_in_progress_at_zero():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    assert r.poll() is True
    assert sent.bodies == [dict(stage='Transfer', status='in_progress', bytes_transferred=0, total_bytes=1000,
                                throughput_bps=0, percent=0.0, disk_id='disk-2000', sync_type='incremental')]


def test_updates_are_throttled_to_the_interval():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.poll()
    for second in (0.5, 1.0, 1.5, 1.9):
        clock.advance(0.5 if second != 1.9 else 0.4)
        r.update(int(second * 100))
        assert r.poll() is False, second
    clock.advance(0.1)  # 2.0 s after the start update
    assert r.poll() is True
    assert len(sent.bodies) == 2 and sent.bodies[1]['bytes_transferred'] == 190
    assert r.poll() is False  # nothing new


def test_updates_are_coalesced_newest_state_wins():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock, total=10 ** 6)
    r.start()
    r.poll()
    for i in range(1, 10001):
        r.update(i * 10, i * 5)
    clock.advance(2.0)
    assert r.poll() is True
    assert r.poll() is False
    assert len(sent.bodies) == 2
    assert sent.bodies[1]['bytes_transferred'] == 100000 and sent.bodies[1]['percent'] == 10.0


def test_nothing_is_sent_without_new_updates():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.poll()
    clock.advance(60)
    assert r.poll() is False
    assert len(sent.bodies) == 1


def test_send_cadence_over_a_long_copy():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock, total=10 ** 9)
    r.start()
    r.poll()
    for tick in range(1, 161):  # 20 s of updates every 0.125 s, poll after each
        clock.advance(0.125)
        r.update(tick * 10 ** 6)
        r.poll()
    assert len(sent.bodies) == 1 + 10  # start, then one every 2 s
    done = [b['bytes_transferred'] for b in sent.bodies]
    assert done == sorted(done)


def test_throughput_counts_bytes_moved_over_elapsed_time():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock, total=10 ** 9)
    r.start()
    r.poll()
    clock.advance(10)
    r.update(400 * 10 ** 6, 50 * 10 ** 6)  # 400 MB done, of which 350 MB were holes
    r.poll()
    assert sent.bodies[-1]['throughput_bps'] == 5 * 10 ** 6
    assert sent.bodies[-1]['percent'] == 40.0


def test_bytes_are_monotonic():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.update(500, 300)
    r.update(200, 100)  # an out-of-order update from another worker
    r.poll()
    assert sent.bodies[-1]['bytes_transferred'] == 500
    clock.advance(1)
    r.update(100)
    clock.advance(2)
    r.poll()
    assert sent.bodies[-1]['bytes_transferred'] == 500


def test_update_before_start_starts():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.update(10)
    assert r.poll() is True
    assert sent.bodies[0]['bytes_transferred'] == 10


def test_finish_ok_sends_100_percent_immediately_and_leaves_the_job_running():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.poll()
    clock.advance(0.3)
    r.update(900, 600)
    clock.advance(0.1)
    r.finish()
    final = sent.bodies[-1]
    assert len(sent.bodies) == 2
    # A disk never ends the job (other disks may still be copying): the VM-wide update does.
    assert final['stage'] == 'Transfer' and final['status'] == 'in_progress' and final['disk_id'] == 'disk-2000'
    assert final['percent'] == 100.0 and final['bytes_transferred'] == final['total_bytes'] == 1000
    assert final['throughput_bps'] == int(600 / 0.4)
    assert r.warnings == [] and r.stats == dict(attempts=2, sent=2, failed=0)
    r.update(5000)
    r.finish(ok=False)  # no-ops after finish
    assert len(sent.bodies) == 2


def test_finish_failed_keeps_the_numbers_and_carries_the_message():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.update(250)
    r.finish(ok=False, message='target write error at offset 4096')
    final = sent.bodies[-1]
    assert final['stage'] == 'Transfer' and final['status'] == 'failed' and final['disk_id'] == 'disk-2000'
    assert final['percent'] == 25.0 and final['bytes_transferred'] == 250
    assert final['error_message'] == 'target write error at offset 4096' and 'message' not in final


def test_finish_without_start_sends_only_the_final_state():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.finish()
    assert [(b['status'], b['percent']) for b in sent.bodies] == [('in_progress', 100.0)]


def test_zero_byte_disk_completes_at_100():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock, total=0)
    r.start()
    r.poll()
    r.finish()
    assert sent.bodies[0]['percent'] == 0.0
    assert sent.bodies[-1]['percent'] == 100.0 and sent.bodies[-1]['bytes_transferred'] == 0


# ---------------------------------------------------------------- ProgressReporter: failures, warnings

def test_failures_become_a_few_warnings_without_the_token():
    clock = FakeClock()
    sent = Recorder(fail=vma.VmaHTTPError('post', URL, 'HTTP 500: boom', status_code=500))
    r = reporter(sent, clock, token=TOKEN)
    r.start()
    for i in range(100):
        r.update(i)
        clock.advance(2)
        assert r.poll() is True  # a failed state is retried (with the newest numbers) after the interval
    r.finish()
    warnings = r.warnings
    assert 1 <= len(warnings) <= 3
    assert r.stats['failed'] == 100 + vma.FINAL_ATTEMPTS
    assert '%d of %d updates failed' % (100 + vma.FINAL_ATTEMPTS, 100 + vma.FINAL_ATTEMPTS) in warnings[0]
    assert 'HTTP 500: boom' in warnings[0] and "job 'job-1' disk disk-2000" in warnings[0]
    assert any('final progress update (100 %)' in w for w in warnings)
    assert not any(TOKEN in w for w in warnings)


def test_failed_update_is_retried_after_the_interval_even_without_news():
    clock = FakeClock()
    sent = Recorder(fail=OSError('connection reset'))
    r = reporter(sent, clock)
    r.start()
    assert r.poll() is True
    assert r.poll() is False
    clock.advance(2)
    sent.fail = None
    assert r.poll() is True
    assert len(sent.bodies) == 1
    r.finish()
    assert len(r.warnings) == 1 and '1 of 3 updates failed (OSError: connection reset)' in r.warnings[0]


def test_recovery_mid_copy_keeps_one_summary_warning_with_first_and_last_error():
    clock = FakeClock()
    sent = Recorder(fail=OSError('first'))
    r = reporter(sent, clock)
    r.start()
    r.poll()
    clock.advance(2)
    r.update(1)
    sent.fail = OSError('second')
    r.poll()
    sent.fail = None
    clock.advance(2)
    r.update(2)
    r.poll()
    r.finish()
    assert r.warnings == ["Progress reporting to the VMA at http://vma.test:8081 for job 'job-1' disk disk-2000: "
                          "2 of 4 updates failed (first error: OSError: first; last error: OSError: second). "
                          "The copy itself is not affected."]


def test_final_update_is_tried_a_bounded_number_of_times():
    clock = FakeClock()
    sent = Recorder(fail=OSError('down'))
    r = reporter(sent, clock)
    r.finish()
    assert r.stats['attempts'] == vma.FINAL_ATTEMPTS
    assert r.poll(force=True) is False


def test_sender_exceptions_never_escape():
    clock = FakeClock()

    def sender(body):
        raise RuntimeError('unexpected')

    r = reporter(sender, clock)
    r.start()
    r.update(1)
    r.poll()
    r.finish()
    assert 'RuntimeError: unexpected' in r.warnings[0]


def test_non_numeric_updates_are_ignored_with_a_warning():
    clock, sent = FakeClock(), Recorder()
    r = reporter(sent, clock)
    r.start()
    r.update('lots')
    r.update(None)
    r.finish()
    assert r.warnings == ["2 progress updates for job 'job-1' disk disk-2000 had non-numeric byte counts and were "
                          "ignored."]


def test_disabled_without_vma_url():
    sent = Recorder()
    r = vma.ProgressReporter(None, None, 2000, 'full', 100, sender=sent)
    r.start()
    r.update(50)
    r.finish()
    assert r.enabled is False and r.warnings == [] and sent.bodies == []


@pytest.mark.parametrize('kwargs, field', [
    (dict(job_id=None), 'job_id'),
    (dict(job_id='..'), 'job_id'),
    (dict(vma_url='vma:8081'), 'vma_url'),
    (dict(sync_type='partial'), 'sync_type'),
    (dict(total_bytes=-1), 'total_bytes'),
    (dict(interval=0), 'interval'),
    (dict(token='a\nb' + TOKEN), 'token'),
])
def test_bad_settings_disable_reporting_with_a_warning_never_raise(kwargs, field, monkeypatch):
    monkeypatch.delenv(vma.JOB_ID_ENV, raising=False)
    args = dict(vma_url=URL, job_id='job-1', disk_id=2000, sync_type='full', total_bytes=100)
    args.update(kwargs)
    interval = args.pop('interval', 2.0)
    token = args.pop('token', None)
    r = vma.ProgressReporter(interval=interval, token=token, threaded=False, **args)
    r.start()
    r.update(1)
    r.finish()
    assert r.enabled is False
    assert len(r.warnings) == 1 and 'invalid %s' % field in r.warnings[0]
    assert 'disabled' in r.warnings[0] and TOKEN not in r.warnings[0]


def test_job_id_from_environment_for_the_reporter(monkeypatch):
    monkeypatch.setenv(vma.JOB_ID_ENV, 'from-env')
    sent = Recorder()
    r = vma.ProgressReporter(URL, None, 'disk-2000', None, 10, sender=sent, threaded=False)
    r.finish()
    assert r.job_id == 'from-env' and 'sync_type' not in sent.bodies[0]


def test_reporter_builds_a_real_client_with_no_retries():
    pytest.importorskip('requests')
    r = vma.ProgressReporter(URL, 'j', 2000, 'full', 10, token=TOKEN, threaded=False)
    assert r.enabled and r._client.retries == 0 and r._client.timeout == (3.0, 5.0)
    assert TOKEN not in repr(r)


# ---------------------------------------------------------------- ProgressReporter: the thread

class StallingSender(object):
    """Blocks every send until released (a VMA that accepts and never answers)."""

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, body):
        self.calls += 1
        self.release.wait(30)
        raise OSError('read timeout')


def test_threaded_update_never_blocks_and_finish_is_bounded_when_stalled():
    sender = StallingSender()
    r = vma.ProgressReporter(URL, 'job-1', 2000, 'full', 10 ** 6, interval=0.05, sender=sender)
    try:
        r.start()
        deadline = time.monotonic() + 2
        while sender.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        began = time.monotonic()
        for i in range(10000):
            r.update(i, i)
        assert time.monotonic() - began < 0.5
        began = time.monotonic()
        r.finish()
        took = time.monotonic() - began
        assert took < vma.SLOW_AFTER + vma.UNHEALTHY_GRACE + 0.5, took
        assert any('not confirmed' in w for w in r.warnings)
        assert sender.calls == 1  # the stalled send is the only one: nothing queued behind it
    finally:
        sender.release.set()


def test_threaded_finish_waits_for_a_healthy_vma():
    bodies = []

    def sender(body):
        time.sleep(0.2)  # slow but answering
        bodies.append(body)

    r = vma.ProgressReporter(URL, 'job-1', 2000, 'full', 100, interval=0.05, sender=sender)
    r.start()
    r.update(50)
    r.finish()
    assert bodies[-1]['percent'] == 100.0 and bodies[-1]['status'] == 'in_progress' and r.warnings == []


def test_threaded_finish_returns_quickly_when_failing():
    def sender(body):
        raise OSError('HTTP 500')

    r = vma.ProgressReporter(URL, 'job-1', 2000, 'full', 100, interval=0.05, sender=sender)
    r.start()
    time.sleep(0.1)
    began = time.monotonic()
    r.finish()
    assert time.monotonic() - began < vma.UNHEALTHY_GRACE + 0.3
    assert len(r.warnings) == 2


def test_threaded_sends_about_every_interval():
    stamps = []

    def sender(body):
        stamps.append((time.monotonic(), body['bytes_transferred']))

    r = vma.ProgressReporter(URL, 'job-1', 2000, 'full', 10 ** 9, interval=0.1, sender=sender)
    r.start()
    end = time.monotonic() + 0.75
    n = 0
    while time.monotonic() < end:
        n += 1
        r.update(n)
        time.sleep(0.001)
    r.finish()
    gaps = [b[0] - a[0] for a, b in zip(stamps[1:-2], stamps[2:-1])]
    assert 5 <= len(stamps) <= 10, stamps
    assert all(gap >= 0.095 for gap in gaps), gaps
    assert [s[1] for s in stamps] == sorted(s[1] for s in stamps)


# ---------------------------------------------------------------- module logic

class FakeClient(object):
    instances = []

    def __init__(self, vma_url, token=None, validate_certs=True, answer=None, error=None):
        self.vma_url, self.token, self.validate_certs = vma_url, token, validate_certs
        self.answer, self.error = answer, error
        self.posted = []
        self.closed = False
        FakeClient.instances.append(self)

    def post_payload(self, job_id, body):
        if self.error:
            raise self.error
        self.posted.append((job_id, body))
        return self.answer or {'status': 'success'}

    def get_progress(self, job_id):
        if self.error:
            raise self.error
        return self.answer

    def close(self):
        self.closed = True


def params(**kwargs):
    p = dict(vma_url=URL, job_id='job-1', token=TOKEN, validate_certs=True, stage='Complete', status='completed',
             disk_id='2000', bytes_transferred=10, total_bytes=10, percent=None, throughput_bps=None,
             sync_type='full', msg=None, required=False)
    p.update(kwargs)
    return vma.PROGRESS_SPEC.options(p)


def factory(**kwargs):
    return lambda *a, **kw: FakeClient(*a, **dict(kw, **kwargs))


def test_post_progress_posts():
    result = vma.post_progress(params(), client_factory=factory())
    assert result['changed'] is True and result['posted'] is True
    assert result['update'] == dict(stage='Complete', status='completed', bytes_transferred=10, total_bytes=10,
                                    percent=100.0, disk_id='disk-2000', sync_type='full')
    assert 'deprecations' not in result
    assert result['url'] == URL + '/api/v1/progress/job-1/update'
    assert result['response'] == {'status': 'success'} and result['warnings'] == []
    assert FakeClient.instances[-1].closed
    assert TOKEN not in json.dumps(result)


def test_post_progress_check_mode_posts_nothing():
    FakeClient.instances = []
    result = vma.post_progress(params(), check_mode=True, client_factory=factory())
    assert result['changed'] is True and result['posted'] is False and 'response' not in result
    assert FakeClient.instances == []


def test_post_progress_sends_msg_as_error_message():
    result = vma.post_progress(params(status='failed', stage='Transfer', msg='boom'), check_mode=True)
    assert result['update']['error_message'] == 'boom' and result['warnings'] == []


def test_post_progress_msg_without_failed_is_not_sent_with_a_warning():
    result = vma.post_progress(params(status='completed', msg='all done'), client_factory=factory())
    assert result['posted'] is True and 'error_message' not in result['update']
    assert result['warnings'] == ['msg is not sent: the VMA takes a message only as the error_message of an '
                                  'update with status=failed']


@pytest.mark.parametrize('alias, wire', [('Queued', 'in_progress'), ('Running', 'in_progress'),
                                         ('Completed', 'completed'), ('Failed', 'failed')])
def test_post_progress_deprecated_status_names_still_work_with_a_deprecation(alias, wire):
    FakeClient.instances = []
    result = vma.post_progress(params(status=alias), client_factory=factory())
    assert result['posted'] is True and result['update']['status'] == wire
    assert FakeClient.instances[-1].posted[0][1]['status'] == wire
    deprecation, = result['deprecations']
    assert deprecation == dict(msg='status=%s is deprecated: use status=%s, the value the VMA expects (the update '
                                   'is sent with %s)' % (alias, wire, wire),
                               version='1.0.0', collection_name='migratekit.migration')


def test_post_progress_best_effort_and_required():
    error = vma.VmaUnreachableError("post the progress update for job 'job-1'", URL, 'connection failed')
    result = vma.post_progress(params(), client_factory=factory(error=error))
    assert result['changed'] is False and result['posted'] is False
    assert result['error'] == str(error) and 'required=false' in result['warnings'][0]
    with pytest.raises(vma.VmaUnreachableError):
        vma.post_progress(params(required=True), client_factory=factory(error=error))


def test_post_progress_bad_input_fails_even_when_not_required():
    with pytest.raises(vma.VmaValidationError):
        vma.post_progress(params(percent=120.0), client_factory=factory())


def test_read_progress():
    result = vma.read_progress(params(), client_factory=factory(answer={'status': 'in_progress'}))
    assert result == dict(changed=False, found=True, finished=False, progress={'status': 'in_progress'},
                          url=URL + '/api/v1/progress/job-1', job_id='job-1')
    missing = vma.VmaNotFoundError('read', URL, 'HTTP 404', status_code=404)
    result = vma.read_progress(params(), client_factory=factory(error=missing))
    assert result['found'] is False and result['progress'] == {} and result['finished'] is False


@pytest.mark.parametrize('answer, finished', [
    ({'status': 'completed', 'phase': 'Complete'}, True),
    ({'status': 'failed', 'phase': 'Transfer'}, True),
    ({'status': 'in_progress', 'phase': 'completed'}, True),
    ({'status': 'Completed', 'phase': 'Complete'}, False),   # the poller compares case-sensitively
    ({'status': 'Failed'}, False),
    ({'status': 'in_progress', 'phase': 'Transfer'}, False),
    ({}, False),
])
def test_finished_is_what_the_appliances_poller_concludes(answer, finished):
    assert vma.job_finished(answer) is finished
    assert vma.read_progress(params(), client_factory=factory(answer=answer))['finished'] is finished


def test_error_message_names_operation_and_job():
    exc = vma.VmaValidationError('percent', 'a number from 0 to 100', 120.0)
    assert vma.error_message('post a progress update to the VMA', exc, 'job-1') == (
        "Cannot post a progress update to the VMA for job 'job-1': invalid percent: expected a number from 0 to "
        "100, got 120.0")
    exc = vma.VmaValidationError('job_id', 'a non-empty string')
    assert vma.error_message('read the progress', exc, '..') == (
        'Cannot read the progress: invalid job_id: expected a non-empty string')
