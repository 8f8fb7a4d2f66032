# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of cbt.py: the cycle on stubbed pyVmomi objects."""
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
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import (
    InvalidParameterError, TaskFailedError, VSphereError,
)
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.cbt_fakes import (
    CAP, GOOD, UUID_A, UUID_B, VM_UUID, MiB, make_disk, paged_query,
)

UTC = inventory._UTC


# --------------------------------------------------------------------------
# the cycle, on stubbed pyVmomi objects

class FakeTask(object):
    def __init__(self, result=None, error=None):
        self.result = result
        self.error = error


class FakeSnapshot(object):
    def __init__(self, world, moid, name, devices, created, description=''):
        self.world = world
        self.description = description
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
        self.fail_query_incremental = None
        self.extra_config = []
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
                SimpleNamespace(name=s.name, snapshot=s, createTime=s.created, description=s.description,
                                childSnapshotList=[])
                for s in self.snapshots])
        return {'name': 'VM0', 'config.uuid': VM_UUID, 'config.instanceUuid': 'inst-1',
                'config.version': self.version, 'config.changeTrackingEnabled': self.cbt_enabled,
                'config.hardware.device': self.devices(), 'snapshot': tree, 'config.extraConfig': self.extra_config,
                'runtime.powerState': 'poweredOn'}

    def ReconfigVM_Task(self, spec):
        if spec.extraConfig:
            self.calls.append(('ReconfigExtra', ['%s=%s' % (o.key, o.value) for o in spec.extraConfig]))
            self.extra_config = list(self.extra_config) + list(spec.extraConfig)
            return FakeTask()
        self.calls.append(('ReconfigVM', spec.changeTrackingEnabled))
        if spec.changeTrackingEnabled is not None and spec.changeTrackingEnabled != self.cbt_enabled:
            self.cbt_uuid = UUID_B if self.cbt_uuid == UUID_A else UUID_A
        self.cbt_enabled = spec.changeTrackingEnabled
        return FakeTask()

    def CreateSnapshot_Task(self, name, description, memory, quiesce):
        self.calls.append(('CreateSnapshot', name, quiesce))
        if self.fail_create:
            return FakeTask(error=vim.fault.FileFault(msg='datastore full', file='[LocalDS_0] VM0'))
        self.seq += 1
        snap = FakeSnapshot(self, 'snapshot-%d' % self.next_snap, name, self.devices(),
                            datetime.datetime(2026, 1, 1, tzinfo=UTC), description)
        self.next_snap += 1
        self.snapshots.append(snap)
        return FakeTask(result=snap)

    def QueryChangedDiskAreas(self, snapshot, deviceKey, startOffset, changeId):
        self.calls.append(('Query', deviceKey, startOffset, changeId))
        if self.fail_query is not None:
            raise self.fail_query  # pylint: disable=raising-bad-type
        if changeId != '*' and self.fail_query_incremental is not None:
            raise self.fail_query_incremental  # pylint: disable=raising-bad-type
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


def test_independent_disk_refuses_the_vm_before_anything_changes(fake, tmp_path):
    fake.cbt_enabled = False
    fake.extra_devices = [make_disk(2005, mode='independent_persistent', unit=5)]
    with pytest.raises(inventory.UnfreezableDisksError) as info:
        cycle(fake, tmp_path).present()
    message = str(info.value)
    assert "disk 2005 ('Hard disk 6', [LocalDS_0] VM0/disk-2005.vmdk) is independent_persistent" in message
    assert 'exclude_disks' in message and 'migratekit_exclude_disks' in message
    assert 'set its disk mode to persistent' in message
    assert fake.calls == [] and not os.path.exists(str(tmp_path / 'extents'))
    assert info.value.details['unfreezable_disks'][0]['kind'] == 'independent'


