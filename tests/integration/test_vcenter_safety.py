# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe on a real vCenter: our snapshots and only ours, users' snapshots, CBT per disk, CBT faults, consolidation.

First what the simulator does, through pyvmomi alone (as vSphere documents it), then the cycles of
vmware_cbt_snapshot's module_utils against it.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess
import time

import pytest

pytest.importorskip('pyVmomi')

from pyVmomi import vim, vmodl  # noqa: E402
from pyVim.task import WaitForTask  # noqa: E402

from ansible_collections.migratekit.migration.plugins.module_utils import cbt  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state  # noqa: E402
from ansible_collections.migratekit.migration.tests.integration.test_vmware_cbt_snapshot_cycles import (  # noqa: E402
    Cycles,
)

MiB = 1 << 20


class OwnCycles(Cycles):
    """Cycles whose removals go through the state file's record too, as the roles run them."""

    def absent(self, **options):
        kwargs = dict(state_file=self.state_file)
        kwargs.update(options)
        return cbt.run(self.conn, self.vm, state='absent', **kwargs)


@pytest.fixture
def cycles(lab_factory, tmp_path):
    runner = OwnCycles(lab_factory(vms=1, disks=2), tmp_path)
    yield runner
    runner.close()


def vm_of(si, lab):
    return si.content.searchIndex.FindByInventoryPath(lab.vm('VM0')['path'])


def start_reader(image, tmp_path):
    """A reader holding a VMDK chain open (as a backup tool would): qemu-nbd, read-only; returns the Popen."""
    sock = str(tmp_path / 'reader.sock')
    reader = subprocess.Popen(['qemu-nbd', '--read-only', '--format=vmdk', '--persistent', '-k', sock, image])
    for _attempt in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return reader


def snapshot_disks(snap):
    return dict((d.key, d) for d in snap.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def enable_cbt(si, vm):
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)), si=si)


def take(si, vm, name, description=''):
    task = vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=False)
    WaitForTask(task, si=si)
    return task.info.result


def tree(si, lab):
    """[(name, moid, description)] of VM0's snapshots."""
    out = []

    def walk(nodes):
        for node in nodes:
            out.append((node.name, node.snapshot._moId, node.description))
            walk(node.childSnapshotList)
    vm = vm_of(si, lab)
    walk(vm.snapshot.rootSnapshotList if vm.snapshot else [])
    return out


# --------------------------------------------------------------------------
# the simulator, through pyvmomi alone

def test_lab_a_disks_own_ctk_switch_takes_effect_at_the_next_snapshot(lab_factory):
    lab = lab_factory(vms=1, disks=2)
    si = lab.connect()
    vm = vm_of(si, lab)
    enable_cbt(si, vm)
    off = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key='scsi0:1.ctkEnabled', value='FALSE')])
    WaitForTask(vm.ReconfigVM_Task(off), si=si)
    snap = take(si, vm, 'after-off')
    disks = snapshot_disks(snap)
    assert disks[2000].backing.changeId and not disks[2001].backing.changeId
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False), si=si)
    before = disks[2000].backing.changeId
    on = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key='scsi0:1.ctkEnabled', value='TRUE')])
    WaitForTask(vm.ReconfigVM_Task(on), si=si)
    disks = snapshot_disks(take(si, vm, 'after-on'))
    assert disks[2001].backing.changeId and disks[2001].backing.changeId.endswith('/1')   # a new tracking file
    assert disks[2000].backing.changeId.split('/')[0] == before.split('/')[0]


def test_lab_query_changed_disk_areas_faults_as_vsphere_names_them(lab_factory):
    lab = lab_factory(vms=1, disks=1)
    si = lab.connect()
    vm = vm_of(si, lab)
    enable_cbt(si, vm)
    snap = take(si, vm, 's')
    change_id = snapshot_disks(snap)[2000].backing.changeId
    with pytest.raises(vmodl.fault.InvalidArgument) as info:
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId='not-a-change-id')
    assert info.value.invalidProperty == 'changeId'
    vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId=change_id)
    lab.corrupt_cbt('VM0', 2000, 'FileFault')
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId=change_id)
    vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId='*')   # allocated areas still
    lab.corrupt_cbt('VM0', 2000, 'InvalidArgument')
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId=change_id)
    # a CBT reset (off, on) gives the disk a new tracking file
    for enabled in (False, True):
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled)), si=si)
    snap2 = take(si, vm, 's2')
    fresh = snapshot_disks(snap2)[2000].backing.changeId
    vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=2000, startOffset=0, changeId=fresh)


