# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of cbt.py: the decision table, paging, and the cycle on stubbed pyVmomi objects."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os
from types import SimpleNamespace

import pytest
from pyVmomi import vim, vmodl

from ansible_collections.migratekit.migration.plugins.module_utils import cbt
from ansible_collections.migratekit.migration.plugins.module_utils._cbt import inventory
from ansible_collections.migratekit.migration.plugins.module_utils import extents as ex
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import TaskFailedError, VSphereError

MiB = 1024 * 1024
CAP = 64 * MiB
UUID_A = '52 aa aa aa aa aa aa aa-aa aa aa aa aa aa aa aa'
UUID_B = '52 bb bb bb bb bb bb bb-bb bb bb bb bb bb bb bb'
VM_UUID = '4213a8c4-0000-0000-0000-000000000001'
UTC = inventory._UTC


# --------------------------------------------------------------------------
# pure helpers

def test_parse_change_id():
    assert cbt.parse_change_id(UUID_A + '/7') == (UUID_A, 7)
    for bad in (None, '', '*', 'abc', UUID_A + '/x', '/3'):
        with pytest.raises(ValueError):
            cbt.parse_change_id(bad)


def test_hardware_version_and_datastore():
    assert cbt.hardware_version_number('vmx-13') == 13
    assert cbt.hardware_version_number('weird') is None
    assert cbt.datastore_of('[LocalDS_0] VM0/disk.vmdk') == 'LocalDS_0'
    assert cbt.datastore_of('no brackets') is None


