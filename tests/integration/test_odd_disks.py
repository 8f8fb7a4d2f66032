# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks a snapshot cannot freeze, against the lab: what the simulator does (pyvmomi alone), and the refusal.

The lab's disks are made independent, RDMs, multi-writer or put on a
controller with bus sharing with ReconfigVM (Lab.disk_config, Lab.bus_sharing),
as vSphere models them.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest

pytest.importorskip('pyVmomi')

from pyVim.connect import Disconnect  # noqa: E402
from pyVim.task import WaitForTask  # noqa: E402
from pyVmomi import vim  # noqa: E402

from ansible_collections.migratekit.migration.plugins.module_utils import cbt  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils._cbt import inventory  # noqa: E402


@pytest.fixture
def lab(lab_factory):
    return lab_factory(vms=1, disks=2)


def vm_of(si, lab):
    return si.content.searchIndex.FindByInventoryPath(lab.vm('VM0')['path'])


def disk(devices, key):
    return [d for d in devices if d.key == key][0]


# --------------------------------------------------------------------------
# the simulator, through pyvmomi alone

def test_an_independent_disk_is_not_affected_by_snapshots(lab):
    lab.disk_config('VM0', 2001, disk_mode='independent_persistent')
    before = lab.live('VM0', 2001)['image']
    si = lab.connect()
    try:
        vm = vm_of(si, lab)
        assert disk(vm.config.hardware.device, 2001).backing.diskMode == 'independent_persistent'
        task = vm.CreateSnapshot_Task(name='user', description='', memory=False, quiesce=False)
        WaitForTask(task, si=si)
        snapshot = task.info.result
        live = dict((d.key, d.backing) for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        frozen = dict((d.key, d.backing) for d in snapshot.config.hardware.device
                      if isinstance(d, vim.vm.device.VirtualDisk))
        # the dependent disk got a delta; the independent one did not ("not affected by snapshots")
        assert live[2000].parent is not None and live[2000].fileName != frozen[2000].fileName
        assert live[2001].parent is None and live[2001].fileName == frozen[2001].fileName
    finally:
        Disconnect(si)
    assert lab.live('VM0', 2001)['image'] == before


def test_a_virtual_mode_rdm_is_snapshotted_like_a_flat_disk(lab):
    lab.disk_config('VM0', 2001, rdm='virtualMode')
    si = lab.connect()
    try:
        vm = vm_of(si, lab)
        WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)), si=si)
        task = vm.CreateSnapshot_Task(name='user', description='', memory=False, quiesce=False)
        WaitForTask(task, si=si)
        live = disk(vm.config.hardware.device, 2001).backing
        frozen = disk(task.info.result.config.hardware.device, 2001).backing
        assert isinstance(live, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
        assert live.compatibilityMode == 'virtualMode' and live.deltaDiskFormat == 'redoLogFormat'
        assert isinstance(live.parent, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
        assert live.parent.fileName == frozen.fileName != live.fileName
        assert frozen.changeId and frozen.changeId.endswith('/1')
    finally:
        Disconnect(si)


@pytest.mark.parametrize('make, issue', [
    (lambda lab: lab.bus_sharing('VM0', 1000, 'physicalSharing'), vim.fault.SharedBusControllerNotSupported),
    (lambda lab: lab.disk_config('VM0', 2001, rdm='physicalMode'), vim.fault.RawDiskNotSupported),
], ids=['shared-bus', 'physical-rdm'])
def test_create_snapshot_fails_on_an_incompatible_device(lab, make, issue):
    make(lab)
    si = lab.connect()
    try:
        vm = vm_of(si, lab)
        task = vm.CreateSnapshot_Task(name='user', description='', memory=False, quiesce=False)
        with pytest.raises(vim.fault.SnapshotIncompatibleDeviceInVm) as info:
            WaitForTask(task, si=si)
        assert isinstance(info.value.fault, issue)
        assert 'prevents the snapshot operation' in info.value.msg
        assert vm.snapshot is None
    finally:
        Disconnect(si)


def test_an_independent_physical_rdm_is_left_out_of_snapshots(lab):
    lab.disk_config('VM0', 2001, rdm='physicalMode', disk_mode='independent_persistent')
    name = lab.user_snapshot('VM0', 'user')
    assert name and lab.snapshot_names('VM0') == ['user']


# --------------------------------------------------------------------------
# the cycle refuses them before it touches the VM

class Cycle(object):
    def __init__(self, lab, tmp_path):
        vc = lab.vcenter
        self.conn = vsphere.connect(vc['hostname'], vc['username'], vc['password'], vc['port'], validate_certs=False)
        self.vm = vsphere.find_vm(self.conn, path=lab.vm('VM0')['path'])
        self.extents_dir = str(tmp_path / 'extents')
        self.state_file = str(tmp_path / 'state.json')

    def present(self, **options):
        return cbt.run(self.conn, self.vm, state='present', state_file=self.state_file,
                       extents_dir=self.extents_dir, **options)

    def untouched(self):
        props = vsphere.fetch_properties(self.conn, self.vm, ['config.changeTrackingEnabled', 'snapshot'])
        return not props['config.changeTrackingEnabled'] and props['snapshot'] is None \
            and not os.path.exists(self.extents_dir)


@pytest.fixture
def cycle(lab, tmp_path):
    one = Cycle(lab, tmp_path)
    yield one
    one.conn.close()


@pytest.mark.parametrize('make, mode', [
    (lambda lab: lab.disk_config('VM0', 2001, disk_mode='independent_persistent'), 'is independent_persistent'),
    (lambda lab: lab.disk_config('VM0', 2001, disk_mode='independent_nonpersistent'), 'is independent_nonpersistent'),
    (lambda lab: lab.disk_config('VM0', 2001, rdm='physicalMode', disk_mode='independent_persistent'),
     'is physicalMode RDM'),
    (lambda lab: lab.disk_config('VM0', 2001, sharing='sharingMultiWriter'), 'is sharingMultiWriter'),
], ids=['independent-persistent', 'independent-nonpersistent', 'physical-rdm', 'multi-writer'])
def test_the_cycle_refuses_the_vm_naming_the_disk_and_the_ways_out(lab, cycle, make, mode):
    make(lab)
    with pytest.raises(inventory.UnfreezableDisksError) as info:
        cycle.present()
    message = str(info.value)
    print(message)
    assert "disk 2001 ('Hard disk 2', [LocalDS_0] VM0/VM0_1.vmdk) %s" % mode in message
    assert 'exclude_disks' in message and 'migratekit_exclude_disks' in message and 'change its mode' in message
    assert '2000' not in message.split('e.g.', maxsplit=1)[0].split(':', 1)[1].split('Either')[0].replace('2001', '')
    assert cycle.untouched()
    # excluded, the disk is listed and the others are migrated
    result = cycle.present(exclude_disks=['Hard disk 2'])
    assert [d['key'] for d in result['disks']] == [2000] and result['disks'][0]['change_id']
    assert [d['key'] for d in result['excluded_disks']] == [2001]
    assert any('not migrated' in w and '2001' in w for w in result['warnings'])
    cbt.run(cycle.conn, cycle.vm, state='absent')


def test_a_disk_on_a_shared_bus_is_refused_even_when_excluded(lab, cycle):
    lab.bus_sharing('VM0', 1000, 'virtualSharing')
    for exclude in ([], ['2001']):
        with pytest.raises(inventory.UnfreezableDisksError) as info:
            cycle.present(exclude_disks=exclude)
        print(info.value)
        assert 'with bus sharing virtualSharing' in str(info.value)
        assert 'is not enough' in str(info.value)
    assert cycle.untouched()


def test_a_virtual_mode_rdm_is_migrated_like_other_disks(lab, cycle):
    lab.disk_config('VM0', 2001, rdm='virtualMode')
    lab.write('VM0', 2001, offset=1 << 20, length=4096, seed=1)
    result = cycle.present()
    assert [d['key'] for d in result['disks']] == [2000, 2001] and result['excluded_disks'] == []
    rdm = result['disks'][1]
    assert rdm['sync_type'] == 'full' and rdm['change_id'] and rdm['extent_count'] >= 1
    cbt.run(cycle.conn, cycle.vm, state='absent')


# --------------------------------------------------------------------------
# the roles: the refusal fails the VM before it is touched; an excluded disk is in the result and the summary

DUMP = """
- name: Dump the cycle result
  hosts: migratekit_vms
  gather_facts: false
  tasks:
    - name: Write migratekit_sync_result
      ansible.builtin.copy:
        content: "{{ migratekit_sync_result | default(none) | to_json }}"
        dest: "%s/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      changed_when: false
"""


def test_full_sync_refuses_an_independent_disk_and_migrates_the_others_when_it_is_excluded(lab, tmp_path):
    import json
    from ansible_collections.migratekit.migration.tests.integration.helpers import REPO_ROOT, run_playbook
    lab.disk_config('VM0', 2001, disk_mode='independent_persistent')
    dump = tmp_path / 'dump.yml'
    dump.write_text(DUMP % tmp_path)
    playbook = os.path.join(REPO_ROOT, 'playbooks', 'full_sync.yml')

    def full_sync(**extra):
        extra.update(migratekit_state_dir=str(tmp_path / 'state'), migratekit_run_dir=str(tmp_path / 'r'))
        proc = run_playbook(['-i', lab.inventory, '-e', json.dumps(extra), playbook, str(dump)])
        if proc.returncode != 0:  # a failed host runs no further play
            return proc, None
        with open(str(tmp_path / 'VM0.json')) as handle:
            return proc, json.load(handle)

    proc, _result = full_sync()
    assert proc.returncode != 0
    failure = [line for line in proc.stdout.splitlines() if 'VM VM0: full_sync failed' in line]
    assert failure, proc.stdout[-4000:]
    print(failure[0])
    assert "disk 2001 ('Hard disk 2', [LocalDS_0] VM0/VM0_1.vmdk) is independent_persistent" in failure[0]
    assert 'migratekit_exclude_disks' in failure[0]
    si = lab.connect()
    try:
        vm = vm_of(si, lab)
        assert vm.snapshot is None and not vm.config.changeTrackingEnabled
    finally:
        Disconnect(si)
    assert not os.path.exists(str(tmp_path / 'state' / 'VM0.json'))

    proc, result = full_sync(migratekit_exclude_disks=[2001])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result['failed'] is False and [d['key'] for d in result['disks']] == [2000]
    assert [(d['key'], d['mode']) for d in result['excluded_disks']] == [(2001, 'independent_persistent')]
    assert 'disk 2001 (Hard disk 2) not migrated' in result['message']
    assert 'not migrated' in proc.stdout  # the module's warning