@pytest.mark.skipif(shutil.which('qemu-nbd') is None, reason='qemu-nbd is not installed')
def test_lab_a_merge_blocked_by_a_reader_sets_consolidation_needed_and_consolidate_vm_disks_does_it(
        lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=1)
    si = lab.connect()
    vm = vm_of(si, lab)
    snap = take(si, vm, 's')
    frozen = lab.datastore_path(snapshot_disks(snap)[2000].backing.fileName)
    reader = start_reader(frozen, tmp_path)
    try:
        WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True), si=si)
        assert vm.runtime.consolidationNeeded is True
        with pytest.raises(vim.fault.FileLocked):
            WaitForTask(vm.ConsolidateVMDisks_Task(), si=si)
    finally:
        reader.terminate()
        reader.wait()
    WaitForTask(vm.ConsolidateVMDisks_Task(), si=si)
    assert vm.runtime.consolidationNeeded is False
    assert len(lab.live('VM0', 2000)['chain']) == 1


def test_lab_a_revert_gives_the_disk_back_what_the_snapshot_froze_and_its_cbt_sequence(lab_factory):
    from lab import chain_sha256
    lab = lab_factory(vms=1, disks=1)
    si = lab.connect()
    vm = vm_of(si, lab)
    enable_cbt(si, vm)
    lab.write('VM0', 2000, offset=0, length=64 * 1024, seed=1)
    s1 = take(si, vm, 'before-change')
    at_s1 = snapshot_disks(s1)[2000].backing.changeId
    frozen = chain_sha256(lab.datastore_path(snapshot_disks(s1)[2000].backing.fileName))
    lab.write('VM0', 2000, offset=MiB, length=64 * 1024, seed=2)
    s2 = take(si, vm, 'later')
    later = snapshot_disks(s2)[2000].backing.changeId
    with pytest.raises(vmodl.fault.NotSupported):   # the lab has one chain per disk: no branches
        WaitForTask(s1.RevertToSnapshot_Task(), si=si)
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False), si=si)
    WaitForTask(s1.RevertToSnapshot_Task(), si=si)
    live = [d for d in vm.config.hardware.device if d.key == 2000][0]
    assert live.backing.changeId == at_s1 and later.split('/')[0] == at_s1.split('/')[0]
    assert int(later.split('/')[1]) > int(at_s1.split('/')[1])
    assert chain_sha256(lab.live('VM0', 2000)['image']) == frozen
    assert vm.snapshot.currentSnapshot._moId == s1._moId


# --------------------------------------------------------------------------
# cycles

def test_a_vm_reverted_to_a_snapshot_older_than_the_last_sync_gets_a_full_copy(cycles):
    lab = cycles.lab
    cycles.sync()
    users = lab.user_snapshot('VM0', 'before-patch')
    lab.write('VM0', 2000, offset=2 * MiB, length=64 * 1024, seed=5)
    synced = cycles.sync()   # the last sync, after the user's snapshot
    si = lab.connect()
    WaitForTask(vim.vm.Snapshot(users, si._stub).RevertToSnapshot_Task(), si=si)
    with pytest.raises(cbt.IncrementalNotPossibleError, match='reverted'):
        cycles.present(mode='incremental')
    assert [moid for _n, moid, _d in tree(si, lab)] == [users]   # refused before any snapshot
    result = cycles.present()
    disks = dict((d['key'], d) for d in result['disks'])
    synced = dict((d['key'], d) for d in synced['disks'])
    for key in (2000, 2001):
        assert (disks[key]['sync_type'], disks[key]['reason_code']) == ('full', 'cbt_rewound'), disks[key]
        assert synced[key]['change_id'] in disks[key]['reason']
    cycles.commit(result)
    cycles.absent()
    assert [d['sync_type'] for d in cycles.sync()['disks']] == ['incremental'] * 2


def test_a_users_snapshot_named_like_ours_is_never_reused_or_removed(cycles):
    lab = cycles.lab
    users = lab.user_snapshot('VM0', 'migratekit', description='my own, not the migration tool\'s')
    result = cycles.present()
    assert result['snapshot']['moid'] != users and result['snapshot']['reused'] is False
    assert any(users in w and "is a user's snapshot" in w for w in result['warnings'])
    cycles.commit(result)
    cycles.absent()
    names = [(name, moid) for name, moid, _d in tree(lab.connect(), lab)]
    assert names == [('migratekit', users)]
    # and a second cycle still does not take it for ours
    again = cycles.present()
    assert again['snapshot']['moid'] != users and again['disks'][0]['sync_type'] == 'incremental'
    cycles.absent()
    assert [moid for _n, moid, _d in tree(lab.connect(), lab)] == [users]


def test_our_snapshot_carries_its_marker_and_is_recorded_and_the_record_goes_with_it(cycles):
    lab = cycles.lab
    result = cycles.present()
    moid = result['snapshot']['moid']
    [(name, found, description)] = tree(lab.connect(), lab)
    recorded = sync_state.recorded_snapshots(sync_state.load(cycles.state_file))
    [(token, entry)] = recorded.items()
    assert found == moid and entry['moid'] == moid
    assert '[migratekit.migration snapshot kind=migration vm=%s token=%s]' % (result['vm']['instance_uuid'], token) \
        in description
    cycles.absent()
    assert tree(lab.connect(), lab) == []
    assert sync_state.recorded_snapshots(sync_state.load(cycles.state_file)) == {}


