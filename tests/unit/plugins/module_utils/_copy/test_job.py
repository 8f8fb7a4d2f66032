# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The job: extents input, the commit rule, progress, bounded memory (a fake DiskCopy where no server is needed)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

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
        self.shared = None

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

    def copy(self, start=0, checkpoint_to=None, done_above=()):
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

class ServerInfo(object):
    """What a server negotiated, as :class:`nbd_copy.ServerInfo` reads it."""

    def __init__(self, size, block_min=1, block_preferred=0, block_max=0, can_multi_conn=True, can_zero=True,
                 can_block_status=True):
        self.size, self.block_min, self.block_preferred, self.block_max = size, block_min, block_preferred, block_max
        self.can_multi_conn, self.can_zero, self.can_block_status = can_multi_conn, can_zero, can_block_status


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
    job.plan = nbd_copy.CopyPlan.negotiate(
        ServerInfo(capacity, block_min=4096), ServerInfo(capacity, block_min=4096), disk='disk 2000',
        source_uri=options.source, target_uri=options.target, request_size=256 * KiB, connections=1,
        requests_in_flight=32, retries=0, retry_delay=0.0, io_timeout=300.0, whole_disk=False, fill_gaps=False,
        target_is_zero=False)
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
