# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vmware_cbt_snapshot's module_utils against the lab: sync cycles, reasons, errors, round trips.

Each test gets its own lab (vcsim with CBT, 64 MiB disks, 64 KiB CBT blocks,
64 areas per QueryChangedDiskAreas answer). A "cycle" is what a sync does on
the vSphere side: present -> (copy) -> commit the changeIds -> absent.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest

pytest.importorskip('pyVmomi')

from pyVmomi import vim  # noqa: E402
from pyVmomi.SoapAdapter import SoapStubAdapter  # noqa: E402

from ansible_collections.migratekit.migration.plugins.module_utils import cbt  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import extents as ex  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state  # noqa: E402
from ansible_collections.migratekit.migration.plugins.module_utils import vsphere  # noqa: E402

MiB = 1 << 20
BLOCK = 64 * 1024  # the lab's CBT granularity


def connect(lab):
    vc = lab.vcenter
    return vsphere.connect(vc['hostname'], vc['username'], vc['password'], vc['port'], validate_certs=False)


class Cycles(object):
    """Runs cycles of one VM of a lab with one connection, like the module would."""

    def __init__(self, lab, tmp_path, vm_name='VM0'):
        self.lab = lab
        self.vm_name = vm_name
        self.conn = connect(lab)
        self.vm = vsphere.find_vm(self.conn, path=lab.vm(vm_name)['path'])
        self.state_file = str(tmp_path / ('%s-state.json' % vm_name))
        self.extents_dir = str(tmp_path / 'extents')

    def present(self, **options):
        kwargs = dict(state_file=self.state_file, extents_dir=self.extents_dir)
        kwargs.update(options)
        return cbt.run(self.conn, self.vm, state='present', **kwargs)

    def absent(self, **options):
        return cbt.run(self.conn, self.vm, state='absent', **options)

    def commit(self, result, keys=None):
        """What the copy module does after a flush: record each disk's new changeId."""
        for disk in result['disks']:
            if keys is None or disk['key'] in keys:
                sync_state.commit_disk(self.state_file, result['vm']['uuid'], disk['key'], disk['change_id'],
                                       disk['capacity_bytes'], disk['target'])

    def sync(self, **options):
        """present + commit + absent; returns the present result."""
        result = self.present(**options)
        self.commit(result)
        self.absent()
        return result

    def close(self):
        self.conn.close()


@pytest.fixture
def cycles(request, lab_factory, tmp_path):
    shape = getattr(request, 'param', {})
    lab = lab_factory(vms=shape.get('vms', 1), disks=shape.get('disks', 2))
    runner = Cycles(lab, tmp_path)
    yield runner
    runner.close()


def read_extents(disk):
    header, extents = ex.open_extents_file(disk['extents_file'])
    extents = list(extents)
    assert header['disk_key'] == disk['key'] and header['change_id'] == disk['change_id']
    assert header['sync_type'] == disk['sync_type']
    assert header['previous_change_id'] == disk['previous_change_id']
    assert header['extent_count'] == len(extents) == disk['extent_count']
    return extents


def assert_covers(extents, written, capacity, block=BLOCK):
    """Every written byte is in an extent; every extent block touches a write (block granularity)."""
    assert extents == list(ex.merge_extents(extents)), 'extents not sorted and merged'
    assert all(0 <= off and off + length <= capacity for off, length in extents)
    for off, length in written:
        end = off + length
        inside = [(o, n) for o, n in extents if o <= off and end <= o + n]
        assert inside, 'written range [%d, +%d) is not covered by %s' % (off, length, extents)
    for off, length in extents:
        first, last = off // block, (off + length - 1) // block
        for b in range(first, last + 1):
            lo, hi = b * block, (b + 1) * block
            assert any(o < hi and lo < o + n for o, n in written), \
                'extent [%d, +%d) covers block %d that nobody wrote' % (off, length, b)


def by_key(result):
    return dict((d['key'], d) for d in result['disks'])


# --------------------------------------------------------------------------
# cycles