def test_a_stun_snapshot_left_by_a_crash_is_removed_and_users_snapshots_are_named(cycles):
    lab = cycles.lab
    si = lab.connect()
    vm = vm_of(si, lab)
    instance_uuid = vm.config.instanceUuid
    from ansible_collections.migratekit.migration.plugins.module_utils._cbt import snapshots
    take(si, vm, cbt.STUN_SNAPSHOT_NAME, snapshots.describe('left by a crash', snapshots.KIND_STUN,
                                                            instance_uuid, 'cd' * 16))
    users = lab.user_snapshot('VM0', 'before-upgrade')
    result = cycles.present()
    assert any('stun snapshots left over' in w for w in result['warnings'])
    assert any("not migratekit.migration's" in w and 'before-upgrade' in w and users in w for w in result['warnings'])
    names = [name for name, _m, _d in tree(si, lab)]
    assert cbt.STUN_SNAPSHOT_NAME not in names and 'before-upgrade' in names


def test_a_disk_with_its_ctk_switch_off_is_turned_on_and_copied_in_full(cycles):
    lab = cycles.lab
    cycles.sync()
    si = lab.connect()
    vm = vm_of(si, lab)
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key='scsi0:1.ctkEnabled', value='FALSE')])
    WaitForTask(vm.ReconfigVM_Task(spec), si=si)
    take(si, vm, 'someone-else-stuns')   # the switch takes effect: the disk loses its tracking file
    for name, moid, _d in tree(si, lab):
        if name == 'someone-else-stuns':
            WaitForTask(vim.vm.Snapshot(moid, si._stub).RemoveSnapshot_Task(removeChildren=False), si=si)
    with pytest.raises(cbt.CbtUnsupportedError) as info:
        cycles.present(enable_cbt=False)
    assert 'scsi0:1.ctkEnabled = FALSE' in str(info.value) and tree(si, lab) == []
    result = cycles.present()
    disks = dict((d['key'], d) for d in result['disks'])
    assert disks[2001]['sync_type'] == 'full' and disks[2001]['change_id']
    assert disks[2000]['sync_type'] == 'incremental'
    assert any('scsi0:1.ctkEnabled = FALSE' in w and 'turned on' in w for w in result['warnings'])
    assert 'power-cycle' not in ' '.join(result['warnings'])
    cycles.commit(result)
    cycles.absent()
    assert cycles.sync()['disks'][1]['sync_type'] == 'incremental'


@pytest.mark.parametrize('fault', ['FileFault', 'InvalidArgument'])
def test_a_corrupt_tracking_file_gives_a_full_copy_and_reset_cbt_repairs_it(cycles, fault):
    lab = cycles.lab
    cycles.sync()
    lab.write('VM0', 2000, offset=MiB, length=64 * 1024, seed=3)
    lab.corrupt_cbt('VM0', 2000, fault)
    result = cycles.present()
    disk = dict((d['key'], d) for d in result['disks'])[2000]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'change_id_rejected') and fault in disk['reason']
    cycles.commit(result)
    cycles.absent()
    # still corrupt: every cycle would copy the disk in full, until a reset
    assert cycles.sync()['disks'][0]['reason_code'] == 'change_id_rejected'
    reset = cycles.present(reset_cbt=True)
    assert [d['reason_code'] for d in reset['disks']] == ['cbt_reset_requested'] * 2
    cycles.commit(reset)
    cycles.absent()
    assert [d['sync_type'] for d in cycles.sync()['disks']] == ['incremental'] * 2
    assert tree(lab.connect(), lab) == []


@pytest.mark.skipif(shutil.which('qemu-nbd') is None, reason='qemu-nbd is not installed')
def test_disks_that_need_consolidation_after_the_removal_are_a_warning_then_consolidated(cycles, tmp_path):
    lab = cycles.lab
    result = cycles.present()
    cycles.commit(result)
    frozen = lab.datastore_path(result['disks'][0]['backing_file'])
    reader = start_reader(frozen, tmp_path)
    try:
        removed = cycles.absent()
    finally:
        reader.terminate()
        reader.wait()
    assert removed['snapshot']['removed'] is True
    assert removed['consolidation']['needed'] is True and removed['consolidation']['done'] is False
    assert any('need consolidation' in w for w in removed['warnings'])
    # the next cleanup consolidates once nothing holds the disk
    done = cycles.absent()
    assert done['consolidation'] == {'needed': True, 'done': True, 'error': None}
    assert len(lab.live('VM0', 2000)['chain']) == 1
