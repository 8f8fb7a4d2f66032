# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
import datetime
import json
import multiprocessing
import os
import stat

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import sync_history, sync_state

T0 = datetime.datetime(2026, 12, 2, 1, 0, 0)
MiB = 1 << 20


def at(seconds):
    return (T0 + datetime.timedelta(seconds=seconds)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def record(start, cycle='incremental_sync', disks=None, copy_seconds=2.0, wall=10.0, **extra):
    rec = {'cycle': cycle, 'started': at(start), 'finished': at(start + wall), 'snapshot_at': at(start + 1),
           'disks': disks if disks is not None else []}
    rec.update(extra)
    return rec


def disk(key, changed, moved=None, seconds=2.0, sync_type='incremental', change_id='u/1', copied=True):
    return {'key': key, 'sync_type': sync_type, 'changed_bytes': changed, 'bytes_moved': changed if moved is None else moved,
            'duration': seconds, 'change_id': change_id, 'copied': copied}


def test_history_path_is_beside_the_state_file():
    assert sync_history.history_path('/s/app01.json') == '/s/app01.history.json'
    assert sync_history.history_path('/s/app01') == '/s/app01.history.json'


def test_append_writes_atomically_privately_and_in_order(tmp_path):
    path = str(tmp_path / 'sub' / 'vm.history.json')
    first = sync_history.append(path, record(0, disks=[disk(2000, MiB)]), vm_uuid='u-1')
    second = sync_history.append(path, record(100, disks=[disk(2000, 2 * MiB)]), vm_uuid='u-1')
    assert (first['seq'], second['seq']) == (1, 2)
    with open(path) as handle:
        data = json.load(handle)
    assert data['vm_uuid'] == 'u-1' and [c['seq'] for c in data['cycles']] == [1, 2]
    assert data['cycles'][1]['disks'][0]['changed_bytes'] == 2 * MiB
    assert data['cycles'][1]['duration'] == 10.0
    assert data['cycles'][1]['disks'][0]['throughput_bps'] == MiB
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(os.path.dirname(path))) == ['vm.history.json', 'vm.history.json.lock']


def test_append_keeps_the_last_cycles(tmp_path):
    path = str(tmp_path / 'vm.history.json')
    for i in range(7):
        sync_history.append(path, record(i * 100), max_cycles=5)
    cycles = sync_history.load(path)['cycles']
    assert [c['seq'] for c in cycles] == [3, 4, 5, 6, 7]


def test_default_bound_is_500_cycles(tmp_path):
    path = str(tmp_path / 'vm.history.json')
    sync_state.write_atomic(path, dict(sync_history.empty_history(), cycles=[
        sync_history.normalize_record(record(i)) for i in range(500)]))
    sync_history.append(path, record(1000))
    cycles = sync_history.load(path)['cycles']
    assert len(cycles) == 500 and cycles[-1]['started'] == at(1000)


def _append_many(path, base):
    for i in range(10):
        sync_history.append(path, record(base + i))