def test_full_then_guest_writes_then_incremental(cycles, monkeypatch):
    lab = cycles.lab
    first_writes = {2000: lab.write('VM0', 2000, offset=0, length=3 * BLOCK, seed=1)}
    first = by_key(cycles.sync())
    assert first[2000]['sync_type'] == 'full' and first[2000]['reason_code'] == 'no_state'
    assert_covers(read_extents(first[2000]), first_writes[2000], 64 * MiB)
    assert read_extents(first[2001]) == []

    written = {
        2000: lab.write('VM0', 2000, offset=5 * MiB + 100, length=5000, seed=2)        # unaligned
        + lab.write('VM0', 2000, offset=BLOCK - 10, length=20, seed=3)                  # straddles a block edge
        + lab.write('VM0', 2000, offset=64 * MiB - 512, length=512, seed=4),           # last sector
        2001: lab.write('VM0', 2001, random_blocks=300, seed=5),                        # several pages of 64 areas
    }
    counter = SoapCounter(monkeypatch)
    second = cycles.present()
    assert len(second['disks']) == 2
    for key, disk in by_key(second).items():
        assert disk['sync_type'] == 'incremental', disk['reason']
        assert disk['previous_change_id'] == first[key]['change_id']
        assert disk['change_id'] != first[key]['change_id']
        assert_covers(read_extents(disk), sorted(written[key]), 64 * MiB)
        assert disk['changed_bytes'] == sum(n for _o, n in read_extents(disk))
    # the scattered blocks of 2001 come back in pages of 64 areas; all pages were fetched
    areas = len(list(ex.merge_extents(tuple(w) for w in written[2001])))
    assert areas > 128
    assert counter.take().count('QueryChangedDiskAreas') == 1 + (areas + 63) // 64
    cycles.commit(second)
    cycles.absent()

    # nothing written since: empty incremental, and a repeat of present reuses the snapshot
    third = cycles.present()
    assert all(d['sync_type'] == 'incremental' and d['extent_count'] == 0 for d in third['disks'])
    again = cycles.present()
    assert again['changed'] is False and again['snapshot']['moid'] == third['snapshot']['moid']


def test_reset_cbt_gives_full_with_reason_and_incremental_mode_refuses(cycles):
    lab = cycles.lab
    cycles.sync()
    lab.reset_cbt('VM0', 2000)
    written = lab.write('VM0', 2000, offset=7 * BLOCK, length=BLOCK, seed=7)
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cycles.present(mode='incremental')
    message = str(info.value)
    assert 'VM VM0' in message and 'Hard disk 1' in message and 'CBT was reset' in message
    assert not lab.state()['snapshots']
    disks = by_key(cycles.present())
    assert (disks[2000]['sync_type'], disks[2000]['reason_code']) == ('full', 'cbt_reset')
    assert_covers(read_extents(disks[2000]), written, 64 * MiB)
    assert disks[2001]['sync_type'] == 'incremental'


def test_grown_disk_gives_full_with_reason(cycles):
    lab = cycles.lab
    cycles.sync()
    lab.grow('VM0', 2001, 96 * MiB)
    written = lab.write('VM0', 2001, offset=90 * MiB, length=BLOCK, seed=8)
    disks = by_key(cycles.present())
    disk = disks[2001]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'capacity_changed')
    assert '%d to %d' % (64 * MiB, 96 * MiB) in disk['reason']
    assert disk['capacity_bytes'] == 96 * MiB
    assert_covers(read_extents(disk), written, 96 * MiB)
    assert disks[2000]['sync_type'] == 'incremental'


def test_a_stored_change_id_ahead_of_the_disk_gives_full_before_any_snapshot(cycles):
    lab = cycles.lab
    first = cycles.sync()
    # a changeId of the same tracking file, later than the disk's: the VM went back to an older snapshot
    stale = first['disks'][0]['change_id'].rsplit('/', 1)[0] + '/999'
    sync_state.commit_disk(cycles.state_file, first['vm']['uuid'], 2000, stale, 64 * MiB, first['disks'][0]['target'])
    disk = by_key(cycles.present())[2000]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'cbt_rewound') and stale in disk['reason']
    cycles.absent()
    with pytest.raises(cbt.IncrementalNotPossibleError, match='reverted'):
        cycles.present(mode='incremental')
    assert not lab.state()['snapshots']   # refused before any snapshot


def test_rejected_change_id_gives_full_and_a_failure_removes_the_snapshot(cycles):
    lab = cycles.lab
    first = cycles.sync()
    lab.corrupt_cbt('VM0', 2000, 'FileFault')   # vSphere now refuses the stored changeId
    stale = first['disks'][0]['change_id']
    disk = by_key(cycles.present())[2000]
    assert (disk['sync_type'], disk['reason_code']) == ('full', 'change_id_rejected')
    assert 'FileFault' in disk['reason'] and stale in disk['reason']
    cycles.absent()
    # mode incremental: the snapshot taken for this run is removed again, nothing is left
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cycles.present(mode='incremental')
    assert 'was removed' in str(info.value)
    assert not lab.state()['snapshots']
    assert not os.listdir(cycles.extents_dir)
    # unless asked to keep it
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cycles.present(mode='incremental', keep_snapshot_on_failure=True)
    assert 'was kept' in str(info.value)
    assert len(lab.state()['snapshots']) == 1