def test_an_excluded_independent_disk_is_listed_not_migrated(fake, tmp_path):
    fake.extra_devices = [make_disk(2005, mode='independent_nonpersistent', unit=5)]
    for exclude in (['2005'], ['Hard disk 6']):
        result = cycle(fake, tmp_path, exclude_disks=exclude).present()
        assert [d['key'] for d in result['disks']] == [2000] and result['skipped_disks'] == []
        assert [(d['key'], d['kind'], d['mode']) for d in result['excluded_disks']] == [
            (2005, 'independent', 'independent_nonpersistent')]
        assert any('2005' in w and 'not migrated' in w for w in result['warnings'])


def test_exclude_disks_naming_no_disk_is_bad_input(fake, tmp_path):
    with pytest.raises(InvalidParameterError, match="'Hard disk 9' names no disk of the VM"):
        cycle(fake, tmp_path, exclude_disks=['Hard disk 9']).present()
    assert fake.calls == []


def test_only_untrackable_disks_is_an_error(fake, tmp_path):
    fake.disk_keys = []
    fake.extra_devices = [make_disk(2002, rdm='physicalMode')]
    with pytest.raises(cbt.CbtUnsupportedError, match='no disk can be tracked'):
        cycle(fake, tmp_path, exclude_disks=['2002']).present()


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


def test_a_users_snapshot_named_like_ours_is_left_alone_and_the_cycle_takes_its_own(fake, tmp_path):
    fake.CreateSnapshot_Task('migratekit', 'before the upgrade', False, False)   # a user's, same name
    users = fake.snapshots[0]
    fake.calls = []
    result = cycle(fake, tmp_path).present()
    assert result['snapshot']['reused'] is False and result['snapshot']['moid'] != users._moId
    assert any("is a user's snapshot and is never reused or removed" in w and users._moId in w
               for w in result['warnings'])
    cycle(fake, tmp_path).absent()
    assert fake.snapshots == [users]   # ours went, the user's stayed
    assert sync_state.recorded_snapshots(sync_state.load(str(tmp_path / 'state.json'))) == {}


def test_our_snapshot_is_recognised_by_its_record_not_its_name(fake, tmp_path):
    first = cycle(fake, tmp_path).present()
    recorded = sync_state.recorded_snapshots(sync_state.load(str(tmp_path / 'state.json')))
    assert [entry['moid'] for entry in recorded.values()] == [first['snapshot']['moid']]
    ours = fake.snapshots[0]
    assert '[migratekit.migration snapshot kind=migration vm=inst-1 token=%s]' % list(recorded)[0] \
        in ours.description
    # the same snapshot with its record gone (state file replaced): marked, but not ours to reuse or remove
    os.unlink(str(tmp_path / 'state.json'))
    second = cycle(fake, tmp_path).present()
    assert second['snapshot']['moid'] != ours._moId
    assert any('does not record' in w and ours._moId in w for w in second['warnings'])
    cycle(fake, tmp_path).absent()
    assert fake.snapshots == [ours]


def test_a_crash_between_create_and_record_leaves_a_snapshot_still_recognised_by_its_token(fake, tmp_path):
    first = cycle(fake, tmp_path).present()
    state_path = str(tmp_path / 'state.json')
    state = sync_state.load(state_path)
    for entry in state['snapshots'].values():
        del entry['moid']    # as if killed before the moref was written
    sync_state.write_atomic(state_path, state)
    again = cycle(fake, tmp_path).present()
    assert again['snapshot']['reused'] is True and again['snapshot']['moid'] == first['snapshot']['moid']


def test_a_stun_snapshot_left_by_a_crash_is_removed_by_the_next_cycle(fake, tmp_path):
    from ansible_collections.migratekit.migration.plugins.module_utils._cbt import snapshots
    fake.CreateSnapshot_Task(cbt.STUN_SNAPSHOT_NAME, snapshots.describe('x', snapshots.KIND_STUN, 'inst-1', 'ab' * 8),
                             False, False)
    fake.CreateSnapshot_Task(cbt.STUN_SNAPSHOT_NAME, 'a user called a snapshot like our stun one', False, False)
    users = fake.snapshots[1]
    result = cycle(fake, tmp_path).present()
    assert any('stun snapshots left over' in w for w in result['warnings'])
    assert [s.name for s in fake.snapshots] == [cbt.STUN_SNAPSHOT_NAME, 'migratekit'] and users in fake.snapshots