def test_concurrent_appends_lose_nothing(tmp_path):
    path = str(tmp_path / 'vm.history.json')
    procs = [multiprocessing.Process(target=_append_many, args=(path, n * 1000)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    cycles = sync_history.load(path)['cycles']
    assert len(cycles) == 40 and sorted(c['seq'] for c in cycles) == list(range(1, 41))


def test_a_history_of_another_vm_is_kept_aside_and_started_anew(tmp_path):
    path = str(tmp_path / 'vm.history.json')
    sync_history.append(path, record(0), vm_uuid='u-1')
    entry = sync_history.append(path, record(10), vm_uuid='u-2')
    assert entry['kept_aside'].startswith(path + '.aside-')
    with open(entry['kept_aside']) as handle:
        assert json.load(handle)['vm_uuid'] == 'u-1'
    history = sync_history.load(path)
    assert history['vm_uuid'] == 'u-2' and [c['started'] for c in history['cycles']] == [at(10)]


@pytest.mark.parametrize('bad, message', [
    (dict(cycle='nightly'), "cycle must be one of full_sync, incremental_sync, presync, cutover, got 'nightly'"),
    (dict(started='yesterday'), "started 'yesterday' is not an ISO 8601 time"),
    (dict(finished=None), 'started and finished are required'),
    (dict(disks=[{'key': 'x'}]), "disk entry without a device key"),
    (dict(disks=[dict(disk(2000, 1), bytes_moved=-1)]), 'disk 2000 bytes_moved must not be negative'),
    (dict(disks=[dict(disk(2000, 1), sync_type='delta')]), "sync_type must be one of full, incremental"),
])
def test_bad_records_are_refused_with_what_was_wrong(tmp_path, bad, message):
    path = str(tmp_path / 'vm.history.json')
    rec = record(0)
    rec.update(bad)
    with pytest.raises(sync_history.SyncHistoryError, match=message.replace('(', r'\(').replace(')', r'\)')):
        sync_history.append(path, rec)
    assert not os.path.exists(path)


def test_a_corrupt_history_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / 'vm.history.json'
    path.write_text('{not json')
    with pytest.raises(sync_history.SyncHistoryError, match='vm.history.json is not valid JSON'):
        sync_history.load(str(path))


def test_downtime_is_power_off_to_final_commit():
    rec = sync_history.normalize_record(record(0, cycle='cutover', power_off_at=at(2), committed_at=at(47.5),
                                               shutdown_seconds=12))
    assert rec['downtime_seconds'] == 45.5 and rec['shutdown_seconds'] == 12


def fleet_history(rate_bps, cycles=5, interval=600, throughput=10 * MiB):
    """Cycles of one disk written at ``rate_bps``: each finds rate x interval changed bytes."""
    recs = [sync_history.normalize_record(record(0, cycle='full_sync', disks=[
        disk(2000, 64 * MiB, seconds=64 * MiB / throughput, sync_type='full')]))]
    for i in range(1, cycles):
        changed = int(rate_bps * interval)
        recs.append(sync_history.normalize_record(record(i * interval, disks=[
            disk(2000, changed, seconds=changed / throughput)])))
    return recs


def test_change_rate_follows_the_write_rate():
    slow = sync_history.predict({'disks': {'2000': {}}}, fleet_history(1000), now=at(4 * 600 + 1))
    fast = sync_history.predict({'disks': {'2000': {}}}, fleet_history(8000), now=at(4 * 600 + 1))
    assert slow['change_rate_bps'] == pytest.approx(1000, rel=0.01)
    assert fast['change_rate_bps'] == pytest.approx(8 * slow['change_rate_bps'], rel=0.01)


def test_prediction_parts():
    cycles = fleet_history(10000, throughput=MiB)
    now = at(4 * 600 + 1 + 300)  # 300 s after the last snapshot
    prediction = sync_history.predict({'disks': {'2000': {}}}, cycles, now=now, max_downtime=100)
    part = prediction['disks']['2000']
    assert part['since_last_sync_seconds'] == pytest.approx(300)
    assert part['final_delta_bytes'] == pytest.approx(10000 * 300, rel=0.01)
    assert part['throughput_bps'] == pytest.approx(MiB, rel=0.01)
    assert prediction['shutdown_source'] == 'default' and prediction['shutdown_seconds'] == 60
    # the overhead is measured: each cycle's 10 s less its copy
    assert prediction['overhead_source'] == 'measured'
    assert prediction['overhead_seconds'] == pytest.approx(10 - 6000000 / MiB, rel=0.01)
    assert prediction['predicted_cutover_seconds'] == pytest.approx(
        60 + prediction['overhead_seconds'] + 3000000.0 / MiB, rel=0.01)
    assert prediction['ready'] is True
    assert sync_history.predict({'disks': {'2000': {}}}, cycles, now=now, max_downtime=50)['ready'] is False
    text = sync_history.explain(prediction)
    assert 'guest shutdown 60 s (default)' in text and 'disk 2000' in text


def test_prediction_before_any_cycle_uses_the_defaults():
    prediction = sync_history.predict({'disks': {}}, [], now=at(0))
    assert prediction['predicted_cutover_seconds'] == 90 and prediction['ready'] is None
    assert (prediction['shutdown_source'], prediction['overhead_source']) == ('default', 'default')
    prediction = sync_history.predict({'disks': {}}, [], now=at(0),
                                      defaults={'shutdown_seconds': 5, 'overhead_seconds': 1})
    assert prediction['predicted_cutover_seconds'] == 6


def test_a_measured_shutdown_replaces_the_default():
    cycles = fleet_history(1000) + [sync_history.normalize_record(record(
        4000, cycle='cutover', shutdown_seconds=7.5, power_off_at=at(4001), committed_at=at(4009)))]
    prediction = sync_history.predict({'disks': {'2000': {}}}, cycles, now=at(4100))
    assert (prediction['shutdown_seconds'], prediction['shutdown_source']) == (7.5, 'measured')


def test_failed_cycles_and_uncommitted_disks_do_not_count():
    cycles = fleet_history(1000, cycles=3)
    cycles.append(sync_history.normalize_record(record(1800, failed=True, disks=[disk(2000, 999 * MiB)])))
    cycles.append(sync_history.normalize_record(record(2400, disks=[disk(2000, 999 * MiB, change_id=None)])))
    # the next committed cycle's changes are relative to the last commit (1200 s earlier)
    cycles.append(sync_history.normalize_record(record(2400 + 600, disks=[disk(2000, 1000 * 1800)])))
    series = sync_history.disk_series(cycles)[2000]
    assert series[-1]['interval'] == 1800 and series[-1]['change_rate_bps'] == pytest.approx(1000)


def test_sync_state_info_reads_state_history_and_changes_nothing(tmp_path):
    state_file = str(tmp_path / 'vm.json')
    sync_state.commit_disk(state_file, 'u-1', 2000, 'a/3', 64 * MiB, 'nbd://t')
    history = sync_history.history_path(state_file)
    for rec in fleet_history(2000):
        sync_history.append(history, rec)
    before = dict((name, os.stat(str(tmp_path / name)).st_mtime_ns) for name in os.listdir(str(tmp_path)))
    options = sync_history.INFO_SPEC.options(state_file=state_file, max_downtime=3600, history_cycles=2)
    result = sync_history.sync_state_info_module(options, check_mode=True)
    assert result['changed'] is False and result['exists'] is True and result['vm_uuid'] == 'u-1'
    assert result['disks']['2000']['change_id'] == 'a/3' and result['disks']['2000']['target'] == 'nbd://t'
    assert result['history_count'] == 5 and len(result['history']) == 2
    assert result['change_rate_bps'] == pytest.approx(2000, rel=0.01)
    assert result['ready'] is True and result['predicted_cutover_seconds'] > 60
    assert result == dict(sync_history.sync_state_info_module(options), prediction=result['prediction'],
                          predicted_cutover_seconds=result['predicted_cutover_seconds'],
                          prediction_text=result['prediction_text'])
    after = dict((name, os.stat(str(tmp_path / name)).st_mtime_ns) for name in os.listdir(str(tmp_path)))
    assert after == before


def test_sync_state_info_of_a_vm_never_synced(tmp_path):
    options = sync_history.INFO_SPEC.options(state_file=str(tmp_path / 'none.json'))
    result = sync_history.sync_state_info_module(options)
    assert result['exists'] is False and result['disks'] == {} and result['history'] == []
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('bad, message', [
    (dict(max_downtime=-1), 'max_downtime must be 0 .no budget. or a number of seconds, got -1'),
    (dict(default_throughput_bps=0), 'default_throughput_bps must be a positive number, got 0'),
    (dict(history_cycles=-2), 'history_cycles must be 0 or more, got -2'),
])
def test_sync_state_info_refuses_bad_options(tmp_path, bad, message):
    options = sync_history.INFO_SPEC.options(state_file=str(tmp_path / 'vm.json'), **bad)
    with pytest.raises(sync_history.SyncHistoryError, match=message):
        sync_history.sync_state_info_module(options)


def test_disk_times_follow_the_copies_from_copy_started():
    rec = sync_history.normalize_record(record(0, copy_started=at(3), disks=[
        disk(2000, MiB, seconds=2.5), disk(2001, 0, seconds=0, copied=False), disk(2002, MiB, seconds=1)]))
    times = [(d['key'], d['started'], d['finished']) for d in rec['disks']]
    assert times == [(2000, at(3), at(5.5)), (2001, None, None), (2002, at(5.5), at(6.5))]


def test_the_overhead_runs_from_the_snapshot_request_to_the_last_commit():
    """What a cutover's downtime holds besides the shutdown and the copies: not the lock, reports, cleanup."""
    cycles = [sync_history.normalize_record(record(i * 100, wall=20, discover_at=at(i * 100 + 5),
                                                   committed_at=at(i * 100 + 5 + 3 + 2),
                                                   disks=[disk(2000, MiB, seconds=2)])) for i in range(3)]
    prediction = sync_history.predict({'disks': {'2000': {}}}, cycles, now=at(300))
    assert prediction['overhead_seconds'] == pytest.approx(3.0)