def test_changed_target_gives_full(cycles):
    first = cycles.sync()
    targets = dict((str(d['key']), d['target'] or 'nbd://old') for d in first['disks'])
    targets['Hard disk 2'] = 'nbd+unix:///?socket=/elsewhere.sock'
    cycles.commit(cycles.present(targets={'2000': 'nbd://a', '2001': 'nbd://b'}))
    cycles.absent()
    disks = by_key(cycles.present(targets={'2000': 'nbd://a', 'Hard disk 2': 'nbd://c'}))
    assert disks[2000]['sync_type'] == 'incremental'
    assert (disks[2001]['sync_type'], disks[2001]['reason_code']) == ('full', 'target_changed')


@pytest.mark.parametrize('cycles', [{'vms': 2, 'disks': 3}], indirect=True)
def test_multi_disk_vms(cycles, tmp_path):
    lab = cycles.lab
    written = dict((key, lab.write('VM0', key, offset=key * 1000, length=777, seed=key)) for key in (2000, 2001, 2002))
    result = cycles.present()
    assert [d['key'] for d in result['disks']] == [2000, 2001, 2002]
    assert len(set(d['extents_file'] for d in result['disks'])) == 3
    # CBT was off when these writes happened: the full copy still sees them (allocated areas)
    for disk in result['disks']:
        assert_covers(read_extents(disk), written[disk['key']], 64 * MiB)
    other = Cycles(lab, tmp_path, vm_name='VM1')
    try:
        result1 = other.present()
        assert [d['key'] for d in result1['disks']] == [2000, 2001, 2002]
        assert result1['vm']['name'] == 'VM1'
        assert not set(d['extents_file'] for d in result1['disks']) & set(d['extents_file'] for d in result['disks'])
    finally:
        other.close()


def test_an_added_independent_disk_refuses_the_vm_unless_excluded(cycles):
    conn, vm = cycles.conn, cycles.vm
    disk = vim.vm.device.VirtualDisk(
        key=-1, controllerKey=1000, unitNumber=5, capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName='[LocalDS_0] VM0/indep.vmdk',
                                                              diskMode='independent_persistent',
                                                              thinProvisioned=True))
    task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
        operation='add', fileOperation='create', device=disk)]))
    vsphere.wait_for_task(conn, task, 'add an independent disk')
    with pytest.raises(cbt.CbtUnsupportedError, match=r"\[LocalDS_0\] VM0/indep.vmdk\) is independent_persistent"):
        cycles.present()
    added = [d for d in vm.config.hardware.device if getattr(d.backing, 'fileName', '') == '[LocalDS_0] VM0/indep.vmdk']
    result = cycles.present(exclude_disks=[added[0].deviceInfo.label])
    assert [d['key'] for d in result['disks']] == [2000, 2001] and result['skipped_disks'] == []
    assert len(result['excluded_disks']) == 1 and result['excluded_disks'][0]['mode'] == 'independent_persistent'
    assert 'not migrated' in result['warnings'][0]


# --------------------------------------------------------------------------
# errors

def test_errors_name_the_operation_and_leave_nothing_behind(cycles, tmp_path):
    lab = cycles.lab
    vc = lab.vcenter
    with pytest.raises(vsphere.AuthenticationError) as info:
        vsphere.connect(vc['hostname'], vc['username'], 'wrong-' + vc['password'], vc['port'], validate_certs=False)
    assert 'refused the login of user %s' % vc['username'] in str(info.value)
    assert vc['password'] not in str(info.value)
    # certificate validation is on by default, also for 127.0.0.1 (pyVmomi would skip it)
    with pytest.raises(vsphere.ConnectionFailedError, match='validate_certs: false'):
        vsphere.connect(vc['hostname'], vc['username'], vc['password'], vc['port'])

    with pytest.raises(vsphere.VMNotFoundError, match='no VM with name nope'):
        vsphere.find_vm(cycles.conn, name='nope')
    with pytest.raises(vsphere.VMNotFoundError, match='no VM with moid vm-99999'):
        cbt.run(cycles.conn, vsphere.find_vm(cycles.conn, moid='vm-99999'), extents_dir=cycles.extents_dir)

    # unwritable extents_dir: fails before CBT or snapshot changes
    blocker = tmp_path / 'a-file'
    blocker.write_text('x')
    with pytest.raises(cbt.ExtentsDirError, match='not writable'):
        cycles.present(extents_dir=str(blocker / 'extents'))
    state = lab.state()
    assert not state['snapshots'] and state['vms'][0]['cbt'] is False

    # a task failure carries the task's fault message
    with pytest.raises(vsphere.TaskFailedError) as info:
        vsphere.wait_for_task(cycles.conn, cycles.vm.PowerOnVM_Task(), 'power on', vm='VM0')
    assert str(info.value).startswith('power on of VM VM0 failed: InvalidPowerState')