def test_reused_snapshot_without_change_id_is_refused_with_a_hint(fake, tmp_path):
    cycle(fake, tmp_path).present()
    for snap in fake.snapshots:
        snap.devices = fake.devices(with_change_id=False)   # ours, but its disks carry no changeId
    fake.calls = []
    with pytest.raises(cbt.CbtUnsupportedError) as info:
        cycle(fake, tmp_path).present()
    assert 'taken while CBT was off' in str(info.value) and 'state=absent' in str(info.value)
    assert len(fake.snapshots) == 1   # reused, not created by this run: kept


def test_a_disk_with_its_own_ctk_switch_off_is_turned_on_with_a_stun_cycle(fake, tmp_path):
    fake.extra_devices = [vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0)]
    first = cycle(fake, tmp_path).present()
    commit_all(first, tmp_path)
    cycle(fake, tmp_path).absent()
    fake.extra_config = [vim.option.OptionValue(key='scsi0:0.ctkEnabled', value='FALSE')]
    fake.calls = []
    result = cycle(fake, tmp_path).present()
    assert ('ReconfigExtra', ['scsi0:0.ctkEnabled=TRUE']) in fake.calls
    assert [c[1] for c in fake.calls if c[0] == 'CreateSnapshot'] == [cbt.STUN_SNAPSHOT_NAME, 'migratekit']
    assert result['disks'][0]['sync_type'] == 'full' and result['disks'][0]['reason_code'] == 'cbt_off'
    assert any('scsi0:0.ctkEnabled = FALSE' in w and 'turned on' in w for w in result['warnings'])


def test_a_disk_with_its_ctk_switch_off_and_enable_cbt_false_fails_before_any_change(fake, tmp_path):
    fake.extra_config = [vim.option.OptionValue(key='scsi0:0.ctkEnabled', value='FALSE')]
    fake.extra_devices = [vim.vm.device.ParaVirtualSCSIController(key=1000, busNumber=0)]
    with pytest.raises(cbt.CbtUnsupportedError, match=r'off for disk 2000 \(scsi0:0.ctkEnabled = FALSE\)'):
        cycle(fake, tmp_path, enable_cbt=False).present()
    assert fake.calls == []


def test_reset_cbt_disables_stuns_enables_and_copies_in_full(fake, tmp_path):
    first = cycle(fake, tmp_path).present()
    commit_all(first, tmp_path)
    fake.calls = []
    result = cycle(fake, tmp_path, reset_cbt=True).present()   # our leftover snapshot is replaced too
    steps = [c[:2] for c in fake.calls if c[0] in ('ReconfigVM', 'CreateSnapshot', 'RemoveSnapshot')]
    assert steps == [('RemoveSnapshot', 'migratekit'), ('ReconfigVM', False), ('CreateSnapshot', cbt.STUN_SNAPSHOT_NAME),
                     ('RemoveSnapshot', cbt.STUN_SNAPSHOT_NAME), ('ReconfigVM', True),
                     ('CreateSnapshot', cbt.STUN_SNAPSHOT_NAME), ('RemoveSnapshot', cbt.STUN_SNAPSHOT_NAME),
                     ('CreateSnapshot', 'migratekit')]
    assert result['disks'][0]['sync_type'] == 'full' and result['disks'][0]['reason_code'] == 'cbt_reset_requested'
    with pytest.raises(cbt.IncrementalNotPossibleError, match='reset_cbt'):
        cycle(fake, tmp_path, reset_cbt=True, mode='incremental').present()


def test_invalid_argument_on_change_id_means_a_full_copy(fake, tmp_path):
    first = cycle(fake, tmp_path).present()
    commit_all(first, tmp_path)
    cycle(fake, tmp_path).absent()
    fake.fail_query_incremental = vmodl.fault.InvalidArgument(invalidProperty='changeId')
    result = cycle(fake, tmp_path).present()
    disk = result['disks'][0]
    assert disk['sync_type'] == 'full' and disk['reason_code'] == 'change_id_rejected'
    assert 'InvalidArgument' in disk['reason']