def make_disk(key=2000, capacity=CAP, change_id=None, mode='persistent', rdm=None, kb_only=False, unit=0,
              file_name=None):
    if rdm:
        backing = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
            fileName=file_name or '[DS] vm/rdm.vmdk', compatibilityMode=rdm, diskMode=mode, changeId=change_id)
    else:
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=file_name or '[LocalDS_0] VM0/disk-%d.vmdk' % key, diskMode=mode, changeId=change_id)
    disk = vim.vm.device.VirtualDisk(key=key, unitNumber=unit, controllerKey=1000, backing=backing,
                                     deviceInfo=vim.Description(label='Hard disk %d' % (key - 1999), summary=''),
                                     capacityInKB=capacity // 1024)
    if not kb_only:
        disk.capacityInBytes = capacity
    return disk


def test_classify_disks_skips_physical_rdm_and_independent_and_reads_kb():
    devices = [
        vim.vm.device.VirtualLsiLogicController(key=1000),
        make_disk(2001, kb_only=True, unit=1),
        make_disk(2000),
        make_disk(2002, rdm='physicalMode', unit=2),
        make_disk(2003, rdm='virtualMode', unit=3),
        make_disk(2004, mode='independent_persistent', unit=4),
    ]
    disks, skipped = cbt.classify_disks(devices)
    assert [d['key'] for d in disks] == [2000, 2001, 2003]
    assert disks[1]['capacity_bytes'] == CAP
    assert disks[0]['datastore'] == 'LocalDS_0' and disks[0]['label'] == 'Hard disk 1'
    assert [(s['key'], s['reason'].split(':')[0]) for s in skipped] == [
        (2002, 'physical-mode RDM'), (2004, 'independent_persistent disk')]


# --------------------------------------------------------------------------
# the decision table

def state_with(entry=None, vm_uuid=VM_UUID):
    state = sync_state.empty_state(vm_uuid)
    if entry is not None:
        state['disks']['2000'] = entry
    return state


GOOD = {'change_id': UUID_A + '/5', 'capacity_bytes': CAP, 'target': 'nbd://t/2000', 'synced_at': '2026-01-01T00:00:00Z'}


@pytest.mark.parametrize('kwargs, code', [
    (dict(mode='full', state=state_with(GOOD)), 'mode_full'),
    (dict(state=None), 'no_state'),
    (dict(state=state_with(GOOD, vm_uuid='other')), 'other_vm'),
    (dict(state=state_with(None)), 'no_state'),
    (dict(state=state_with(dict(GOOD, change_id='garbage'))), 'bad_state'),
    (dict(state=state_with(GOOD), cbt_was_enabled=False), 'cbt_off'),
    (dict(state=state_with(GOOD), capacity_bytes=2 * CAP), 'capacity_changed'),
    (dict(state=state_with(GOOD), change_id=None), 'no_change_id'),
    (dict(state=state_with(GOOD), change_id=UUID_B + '/1'), 'cbt_reset'),
    (dict(state=state_with(GOOD), target='nbd://elsewhere'), 'target_changed'),
    (dict(state=state_with(GOOD), rejected='FileFault: Error caused by file'), 'change_id_rejected'),
    (dict(state=state_with(GOOD)), 'incremental'),
    (dict(state=state_with(GOOD), target='nbd://t/2000'), 'incremental'),
    (dict(state=state_with(dict(GOOD, target=None)), target='nbd://new'), 'incremental'),
    (dict(state=state_with(GOOD, vm_uuid=None)), 'incremental'),
    (dict(state=state_with(GOOD, vm_uuid=VM_UUID.upper())), 'incremental'),
])
def test_decision_table(kwargs, code):
    args = dict(mode='auto', disk_key=2000, capacity_bytes=CAP, change_id=UUID_A + '/9', vm_uuid=VM_UUID)
    args.update(kwargs)
    decision = cbt.decide_sync(**args)
    assert decision.reason_code == code
    assert decision.sync_type == ('incremental' if code == 'incremental' else 'full')
    assert decision.previous_change_id == (GOOD['change_id'] if code == 'incremental' else None)
    assert decision.reason


def test_decision_reasons_name_the_facts():
    d = cbt.decide_sync('auto', 2000, 2 * CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert '%d to %d' % (CAP, 2 * CAP) in d.reason
    d = cbt.decide_sync('auto', 2000, CAP, UUID_B + '/1', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert UUID_A in d.reason and UUID_B in d.reason and 'reset' in d.reason
    d = cbt.decide_sync('auto', 2000, CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(None),
                        state_file='/s.json')
    assert '/s.json' in d.reason and '2000' in d.reason


def test_incremental_mode_raises_with_the_reason():
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cbt.decide_sync('incremental', 2000, CAP, UUID_B + '/1', vm_uuid=VM_UUID, state=state_with(GOOD),
                        label='Hard disk 1')
    assert 'Hard disk 1' in str(info.value) and 'CBT was reset' in str(info.value)
    assert info.value.details['reason_code'] == 'cbt_reset'
    ok = cbt.decide_sync('incremental', 2000, CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert ok.sync_type == 'incremental'


def test_preflight_ignores_an_unknown_change_id():
    d = cbt.decide_sync('incremental', 2000, CAP, None, vm_uuid=VM_UUID, state=state_with(GOOD),
                        change_id_known=False)
    assert d.sync_type == 'incremental'


def test_targets_lookup_by_key_or_label():
    assert cbt.target_for({'2000': 'a'}, 2000, 'Hard disk 1') == 'a'
    assert cbt.target_for({2000: 'b'}, 2000, 'Hard disk 1') == 'b'
    assert cbt.target_for({'Hard disk 1': 'c'}, 2000, 'Hard disk 1') == 'c'
    assert cbt.target_for(None, 2000, 'x') is None


# --------------------------------------------------------------------------
# paging

def paged_query(areas, page_areas=64, calls=None, capacity=CAP):
    """A QueryChangedDiskAreas double: ``page_areas`` areas per answer, like the lab and vSphere."""
    def query(start, change_id):
        if calls is not None:
            calls.append((start, change_id))
        todo = [a for a in areas if a[0] + a[1] > start]
        page = todo[:page_areas]
        if len(todo) > page_areas:
            end = page[-1][0] + page[-1][1]
        else:
            end = capacity
        return vim.VirtualMachine.DiskChangeInfo(
            startOffset=start, length=end - start,
            changedArea=[vim.VirtualMachine.DiskChangeInfo.DiskChangeExtent(start=s, length=n) for s, n in page])
    return query


def test_paging_loops_on_start_offset_plus_length_until_capacity():
    areas = [(i * 2 * 65536, 65536) for i in range(200)]
    calls = []
    got = list(cbt.iter_changed_areas(paged_query(areas, calls=calls), CAP, '*'))
    assert got == areas
    assert len(calls) == 4  # 64 + 64 + 64 + 8
    assert calls[0] == (0, '*')
    assert calls[1][0] == areas[63][0] + areas[63][1]
    assert all(cid == '*' for _s, cid in calls)


def test_paging_with_no_areas_is_one_call():
    calls = []
    assert list(cbt.iter_changed_areas(paged_query([], calls=calls), CAP, UUID_A + '/1')) == []
    assert calls == [(0, UUID_A + '/1')]


def test_paging_without_progress_is_an_error():
    def stuck(start, change_id):
        return vim.VirtualMachine.DiskChangeInfo(startOffset=start, length=0, changedArea=[])
    with pytest.raises(cbt.ChangedAreasError, match='does not move past'):
        list(cbt.iter_changed_areas(stuck, CAP, '*'))


def test_changed_extents_merges_adjacent_and_clips_to_capacity():
    areas = [(0, 65536), (65536, 65536), (CAP - 65536, 131072)]
    extents, pages = cbt.changed_extents(paged_query(areas, page_areas=2), CAP, '*')
    assert extents == [(0, 131072), (CAP - 65536, 65536)]
    assert pages == 2


# --------------------------------------------------------------------------
# snapshots and extents_dir

def node(name, moid, created, children=()):
    return SimpleNamespace(name=name, snapshot=SimpleNamespace(_moId=moid), createTime=created,
                           childSnapshotList=list(children))


def test_find_snapshots_walks_the_tree_oldest_first():
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    tree = SimpleNamespace(rootSnapshotList=[
        node('base', 'snapshot-1', t0, [node('migratekit', 'snapshot-3', t0 + datetime.timedelta(hours=2)),
                                        node('other', 'snapshot-4', t0, [node('migratekit', 'snapshot-2',
                                                                              t0 + datetime.timedelta(hours=1))])])])
    assert [n.snapshot._moId for n in cbt.find_snapshots(tree, 'migratekit')] == ['snapshot-2', 'snapshot-3']
    assert cbt.find_snapshots(None, 'migratekit') == []
    facts = cbt.snapshot_facts(cbt.find_snapshots(tree, 'migratekit')[-1], now=t0 + datetime.timedelta(hours=3))
    assert facts == {'moid': 'snapshot-3', 'name': 'migratekit', 'created': '2026-01-01T02:00:00Z',
                     'age_seconds': 3600, 'reused': False}


def test_check_extents_dir(tmp_path):
    made = cbt.check_extents_dir(str(tmp_path / 'a' / 'b'))
    assert os.path.isdir(made)
    afile = tmp_path / 'file'
    afile.write_text('x')
    with pytest.raises(cbt.ExtentsDirError, match='not a directory'):
        cbt.check_extents_dir(str(afile))
    with pytest.raises(cbt.ExtentsDirError, match='not writable'):
        cbt.check_extents_dir(str(afile / 'sub'))
    # check mode creates nothing
    cbt.check_extents_dir(str(tmp_path / 'c'), check_mode=True)
    assert not (tmp_path / 'c').exists()
    with pytest.raises(VSphereError, match='extents_dir is required'):
        cbt.check_extents_dir(None)


# --------------------------------------------------------------------------
# the cycle, on stubbed pyVmomi objects

class FakeTask(object):
    def __init__(self, result=None, error=None):
        self.result = result
        self.error = error


class FakeSnapshot(object):
    def __init__(self, world, moid, name, devices, created):
        self.world = world
        self._moId = moid
        self.name = name
        self.devices = devices
        self.created = created

    def props(self, paths):
        return {'config.hardware.device': self.devices}

    def RemoveSnapshot_Task(self, removeChildren, consolidate):
        self.world.calls.append(('RemoveSnapshot', self.name))
        if self.world.fail_remove:
            return FakeTask(error=vim.fault.TaskInProgress(msg='the VM is busy'))
        self.world.snapshots.remove(self)
        return FakeTask()


class FakeVM(object):
    """A VM with CBT: disks with a changeId ``<cbt uuid>/<seq>``; snapshots freeze them."""

    _moId = 'vm-42'

    def __init__(self, disks=(2000,), cbt_enabled=True, version='vmx-13', extra_devices=()):
        self.calls = []
        self.snapshots = []
        self.cbt_enabled = cbt_enabled
        self.version = version
        self.cbt_uuid = UUID_A
        self.seq = 3
        self.disk_keys = list(disks)
        self.extra_devices = list(extra_devices)
        self.capacity = dict((k, CAP) for k in disks)
        self.changed = dict((k, [(0, 65536)]) for k in disks)   # areas returned by QueryChangedDiskAreas
        self.allocated = dict((k, [(0, 65536), (MiB, 131072)]) for k in disks)
        self.reject_change_ids = False
        self.refuse_star = False
        self.fail_create = False
        self.fail_remove = False
        self.fail_query = None
        self.next_snap = 1

    @property
    def world(self):
        return self

    def devices(self, with_change_id=True):
        cid = '%s/%d' % (self.cbt_uuid, self.seq) if (self.cbt_enabled and with_change_id) else None
        return [make_disk(k, capacity=self.capacity[k], change_id=cid, unit=i)
                for i, k in enumerate(self.disk_keys)] + self.extra_devices

    def props(self, paths):
        tree = None
        if self.snapshots:
            tree = SimpleNamespace(rootSnapshotList=[
                SimpleNamespace(name=s.name, snapshot=s, createTime=s.created, childSnapshotList=[])
                for s in self.snapshots])
        return {'name': 'VM0', 'config.uuid': VM_UUID, 'config.instanceUuid': 'inst-1',
                'config.version': self.version, 'config.changeTrackingEnabled': self.cbt_enabled,
                'config.hardware.device': self.devices(), 'snapshot': tree,
                'runtime.powerState': 'poweredOn'}

    def ReconfigVM_Task(self, spec):
        self.calls.append(('ReconfigVM', spec.changeTrackingEnabled))
        self.cbt_enabled = spec.changeTrackingEnabled
        return FakeTask()

    def CreateSnapshot_Task(self, name, description, memory, quiesce):
        self.calls.append(('CreateSnapshot', name, quiesce))
        if self.fail_create:
            return FakeTask(error=vim.fault.FileFault(msg='datastore full', file='[LocalDS_0] VM0'))
        self.seq += 1
        snap = FakeSnapshot(self, 'snapshot-%d' % self.next_snap, name, self.devices(),
                            datetime.datetime(2026, 1, 1, tzinfo=UTC))
        self.next_snap += 1
        self.snapshots.append(snap)
        return FakeTask(result=snap)

    def QueryChangedDiskAreas(self, snapshot, deviceKey, startOffset, changeId):
        self.calls.append(('Query', deviceKey, startOffset, changeId))
        if self.fail_query is not None:
            raise self.fail_query  # pylint: disable=raising-bad-type
        if changeId == '*':
            if self.refuse_star:
                raise vim.fault.FileFault(msg='cannot compute allocated areas', file='disk')
            areas = self.allocated[deviceKey]
        else:
            if self.reject_change_ids:
                raise vim.fault.FileFault(msg='Error caused by file /vmfs/volumes/ds/VM0/disk-ctk.vmdk',
                                          file='disk-ctk.vmdk')
            areas = self.changed[deviceKey]
        return paged_query(areas, capacity=self.capacity[deviceKey])(startOffset, changeId)


@pytest.fixture
def fake(monkeypatch):
    vm = FakeVM()

    def fetch_properties(conn, obj, paths, operation=None, vm=None):
        return obj.props(paths)

    def fetch_many(conn, requests, operation=None, vm=None):
        return dict((obj._moId, obj.props(paths)) for obj, paths in requests)

    def wait_for_task(conn, task, operation, vm=None, disk=None, **kwargs):
        if task.error is not None:
            raise TaskFailedError(task.error.msg, operation=operation, vm=vm, disk=disk, fault=task.error)
        return task.result

    monkeypatch.setattr(cbt, 'fetch_properties', fetch_properties)
    monkeypatch.setattr(cbt, 'fetch_many', fetch_many)
    monkeypatch.setattr(cbt, 'wait_for_task', wait_for_task)
    return vm


def cycle(vm, tmp_path, **kwargs):
    options = dict(extents_dir=str(tmp_path / 'extents'), state_file=str(tmp_path / 'state.json'),
                   now=datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    options.update(kwargs)
    now, check_mode = options.pop('now'), options.pop('check_mode', False)
    return cbt.CbtSnapshot(None, vm, cbt.CYCLE_SPEC.options(**options), check_mode=check_mode, now=now)


def commit_all(result, tmp_path, targets=None):
    for disk in result['disks']:
        sync_state.commit_disk(str(tmp_path / 'state.json'), result['vm']['uuid'], disk['key'], disk['change_id'],
                               disk['capacity_bytes'], (targets or {}).get(disk['key']))


def read_extents(path):
    header, extents = ex.open_extents_file(path)
    return header, list(extents)


def test_first_cycle_is_full_with_allocated_areas(fake, tmp_path):
    result = cycle(fake, tmp_path).present()
    assert result['changed'] is True
    assert result['snapshot']['name'] == 'migratekit' and result['snapshot']['reused'] is False
    assert result['snapshot']['age_seconds'] == 30
    disk = result['disks'][0]
    assert disk['sync_type'] == 'full' and disk['reason_code'] == 'no_state'
    assert disk['change_id'] == UUID_A + '/4' and disk['previous_change_id'] is None
    header, extents = read_extents(disk['extents_file'])
    assert extents == [(0, 65536), (MiB, 131072)]
    assert header['sync_type'] == 'full' and header['change_id'] == UUID_A + '/4'
    assert header['disk_key'] == 2000 and header['capacity_bytes'] == CAP
    assert disk['extent_count'] == 2 and disk['changed_bytes'] == 196608
    assert ('Query', 2000, 0, '*') in fake.calls
    assert result['diff'] == {'before': {'cbt_enabled': True, 'snapshot': None},
                              'after': {'cbt_enabled': True, 'snapshot': 'migratekit'}}


def test_second_cycle_is_incremental_and_a_repeat_reuses_the_snapshot(fake, tmp_path):
    first = cycle(fake, tmp_path).present()
    commit_all(first, tmp_path)
    cycle(fake, tmp_path).absent()
    fake.changed[2000] = [(5 * MiB, 65536)]
    second = cycle(fake, tmp_path).present()
    disk = second['disks'][0]
    assert disk['sync_type'] == 'incremental' and disk['previous_change_id'] == first['disks'][0]['change_id']
    assert read_extents(disk['extents_file'])[1] == [(5 * MiB, 65536)]
    creates = len([c for c in fake.calls if c[0] == 'CreateSnapshot'])
    repeat = cycle(fake, tmp_path).present()
    assert repeat['changed'] is False and repeat['snapshot']['reused'] is True
    assert repeat['snapshot']['moid'] == second['snapshot']['moid']
    assert len([c for c in fake.calls if c[0] == 'CreateSnapshot']) == creates
    assert repeat['disks'][0]['sync_type'] == 'incremental'


def test_cbt_off_is_enabled_with_a_stun_cycle(fake, tmp_path):
    fake.cbt_enabled = False
    result = cycle(fake, tmp_path).present()
    names = [c[:2] for c in fake.calls if c[0] in ('ReconfigVM', 'CreateSnapshot', 'RemoveSnapshot')]
    assert names == [('ReconfigVM', True), ('CreateSnapshot', cbt.STUN_SNAPSHOT_NAME),
                     ('RemoveSnapshot', cbt.STUN_SNAPSHOT_NAME), ('CreateSnapshot', 'migratekit')]
    assert result['changed'] and result['vm']['cbt_enabled'] is True
    assert result['diff']['before']['cbt_enabled'] is False and result['diff']['after']['cbt_enabled'] is True
    assert [s.name for s in fake.snapshots] == ['migratekit']


def test_cbt_off_with_enable_cbt_false_fails(fake, tmp_path):
    fake.cbt_enabled = False
    with pytest.raises(cbt.CbtUnsupportedError, match='enable_cbt is false'):
        cycle(fake, tmp_path, enable_cbt=False).present()
    assert fake.calls == []


def test_check_mode_changes_nothing_and_writes_nothing(fake, tmp_path):
    fake.cbt_enabled = False
    result = cycle(fake, tmp_path, check_mode=True).present()
    assert result['changed'] is True
    assert fake.calls == [] and fake.snapshots == []
    assert not (tmp_path / 'extents').exists()
    assert result['snapshot']['moid'] is None
    disk = result['disks'][0]
    assert disk['extents_file'] is None and disk['sync_type'] == 'full'
    assert result['diff']['before'] == {'cbt_enabled': False, 'snapshot': None}


def test_check_mode_with_existing_snapshot_is_unchanged(fake, tmp_path):
    cycle(fake, tmp_path).present()
    calls = len(fake.calls)
    result = cycle(fake, tmp_path, check_mode=True).present()
    assert result['changed'] is False and result['snapshot']['reused'] is True
    assert len(fake.calls) == calls


def test_rejected_change_id_falls_back_to_full(fake, tmp_path):
    commit_all(cycle(fake, tmp_path).present(), tmp_path)
    cycle(fake, tmp_path).absent()
    fake.reject_change_ids = True
    result = cycle(fake, tmp_path).present()
    disk = result['disks'][0]
    assert disk['sync_type'] == 'full' and disk['reason_code'] == 'change_id_rejected'
    assert 'Error caused by file' in disk['reason']
    assert read_extents(disk['extents_file'])[1] == [(0, 65536), (MiB, 131072)]


def test_rejected_change_id_in_incremental_mode_fails_and_removes_the_snapshot(fake, tmp_path):
    commit_all(cycle(fake, tmp_path).present(), tmp_path)
    cycle(fake, tmp_path).absent()
    fake.reject_change_ids = True
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cycle(fake, tmp_path, mode='incremental').present()
    message = str(info.value)
    assert 'VM VM0' in message and 'Hard disk 1' in message and 'rejected' in message
    assert "snapshot 'migratekit'" in message and 'was removed' in message
    assert fake.snapshots == []
    assert os.listdir(str(tmp_path / 'extents')) == []


def test_incremental_mode_fails_before_the_snapshot_when_state_is_missing(fake, tmp_path):
    with pytest.raises(cbt.IncrementalNotPossibleError, match='no entry for disk key 2000') as info:
        cycle(fake, tmp_path, mode='incremental').present()
    assert 'VM VM0' in str(info.value)
    assert fake.calls == []


def test_grown_disk_and_reset_cbt_give_full_with_reason(fake, tmp_path):
    commit_all(cycle(fake, tmp_path).present(), tmp_path)
    cycle(fake, tmp_path).absent()
    fake.capacity[2000] = 2 * CAP
    disk = cycle(fake, tmp_path).present()['disks'][0]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'capacity_changed')
    cycle(fake, tmp_path).absent()
    fake.capacity[2000] = CAP
    fake.cbt_uuid = UUID_B
    disk = cycle(fake, tmp_path).present()['disks'][0]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'cbt_reset')


def test_changed_target_gives_full(fake, tmp_path):
    commit_all(cycle(fake, tmp_path).present(), tmp_path, targets={2000: 'nbd://old'})
    cycle(fake, tmp_path).absent()
    disk = cycle(fake, tmp_path, targets={'Hard disk 1': 'nbd://new'}).present()['disks'][0]
    assert disk['reason_code'] == 'target_changed' and 'nbd://old' in disk['reason']
    assert disk['target'] == 'nbd://new'


def test_refused_star_copies_the_whole_disk(fake, tmp_path):
    fake.refuse_star = True
    disk = cycle(fake, tmp_path).present()['disks'][0]
    assert read_extents(disk['extents_file'])[1] == [(0, CAP)]
    assert "refused changeId '*'" in disk['reason']


def test_failure_after_snapshot_removes_it_unless_kept(fake, tmp_path):
    fake.fail_query = vmodl.fault.SystemError(msg='boom', reason='x')
    with pytest.raises(VSphereError) as info:
        cycle(fake, tmp_path).present()
    assert 'boom' in str(info.value) and 'was removed' in str(info.value)
    assert info.value.details['snapshot_removed'] is True and fake.snapshots == []
    with pytest.raises(VSphereError) as info:
        cycle(fake, tmp_path, keep_snapshot_on_failure=True).present()
    assert 'was kept' in str(info.value) and len(fake.snapshots) == 1


def test_failed_cleanup_is_reported(fake, tmp_path):
    fake.fail_query = vmodl.fault.SystemError(msg='boom', reason='x')
    fake.fail_remove = True
    with pytest.raises(VSphereError) as info:
        cycle(fake, tmp_path).present()
    assert 'also failed' in str(info.value) and 'the VM is busy' in str(info.value)


def test_task_failure_message_names_operation_vm_and_fault(fake, tmp_path):
    fake.fail_create = True
    with pytest.raises(TaskFailedError) as info:
        cycle(fake, tmp_path).present()
    assert str(info.value).startswith("create snapshot 'migratekit' of VM VM0 failed: datastore full")


def test_old_hardware_is_refused(fake, tmp_path):
    fake.version = 'vmx-04'
    with pytest.raises(cbt.CbtUnsupportedError, match='hardware version vmx-04 is too old'):
        cycle(fake, tmp_path).present()


def test_independent_disk_is_skipped_with_a_warning(fake, tmp_path):
    fake.extra_devices = [make_disk(2005, mode='independent_persistent', unit=5)]
    result = cycle(fake, tmp_path).present()
    assert [d['key'] for d in result['disks']] == [2000]
    assert result['skipped_disks'][0]['key'] == 2005
    assert 'skipped' in result['warnings'][0] and 'Hard disk 6' in result['warnings'][0]


def test_only_untrackable_disks_is_an_error(fake, tmp_path):
    fake.disk_keys = []
    fake.extra_devices = [make_disk(2002, rdm='physicalMode')]
    with pytest.raises(cbt.CbtUnsupportedError, match='no disk can be tracked'):
        cycle(fake, tmp_path).present()


def test_multi_disk_vm_gets_one_extents_file_per_disk(fake, tmp_path):
    fake.disk_keys = [2000, 2001, 2002]
    for key in fake.disk_keys:
        fake.capacity[key] = CAP
        fake.allocated[key] = [(key * 4096, 4096)]
    result = cycle(fake, tmp_path).present()
    files = [d['extents_file'] for d in result['disks']]
    assert len(set(files)) == 3
    for disk in result['disks']:
        header, extents = read_extents(disk['extents_file'])
        assert header['disk_key'] == disk['key'] and extents == [(disk['key'] * 4096, 4096)]


def test_state_of_another_vm_gives_full(fake, tmp_path):
    path = tmp_path / 'state.json'
    path.write_text(json.dumps({'version': 1, 'vm_uuid': 'someone-else', 'disks': {'2000': GOOD}}))
    disk = cycle(fake, tmp_path).present()['disks'][0]
    assert disk['reason_code'] == 'other_vm' and 'someone-else' in disk['reason']


def test_broken_state_file_is_a_typed_error(fake, tmp_path):
    (tmp_path / 'state.json').write_text('{not json')
    with pytest.raises(cbt.StateFileError, match='not valid JSON'):
        cycle(fake, tmp_path).present()
    assert fake.calls == []


def test_absent_removes_and_repeat_is_unchanged(fake, tmp_path):
    cycle(fake, tmp_path).present()
    result = cycle(fake, tmp_path).absent()
    assert result['changed'] is True and result['snapshot']['removed'] is True
    assert result['diff'] == {'before': {'cbt_enabled': True, 'snapshot': 'migratekit'},
                              'after': {'cbt_enabled': True, 'snapshot': None}}
    assert fake.snapshots == []
    again = cycle(fake, tmp_path).absent()
    assert again['changed'] is False and again['snapshot'] is None


def test_absent_in_check_mode_keeps_the_snapshot(fake, tmp_path):
    cycle(fake, tmp_path).present()
    result = cycle(fake, tmp_path, check_mode=True).absent()
    assert result['changed'] is True and len(fake.snapshots) == 1


def test_reused_snapshot_from_before_cbt_is_refused_with_a_hint(fake, tmp_path):
    fake.cbt_enabled = False
    fake.CreateSnapshot_Task('migratekit', '', False, False)   # someone's snapshot, taken while CBT was off
    fake.calls = []
    with pytest.raises(cbt.CbtUnsupportedError) as info:
        cycle(fake, tmp_path).present()
    assert 'taken while CBT was off' in str(info.value) and 'state=absent' in str(info.value)
    assert len(fake.snapshots) == 1   # not ours to remove: it existed before the task
