# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
import datetime
import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import sync_state


def test_missing_file_is_an_empty_state(tmp_path):
    state = sync_state.load(str(tmp_path / 'none.json'))
    assert state['disks'] == {} and sync_state.disk_entry(state, 2000) is None


def test_commit_writes_entry_atomically_with_private_mode(tmp_path):
    path = str(tmp_path / 'sub' / 'vm.json')
    sync_state.commit_disk(path, 'uuid-1', 2000, 'abc/3', 1 << 20, 'nbd://t')
    with open(path) as handle:
        data = json.load(handle)
    assert data['vm_uuid'] == 'uuid-1'
    assert data['disks']['2000']['change_id'] == 'abc/3'
    assert data['disks']['2000']['capacity_bytes'] == 1 << 20
    assert data['disks']['2000']['target'] == 'nbd://t'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith('.vm.json.')] == []


def test_commit_keeps_other_disks(tmp_path):
    path = str(tmp_path / 'vm.json')
    sync_state.commit_disk(path, 'u', 2000, 'a/1', 10, 't1')
    sync_state.commit_disk(path, 'u', 2001, 'b/1', 20, 't2')
    sync_state.commit_disk(path, 'u', 2000, 'a/2', 10, 't1')
    state = sync_state.load(path)
    assert state['disks']['2000']['change_id'] == 'a/2'
    assert state['disks']['2001']['change_id'] == 'b/1'


def _commit_many(path, key):
    for i in range(30):
        sync_state.commit_disk(path, 'u', key, 'c/%d' % i, 10, 't')


def test_concurrent_commits_of_different_disks_lose_nothing(tmp_path):
    path = str(tmp_path / 'vm.json')
    procs = [multiprocessing.Process(target=_commit_many, args=(path, key)) for key in (2000, 2001, 2002)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    state = sync_state.load(path)
    assert sorted(state['disks']) == ['2000', '2001', '2002']
    assert all(entry['change_id'] == 'c/29' for entry in state['disks'].values())


def test_refuses_another_vms_file_and_keeps_it(tmp_path):
    path = str(tmp_path / 'vm.json')
    sync_state.commit_disk(path, 'u1', 2000, 'a/1', 10, 't')
    with pytest.raises(sync_state.SyncStateError, match='belongs to VM u1'):
        sync_state.commit_disk(path, 'u2', 2000, 'b/1', 10, 't')
    assert sync_state.load(path)['disks']['2000']['change_id'] == 'a/1'


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'vm.json'
    path.write_text('{not json')
    with pytest.raises(sync_state.SyncStateError, match='not valid JSON'):
        sync_state.load(str(path))


IDENTITY = {'vm_uuid': '4213-a', 'vm_instance_uuid': '5013-a', 'vcenter': 'vc1'}


@pytest.mark.parametrize('state, expected', [
    ({}, None),
    ({'vm_uuid': '4213-A'}, None),  # a first-wave file: BIOS uuid only, compared without case or dashes
    ({'vm_uuid': '4213-a', 'vm_instance_uuid': '5013-b'}, 'belongs to VM instance uuid 5013-b, not 5013-a'),
    ({'vm_uuid': '4213-a', 'vcenter': 'vc2'}, 'belongs to VM vCenter vc2, not vc1'),
    ({'vm_uuid': '4213-b'}, 'belongs to VM uuid 4213-b, not 4213-a'),
])
def test_owner_mismatch(state, expected):
    assert sync_state.owner_mismatch(state, IDENTITY) == expected


def test_claim_records_the_identity_once_and_keeps_the_disks(tmp_path):
    path = str(tmp_path / 'vm.json')
    sync_state.commit_disk(path, '4213-a', 2000, 'c/1', 1024, 't')
    sync_state.claim(path, IDENTITY)
    state = sync_state.load(path)
    assert state['vm_instance_uuid'] == '5013-a' and state['vcenter'] == 'vc1'
    assert state['disks']['2000']['change_id'] == 'c/1'
    mtime = os.stat(path).st_mtime_ns
    sync_state.claim(path, IDENTITY)
    assert os.stat(path).st_mtime_ns == mtime, 'nothing changed: nothing written'
    with pytest.raises(sync_state.SyncStateError, match='belongs to VM instance uuid 5013-a, not 5013-z'):
        sync_state.claim(path, dict(IDENTITY, vm_instance_uuid='5013-z'))


def test_keep_aside_renames_and_never_overwrites(tmp_path):
    path = str(tmp_path / 'vm.json')
    assert sync_state.keep_aside(path) is None
    for text in ('first', 'second'):
        with open(path, 'w') as handle:
            handle.write(text)
        sync_state.keep_aside(path, now=datetime.datetime(2026, 12, 1, 10, 0, 0))
    kept = sorted(os.listdir(str(tmp_path)))
    assert kept == ['vm.json.aside-20261201T100000Z', 'vm.json.aside-20261201T100000Z-2', 'vm.json.lock']
    assert open(str(tmp_path / kept[0])).read() == 'first' and open(str(tmp_path / kept[1])).read() == 'second'