def test_ambiguous_name_and_old_hardware(cycles):
    conn = cycles.conn
    folder = vsphere.find_datacenter(conn, 'DC0').vmFolder.CreateFolder('other')
    spec = vim.vm.ConfigSpec(name='VM0', version='vmx-04', guestId='otherGuest',
                             files=vim.vm.FileInfo(vmPathName='[LocalDS_0]'))
    clone = vsphere.wait_for_task(conn, folder.CreateVM_Task(config=spec, pool=cycles.vm.resourcePool), 'create VM')
    with pytest.raises(vsphere.AmbiguousVMError) as info:
        vsphere.find_vm(conn, name='VM0')
    assert cycles.vm._moId in str(info.value) and clone._moId in str(info.value)
    assert vsphere.find_vm(conn, path='/DC0/vm/other/VM0')._moId == clone._moId
    with pytest.raises(cbt.CbtUnsupportedError, match='hardware version vmx-04 is too old'):
        cbt.run(conn, clone, extents_dir=cycles.extents_dir)


# --------------------------------------------------------------------------
# round trips

class SoapCounter(object):
    """Counts every SOAP request of this process (connect and login included)."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = SoapStubAdapter.InvokeMethod

        def invoke(stub, mo, info, args, outerStub=None):
            self.calls.append(info.wsdlName)
            return original(stub, mo, info, args, outerStub)

        monkeypatch.setattr(SoapStubAdapter, 'InvokeMethod', invoke)

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def run_module_once(lab, vm_name, tmp_path, **options):
    params = dict(hostname=lab.vcenter['hostname'], port=lab.vcenter['port'], username=lab.vcenter['username'],
                  password=lab.vcenter['password'], validate_certs=False, path=lab.vm(vm_name)['path'],
                  name=None, uuid=None, moid=None, datacenter=None, state='present',
                  state_file=str(tmp_path / (vm_name + '.json')), extents_dir=str(tmp_path / 'extents'))
    params.update(options)
    return cbt.cbt_snapshot_module(cbt.CBT_SNAPSHOT_SPEC.options(params))


@pytest.mark.parametrize('cycles', [{'vms': 2, 'disks': 1}], indirect=True)
def test_round_trips_are_a_small_constant_per_vm(cycles, lab_factory, tmp_path, monkeypatch):
    lab1 = cycles.lab
    lab3 = lab_factory(vms=1, disks=3)
    counter = SoapCounter(monkeypatch)
    figures = {}
    for name, lab, vm_name in (('1 disk', lab1, 'VM0'), ('3 disks', lab3, 'VM0')):
        run_module_once(lab, vm_name, tmp_path / name)                # CBT off: enable + stun + snapshot
        figures[name, 'first (enable CBT)'] = counter.take()
        result = run_module_once(lab, vm_name, tmp_path / name)       # repeat: reuse the snapshot
        figures[name, 'repeat (reuse)'] = counter.take()
        run_module_once(lab, vm_name, tmp_path / name, state='absent')
        figures[name, 'absent'] = counter.take()
        for disk in result['disks']:
            sync_state.commit_disk(str(tmp_path / name / (vm_name + '.json')), result['vm']['uuid'], disk['key'],
                                   disk['change_id'], disk['capacity_bytes'], None)
        run_module_once(lab, vm_name, tmp_path / name)                # incremental, new snapshot
        figures[name, 'incremental (new snapshot)'] = counter.take()
    report = ['%-8s %-28s %2d  %s' % (shape, step, len(calls), ' '.join(calls))
              for (shape, step), calls in sorted(figures.items())]
    print('\nSOAP round trips per module run (connect + login + logout included):\n' + '\n'.join(report))
    with open(str(tmp_path / 'round-trips.txt'), 'w') as handle:
        handle.write('\n'.join(report) + '\n')

    one, three = figures['1 disk', 'incremental (new snapshot)'], figures['3 disks', 'incremental (new snapshot)']
    # everything but QueryChangedDiskAreas is independent of the number of disks
    assert [c for c in one if c != 'QueryChangedDiskAreas'] == [c for c in three if c != 'QueryChangedDiskAreas']
    assert one.count('QueryChangedDiskAreas') == 1 and three.count('QueryChangedDiskAreas') == 3
    assert len(one) <= 10
    # the repeat reads the VM and the snapshot, and asks for changed areas: no task
    assert len(figures['1 disk', 'repeat (reuse)']) <= 8
