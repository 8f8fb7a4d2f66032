# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab itself (tests/lab), through pyvmomi over TLS like the collection
uses it: login, CBT, frozen snapshots, QueryChangedDiskAreas (allocated
areas, changes since a changeId, paging, faults), disk growth, snapshot
removal; the VMA receiver; the nbdkit targets; labctl up/down."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import stat
import subprocess
import threading
import time

import pytest
import requests

pyVmomi = pytest.importorskip('pyVmomi')
from pyVim.connect import Disconnect, SmartConnect  # noqa: E402
from pyVim.task import WaitForTask  # noqa: E402
from pyVmomi import vim  # noqa: E402

from lab import Lab, chain_read, chain_sha256, pid_alive  # noqa: E402  (conftest puts tests/lab on sys.path)

MiB = 1 << 20
CBT_BLOCK = 64 * 1024
FS_BLOCK = 4096
LABCTL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'lab', 'labctl')


# ---------------------------------------------------------------- helpers

def find_vm(si, name='VM0'):
    vm = si.content.searchIndex.FindByInventoryPath('/DC0/vm/' + name)
    assert vm is not None, name
    return vm


def disks_of(config):
    return {d.key: d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)}


def wait(si, task):
    WaitForTask(task, si=si)
    return task.info.result


def set_cbt(si, vm, enabled):
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled)), si=si)


def snapshot(si, vm, name):
    return wait(si, vm.CreateSnapshot_Task(name=name, description='', memory=False, quiesce=False))


def remove_snapshot(si, snap):
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False), si=si)


def query_all(vm, snap, key, change_id, capacity):
    """Loop QueryChangedDiskAreas on startOffset + length; returns (areas, number of calls)."""
    areas, calls, offset = [], 0, 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=offset, changeId=change_id)
        calls += 1
        assert info.startOffset == offset
        assert info.length > 0
        for a in info.changedArea:
            assert offset <= a.start and a.start + a.length <= offset + info.length, (offset, info.length, a)
        areas.extend((a.start, a.length) for a in info.changedArea)
        offset = info.startOffset + info.length
    assert offset == capacity
    return areas, calls


def aligned_union(ranges, block, capacity):
    """Merge [offset, length] ranges after rounding them out to block boundaries."""
    out = []
    for off, length in sorted((o, n) for o, n in ranges):
        start = off // block * block
        end = min(-(-(off + length) // block) * block, capacity)
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e - s) for s, e in out]


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(MiB), b''):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def fresh(lab_factory):
    """A fresh 1 VM x 1 disk lab with a logged-in ServiceInstance: (lab, si, vm)."""
    new = lab_factory(vms=1, disks=1, disk_size=64 * MiB)
    si = new.connect()
    yield new, si, find_vm(si)
    Disconnect(si)


# ---------------------------------------------------------------- lab.json, inventory, secrets

def test_lab_json_follows_the_contract(lab):
    info = lab.info
    assert info['dir'] == lab.dir
    assert set(info['vcenter']) == {'hostname', 'port', 'username', 'password', 'validate_certs', 'ca_file'}
    assert info['vcenter']['hostname'] == '127.0.0.1' and info['vcenter']['username'] == 'migratekit-lab'
    assert info['vcenter']['validate_certs'] is False
    assert info['vma_url'].startswith('http://127.0.0.1:')
    (vm,) = info['vms']
    assert vm['name'] == 'VM0' and vm['path'] == '/DC0/vm/VM0' and vm['datacenter'] == 'DC0'
    assert vm['moid'].startswith('vm-')
    assert [d['key'] for d in vm['disks']] == [2000, 2001]
    for i, d in enumerate(vm['disks']):
        assert d['label'] == 'Hard disk %d' % (i + 1)
        assert d['capacity_bytes'] == 64 * MiB
        assert d['backing_file'] == '[LocalDS_0] VM0/%s.vmdk' % ('VM0' if i == 0 else 'VM0_%d' % i)
        assert lab.datastore_path(d['backing_file']) == d['image']
        assert os.path.isfile(d['image'])
        assert os.path.getsize(d['target_image']) == 64 * MiB
        assert d['target_uri'] == 'nbd+unix:///?socket=%s/nbd/VM0-%d.sock' % (lab.dir, d['key'])
    for ds, path in info['datastores'].items():
        assert os.path.isdir(path) and path.startswith(lab.dir + '/')
    for name in ('lab.json', 'inventory.yml'):
        assert stat.S_IMODE(os.stat(os.path.join(lab.dir, name)).st_mode) == 0o600


def test_inventory(lab):
    yaml = pytest.importorskip('yaml')
    with open(lab.inventory) as f:
        inv = yaml.safe_load(f)
    group = inv['all']['children']['migratekit_vms']
    host = group['hosts']['VM0']
    vm = lab.vm('VM0')
    assert host['migratekit_vm_name'] == 'VM0' and host['migratekit_vm_uuid'] == vm['uuid']
    assert host['migratekit_targets'] == {str(d['key']): d['target_uri'] for d in vm['disks']}
    gv = group['vars']
    assert gv['ansible_connection'] == 'local'
    assert os.path.basename(gv['ansible_python_interpreter']).startswith('python')
    assert gv['migratekit_vcenter_password'] == lab.vcenter['password']
    assert gv['migratekit_vcenter_port'] == lab.vcenter['port']
    assert gv['migratekit_vcenter_validate_certs'] is False
    assert gv['migratekit_vma_url'] == lab.vma_url
    assert gv['migratekit_datastore_paths'] == lab.datastores


def test_password_is_in_no_argv_and_no_other_file(lab):
    password = lab.vcenter['password']
    pids = lab.pids()
    assert {'vcsim', 'vma', 'nbdkit-VM0-2000', 'nbdkit-VM0-2001'} <= set(pids)
    for pid in pids.values():
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            assert password.encode() not in f.read()
    for root, _dirs, files in os.walk(lab.dir):
        for fn in files:
            path = os.path.join(root, fn)
            if path in (lab.lab_json, lab.inventory) or fn.endswith(('.img', '.sock')):
                continue
            with open(path, 'rb') as f:
                assert password.encode() not in f.read(), path


# ---------------------------------------------------------------- login, CBT

def test_wrong_credentials_fail_login(lab):
    vc = lab.vcenter
    for user, pwd in ((vc['username'], vc['password'] + 'x'), ('root', vc['password']), (vc['username'], '')):
        with pytest.raises(vim.fault.InvalidLogin):
            SmartConnect(host=vc['hostname'], port=vc['port'], user=user, pwd=pwd, disableSslCertValidation=True)
    si = SmartConnect(host=vc['hostname'], port=vc['port'], user=vc['username'], pwd=vc['password'],
                      disableSslCertValidation=True)
    assert si.content.about.apiType == 'VirtualCenter'
    Disconnect(si)


def test_query_changed_disk_areas_needs_a_session(lab):
    vm = lab.vm('VM0')
    body = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            '<soapenv:Body><QueryChangedDiskAreas xmlns="urn:vim25"><_this type="VirtualMachine">%s</_this>'
            '<deviceKey>2000</deviceKey><startOffset>0</startOffset><changeId>*</changeId>'
            '</QueryChangedDiskAreas></soapenv:Body></soapenv:Envelope>' % vm['moid'])
    r = requests.post('https://127.0.0.1:%d/sdk' % lab.vcenter['port'], data=body, verify=False,
                      headers={'Content-Type': 'text/xml', 'SOAPAction': 'urn:vim25/8.0'})
    assert r.status_code == 500 and 'NotAuthenticated' in r.text


def test_cbt_enable_reads_back_and_sets_change_ids(lab, lab_si):
    vm = find_vm(lab_si)
    set_cbt(lab_si, vm, True)
    assert vm.config.changeTrackingEnabled is True
    disks = disks_of(vm.config)
    assert sorted(disks) == [2000, 2001]
    uuids = set()
    for d in disks.values():
        uuid, seq = d.backing.changeId.rsplit('/', 1)
        assert len(uuid) == 47 and int(seq) >= 0
        uuids.add(uuid)
        assert d.capacityInKB == 64 * 1024 and d.capacityInBytes == 64 * MiB
    assert len(uuids) == 2, 'each disk has its own CBT uuid'
    set_cbt(lab_si, vm, True)  # enabling again changes nothing
    assert {d.backing.changeId for d in disks_of(vm.config).values()} == {d.backing.changeId for d in disks.values()}


def test_cbt_off_and_on_gives_a_new_uuid(fresh):
    lab, si, vm = fresh
    assert vm.snapshot is None  # an unset property reads as None (not a dropped connection)
    assert vm.config.changeTrackingEnabled is not True
    set_cbt(si, vm, True)
    old = disks_of(vm.config)[2000].backing.changeId
    set_cbt(si, vm, False)
    assert vm.config.changeTrackingEnabled is False
    assert not disks_of(vm.config)[2000].backing.changeId
    set_cbt(si, vm, True)
    new = disks_of(vm.config)[2000].backing.changeId
    assert new.split('/')[0] != old.split('/')[0]
    snap = snapshot(si, vm, 's')
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId=old)


# ---------------------------------------------------------------- snapshots

def test_snapshot_freezes_the_disks(lab, lab_si):
    vm = find_vm(lab_si)
    set_cbt(lab_si, vm, True)
    lab.write('VM0', 2000, offset=3 * MiB, length=100000, seed=1)
    base = lab.disk('VM0', 2000)['image']
    at_snapshot = chain_sha256(base)
    snap = snapshot(lab_si, vm, 'freeze')
    try:
        tree = vm.snapshot.rootSnapshotList
        assert [t.name for t in tree] == ['freeze'] and tree[0].snapshot == snap and tree[0].createTime
        sdisks = disks_of(snap.config)
        frozen = {}
        for key, d in sdisks.items():
            # the snapshot keeps the base disk, frozen; the VM writes into a new delta
            name = 'VM0' if key == 2000 else 'VM0_1'
            assert d.backing.fileName == '[LocalDS_0] VM0/%s.vmdk' % name and d.backing.parent is None
            live = disks_of(vm.config)[key].backing
            assert live.fileName == '[LocalDS_0] VM0/%s-000001.vmdk' % name
            assert live.parent.fileName == d.backing.fileName and live.parent.parent is None
            assert live.deltaDiskFormat == 'redoLogFormat'
            frozen[key] = lab.datastore_path(d.backing.fileName)
            # the snapshot's changeId is the live one at snapshot time: uuid/seq
            assert d.backing.changeId == live.changeId
        assert chain_sha256(frozen[2000]) == at_snapshot
        top = lab.datastore_path(disks_of(vm.config)[2000].backing.fileName)
        lab.write('VM0', 2000, offset=3 * MiB, length=100000, seed=2)
        lab.write('VM0', 2000, offset=40 * MiB, length=4096, seed=3)
        assert chain_sha256(top) != at_snapshot
        assert chain_sha256(frozen[2000]) == at_snapshot, 'the frozen disk changed after a guest write'
    finally:
        remove_snapshot(lab_si, snap)


def test_remove_snapshot_consolidates(lab, lab_si):
    vm = find_vm(lab_si)
    s1 = snapshot(lab_si, vm, 'r1')
    lab.write('VM0', 2000, offset=MiB, length=65536, seed=11)
    s2 = snapshot(lab_si, vm, 'r2')
    lab.write('VM0', 2000, offset=2 * MiB, length=65536, seed=12)
    live_before = chain_sha256(lab.live('VM0', 2000)['image'])
    at_s2 = chain_sha256(lab.datastore_path(disks_of(s2.config)[2000].backing.fileName))
    files1 = [lab.datastore_path(d.backing.fileName) for d in disks_of(s1.config).values()]
    files2 = [lab.datastore_path(d.backing.fileName) for d in disks_of(s2.config).values()]
    assert len(files1) == 2 and all(os.path.exists(p) for p in files1 + files2)
    assert not set(files1) & set(files2)
    # removing the older snapshot merges its delta into the base disk: r2 now names the base
    remove_snapshot(lab_si, s1)
    d2 = disks_of(s2.config)[2000].backing
    assert d2.fileName == '[LocalDS_0] VM0/VM0.vmdk' and d2.parent is None
    assert chain_sha256(lab.datastore_path(d2.fileName)) == at_s2
    live = disks_of(vm.config)[2000].backing
    assert live.parent.fileName == d2.fileName
    assert chain_sha256(lab.datastore_path(live.fileName)) == live_before
    assert not any(os.path.exists(p) for p in files2), 'the merged delta is gone'
    WaitForTask(vm.RemoveAllSnapshots_Task(), si=lab_si)
    assert vm.snapshot is None and not vm.runtime.consolidationNeeded
    for d in lab.vm('VM0')['disks']:
        assert disks_of(vm.config)[d['key']].backing.fileName == d['backing_file']
        assert disks_of(vm.config)[d['key']].backing.parent is None
        assert os.path.exists(d['image'])
    assert chain_sha256(lab.disk('VM0', 2000)['image']) == live_before, 'consolidation changed the content'
    vmdir = os.path.dirname(lab.disk('VM0', 2000)['image'])
    assert sorted(f for f in os.listdir(vmdir) if f.endswith('.vmdk')) == [
        'VM0-flat.vmdk', 'VM0.vmdk', 'VM0_1-flat.vmdk', 'VM0_1.vmdk']


# ---------------------------------------------------------------- VMDK chains

def test_disks_are_vmdk_descriptors_with_sparse_flat_extents(lab, lab_si):
    vm = find_vm(lab_si)
    for key, d in sorted(disks_of(vm.config).items()):
        assert isinstance(d.backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
        assert d.backing.thinProvisioned is True and d.backing.diskMode == 'persistent'
        descriptor = lab.datastore_path(d.backing.fileName)
        name = os.path.basename(descriptor)[:-len('.vmdk')]
        with open(descriptor) as f:
            text = f.read()
        assert text.startswith('# Disk DescriptorFile') and 'createType="monolithicFlat"' in text
        assert 'RW %d FLAT "%s-flat.vmdk" 0' % (d.capacityInBytes // 512, name) in text
        extent = os.path.join(os.path.dirname(descriptor), name + '-flat.vmdk')
        st = os.stat(extent)
        assert st.st_size == d.capacityInBytes
        assert st.st_blocks * 512 < d.capacityInBytes // 4, 'a thin disk is a sparse file'


def backing_chain(backing):
    out = []
    while backing is not None:
        out.append(backing.fileName)
        backing = backing.parent
    return out


def test_depth_two_chain_and_labctl_on_chained_disks(fresh):
    lab, si, vm = fresh
    d = str(lab.dir)
    set_cbt(si, vm, True)
    run_labctl('write', '--dir', d, '--vm', 'VM0', '--disk-key', '2000', '--offset', '0', '--length', '64K',
               '--seed', '1')
    u1 = snapshot(si, vm, 'user-1')
    run_labctl('write', '--dir', d, '--vm', 'VM0', '--disk-key', '2000', '--offset', '1M', '--length', '64K',
               '--seed', '2')
    u2 = snapshot(si, vm, 'user-2')
    cid_u2 = disks_of(u2.config)[2000].backing.changeId
    written = json.loads(run_labctl('write', '--dir', d, '--vm', 'VM0', '--disk-key', '2000', '--offset', '2M',
                                    '--length', '64K', '--seed', '3'))
    live = disks_of(vm.config)[2000].backing
    assert backing_chain(live) == ['[LocalDS_0] VM0/VM0-000002.vmdk', '[LocalDS_0] VM0/VM0-000001.vmdk',
                                   '[LocalDS_0] VM0/VM0.vmdk']
    assert backing_chain(disks_of(u2.config)[2000].backing) == backing_chain(live)[1:]
    assert backing_chain(disks_of(u1.config)[2000].backing) == backing_chain(live)[2:]
    assert lab.live('VM0', 2000)['chain'] == backing_chain(live)[::-1]
    top = lab.datastore_path(live.fileName)
    # the delta names its parent as ESXi writes it: relative, in the delta's directory
    with open(top, 'rb') as f:
        assert b'parentFileNameHint="VM0-000001.vmdk"' in f.read(64 * 1024)
    # each link is frozen; the guest writes land in the top only
    f1 = lab.datastore_path(disks_of(u1.config)[2000].backing.fileName)
    f2 = lab.datastore_path(disks_of(u2.config)[2000].backing.fileName)
    assert chain_read(f1, MiB, 65536) == bytes(65536) and chain_read(f2, MiB, 65536) != bytes(65536)
    assert chain_read(f2, 2 * MiB, 65536) == bytes(65536) and chain_read(top, 2 * MiB, 65536) != bytes(65536)
    # CBT on the chained disk: the changes since user-2 are the write after it
    snap = snapshot(si, vm, 'query')
    assert query_all(vm, snap, 2000, cid_u2, 64 * MiB)[0] == aligned_union(written, CBT_BLOCK, 64 * MiB)
    remove_snapshot(si, snap)
    # growing a disk with snapshots is refused (vSphere cannot), reset-cbt works
    r = subprocess.run([LABCTL, 'grow', '--dir', d, '--vm', 'VM0', '--disk-key', '2000', '--size', '96M'],
                       check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and 'has snapshots' in r.stderr and 'VM0' in r.stderr
    out = json.loads(run_labctl('reset-cbt', '--dir', d, '--vm', 'VM0', '--disk-key', '2000'))
    assert out['backing_file'] == live.fileName and out['seq'] == 0
    # removing the newest snapshot merges the live delta into its link
    content = chain_sha256(top)
    remove_snapshot(si, u2)
    live = disks_of(vm.config)[2000].backing
    assert backing_chain(live) == ['[LocalDS_0] VM0/VM0-000001.vmdk', '[LocalDS_0] VM0/VM0.vmdk']
    assert chain_sha256(lab.datastore_path(live.fileName)) == content
    assert [t.name for t in vm.snapshot.rootSnapshotList] == ['user-1']
    assert chain_read(f1, MiB, 65536) == bytes(65536), 'user-1 is still frozen'
    WaitForTask(vm.RemoveAllSnapshots_Task(), si=si)
    base = lab.disk('VM0', 2000)['image']
    assert backing_chain(disks_of(vm.config)[2000].backing) == ['[LocalDS_0] VM0/VM0.vmdk']
    assert chain_sha256(base) == content
    run_labctl('grow', '--dir', d, '--vm', 'VM0', '--disk-key', '2000', '--size', '96M')
    assert disks_of(vm.config)[2000].capacityInBytes == 96 * MiB


# ---------------------------------------------------------------- QueryChangedDiskAreas

def test_star_returns_the_allocated_areas(fresh):
    lab, si, vm = fresh
    set_cbt(si, vm, True)
    cap = 64 * MiB
    ranges = [(0, 4096), (1 * MiB, 64 * 1024), (10 * MiB + 12345, 1000), (63 * MiB, MiB)]
    for off, length in ranges:
        lab.write('VM0', 2000, offset=off, length=length)
    snap = snapshot(si, vm, 'star')
    areas, calls = query_all(vm, snap, 2000, '*', cap)
    assert calls == 1
    assert areas == aligned_union(ranges, FS_BLOCK, cap)
    # a write after the snapshot is not in the snapshot's allocated areas
    lab.write('VM0', 2000, offset=20 * MiB, length=4096)
    assert query_all(vm, snap, 2000, '*', cap)[0] == aligned_union(ranges, FS_BLOCK, cap)


def test_changes_since_a_change_id_are_the_written_blocks(fresh):
    lab, si, vm = fresh
    cap = 64 * MiB
    set_cbt(si, vm, True)
    base = disks_of(vm.config)[2000].backing.changeId  # uuid/0 at enable time
    first = [(5 * MiB + 100, 10), (7 * MiB, 200 * 1024)]
    for off, length in first:
        lab.write('VM0', 2000, offset=off, length=length)
    s1 = snapshot(si, vm, 'c1')
    c1 = disks_of(s1.config)[2000].backing.changeId
    assert c1.split('/')[0] == base.split('/')[0] and int(c1.split('/')[1]) > int(base.split('/')[1])
    second = lab.write('VM0', 2000, random_blocks=10, block_size=CBT_BLOCK, seed=7)
    second += lab.write('VM0', 2000, offset=30 * MiB + 1, length=3)
    s2 = snapshot(si, vm, 'c2')
    later = lab.write('VM0', 2000, offset=50 * MiB, length=4096)  # after s2: not part of it

    assert query_all(vm, s1, 2000, base, cap)[0] == aligned_union(first, CBT_BLOCK, cap)
    assert query_all(vm, s2, 2000, c1, cap)[0] == aligned_union(second, CBT_BLOCK, cap)
    assert query_all(vm, s2, 2000, base, cap)[0] == aligned_union(first + second, CBT_BLOCK, cap)
    c2 = disks_of(s2.config)[2000].backing.changeId
    assert query_all(vm, s2, 2000, c2, cap)[0] == []
    s3 = snapshot(si, vm, 'c3')
    assert query_all(vm, s3, 2000, c2, cap)[0] == aligned_union(later, CBT_BLOCK, cap)


def test_answers_are_paged(fresh):
    lab, si, vm = fresh
    cap = 64 * MiB
    set_cbt(si, vm, True)
    base = disks_of(vm.config)[2000].backing.changeId
    ranges = []
    for i in range(150):  # every other 64 KiB block: 150 separate areas
        ranges += lab.write('VM0', 2000, offset=2 * i * CBT_BLOCK, length=4096, seed=i)
    snap = snapshot(si, vm, 'paged')
    first = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId=base)
    assert len(first.changedArea) == 64
    assert first.length < cap, 'a partial page must not claim the whole disk'
    areas, calls = query_all(vm, snap, 2000, base, cap)
    assert calls == 3
    assert areas == aligned_union(ranges, CBT_BLOCK, cap) and len(areas) == 150
    star, star_calls = query_all(vm, snap, 2000, '*', cap)
    assert star_calls == 3 and star == aligned_union(ranges, FS_BLOCK, cap)
    # starting in the middle of an area clips it
    mid = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=1000, changeId=base)
    assert mid.startOffset == 1000 and mid.changedArea[0].start == 1000


def test_unknown_change_ids_raise_file_fault_and_malformed_ones_invalid_argument(fresh):
    lab, si, vm = fresh
    set_cbt(si, vm, True)
    lab.write('VM0', 2000, offset=0, length=4096)
    s1 = snapshot(si, vm, 'f1')
    old = disks_of(s1.config)[2000].backing.changeId
    vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=2000, startOffset=0, changeId=old)  # fine
    reset = lab.reset_cbt('VM0', 2000)
    assert reset['cbt_uuid'] != old.split('/')[0]
    assert disks_of(vm.config)[2000].backing.changeId == reset['change_id']
    s2 = snapshot(si, vm, 'f2')
    new = disks_of(s2.config)[2000].backing.changeId
    assert new.split('/')[0] == reset['cbt_uuid']
    for unknown in (old, new.split('/')[0] + '/999'):
        with pytest.raises(vim.fault.FileFault):
            vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=unknown)
    # not of the form "<uuid>/<sequence>": the argument itself is refused
    for malformed in ('garbage', '', new.split('/')[0] + '/x', '/1'):
        with pytest.raises(vmodl_fault('InvalidArgument')) as info:
            vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=malformed)
        assert info.value.invalidProperty == 'changeId'
    # the snapshot from before the reset no longer answers incremental queries
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=2000, startOffset=0, changeId=old)
    # "*" still works, and the new changeId works
    assert query_all(vm, s2, 2000, '*', 64 * MiB)[0] == [(0, 4096)]
    assert query_all(vm, s2, 2000, reset['change_id'], 64 * MiB)[0] == []
    with pytest.raises(vmodl_fault('InvalidArgument')):
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2999, startOffset=0, changeId='*')


def vmodl_fault(name):
    from pyVmomi import vmodl
    return getattr(vmodl.fault, name)


def test_query_without_cbt_fails(fresh):
    lab, si, vm = fresh
    snap = snapshot(si, vm, 'nocbt')
    assert not disks_of(snap.config)[2000].backing.changeId
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=0, changeId='*')


# ---------------------------------------------------------------- growth

def test_grow_changes_capacity(fresh):
    lab, si, vm = fresh
    set_cbt(si, vm, True)
    image = lab.disk('VM0', 2000)['image']
    extent = os.path.join(os.path.dirname(image), 'VM0-flat.vmdk')
    res = lab.grow('VM0', 2000, 96 * MiB)
    assert res['capacity_bytes'] == 96 * MiB
    d = disks_of(vm.config)[2000]
    assert d.capacityInKB == 96 * 1024 and d.capacityInBytes == 96 * MiB
    assert os.path.getsize(extent) == 96 * MiB
    assert 'RW %d FLAT "VM0-flat.vmdk" 0' % (96 * MiB // 512) in open(image).read()
    assert lab.disk('VM0', 2000)['capacity_bytes'] == 96 * MiB  # lab.json follows
    lab.write('VM0', 2000, offset=95 * MiB, length=4096)  # the new space is writable
    snap = snapshot(si, vm, 'grown')
    assert disks_of(snap.config)[2000].capacityInBytes == 96 * MiB
    assert query_all(vm, snap, 2000, '*', 96 * MiB)[0] == [(95 * MiB, 4096)]
    # vSphere cannot extend a disk with snapshots
    with pytest.raises(Exception) as info:
        lab.grow('VM0', 2000, 112 * MiB)
    assert 'has snapshots' in str(info.value)
    remove_snapshot(si, snap)

    # growing through ReconfigVM (edit capacityInKB), as vSphere clients do
    d = disks_of(vm.config)[2000]
    d.capacityInKB = 128 * 1024
    d.capacityInBytes = 128 * MiB
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation='edit', device=d)])
    WaitForTask(vm.ReconfigVM_Task(spec), si=si)
    d = disks_of(vm.config)[2000]
    assert d.capacityInBytes == 128 * MiB and os.path.getsize(extent) == 128 * MiB
    assert d.backing.changeId  # CBT survives the edit
    with pytest.raises(Exception):
        lab.grow('VM0', 2000, 64 * MiB)  # disks never shrink


# ---------------------------------------------------------------- nbdkit targets

def test_targets_are_writable_nbd_exports(lab):
    nbd = pytest.importorskip('nbd')
    d = lab.disk('VM0', 2001)
    h = nbd.NBD()
    h.connect_uri(d['target_uri'])
    try:
        assert h.get_size() == d['capacity_bytes']
        assert not h.is_read_only()
        h.pwrite(b'\xab' * 4096, 8192)
        h.flush()
        assert h.pread(4096, 8192) == b'\xab' * 4096
    finally:
        h.shutdown()
    with open(d['target_image'], 'rb') as f:
        f.seek(8192)
        assert f.read(4096) == b'\xab' * 4096


# ---------------------------------------------------------------- VMA receiver

def test_vma_receiver_api(lab):
    """The lab's receiver answers as the seed's appliance (vma/api/progress_handler.go, vma/services/progress_service.go)."""
    url = lab.vma_url + '/api/v1/progress/'
    before = len(lab.vma_log())
    ok = {'stage': 'Transfer', 'status': 'in_progress', 'disk_id': 'disk-2000', 'bytes_transferred': 10,
          'total_bytes': 100, 'throughput_bps': 5, 'percent': 10, 'sync_type': 'full', 'error_message': 'ignored'}
    r = requests.post(url + 'job-a/update', json=ok, timeout=5)
    assert r.status_code == 200 and r.json() == {'status': 'success', 'job_id': 'job-a', 'auto_initialized': True}
    r = requests.post(url + 'job-a/update', json=dict(ok, disk_id='disk-2001', bytes_transferred=30), timeout=5)
    assert r.status_code == 200 and r.json() == {'status': 'success', 'job_id': 'job-a'}
    # stage and status are stored as given: any string (the poller's business)
    r = requests.post(url + 'job-a/update', json={'stage': 'Creating Snapshot', 'status': 'Whatever'}, timeout=5)
    assert r.status_code == 200
    for bad in (dict(ok, percent='x'), dict(ok, bytes_transferred=1.5), dict(ok, stage=3), ['x']):
        r = requests.post(url + 'job-a/update', json=bad, timeout=5)
        assert r.status_code == 400 and r.headers['Content-Type'].startswith('text/plain'), r.text
        assert r.text.startswith('invalid request body: json: cannot unmarshal'), r.text
    r = requests.post(url + 'job-a/update', data='{not json', timeout=5)
    assert r.status_code == 400 and r.text.startswith('invalid request body: ')
    r = requests.post(url + 'job-a/update', json={'stage': 'Transfer', 'status': 'in_progress'}, timeout=5)
    assert r.status_code == 200
    job = requests.get(url + 'job-a', timeout=5).json()
    assert (job['phase'], job['status'], job['sync_type']) == ('Transfer', 'in_progress', 'full')
    disks = dict((d['disk_id'], d) for d in job['disk_progresses'])
    assert sorted(disks) == ['disk-2000', 'disk-2001']
    assert disks['disk-2001']['bytes_transferred'] == 30 and disks['disk-2001']['total_bytes'] == 100
    assert (job['bytes_transferred'], job['total_bytes'], job['percentage']) == (40, 200, 20.0)
    assert job['errors'] == [] and job['last_error'] is None
    r = requests.get(url + 'never-seen', timeout=5)
    assert r.status_code == 404 and r.text == 'job not found\n'
    log = lab.vma_log()[before:]
    assert [e['status_code'] for e in log] == [200, 200, 200, 400, 400, 400, 400, 400, 200]
    assert all(e['job_id'] == 'job-a' and e['received_at'] > 0 for e in log)
    assert log[0]['body'] == ok


def test_vma_receiver_modes(lab):
    url = lab.vma_url + '/api/v1/progress/job-m/update'
    body = {'stage': 'Transfer', 'status': 'in_progress'}
    try:
        lab.vma_mode('fail')
        assert requests.post(url, json=body, timeout=5).status_code == 500
        assert requests.get(lab.vma_url + '/api/v1/progress/job-m', timeout=5).status_code == 404

        lab.vma_mode('stall', stall_seconds=1.5)
        results = []

        def post():
            t0 = time.monotonic()
            results.append((requests.post(url, json=body, timeout=10).status_code, time.monotonic() - t0))

        threads = [threading.Thread(target=post) for dummy in range(4)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert [r[0] for r in results] == [200] * 4
        assert all(r[1] >= 1.4 for r in results)
        assert elapsed < 4, 'stalled requests must not block each other (%.1f s)' % elapsed

        lab.vma_mode('down')
        with pytest.raises(requests.ConnectionError):
            requests.post(url, json=body, timeout=5)
        lab.vma_mode('ok')  # restarts it on the same port
        assert requests.post(url, json=body, timeout=5).status_code == 200
        modes = [e['mode'] for e in lab.vma_log() if e['job_id'] == 'job-m']
        assert modes == ['fail'] + ['stall'] * 4 + ['ok']
    finally:
        lab.vma_mode('ok')


def test_vma_receiver_bearer_token(lab_factory):
    tok = 't0ken-%d' % os.getpid()
    lab = lab_factory(vms=1, disks=1, disk_size=MiB, vma_token=tok)
    url = lab.vma_url + '/api/v1/progress/job-t/update'
    body = {'stage': 'Discover', 'status': 'in_progress'}
    assert requests.post(url, json=body, timeout=5).status_code == 401
    assert requests.post(url, json=body, headers={'Authorization': 'Bearer nope'}, timeout=5).status_code == 401
    assert requests.post(url, json=body, headers={'Authorization': 'Bearer ' + tok}, timeout=5).status_code == 200
    lab.vma_mode('down')
    lab.vma_mode('up')
    assert requests.post(url, json=body, timeout=5).status_code == 401, 'the token survives a restart'
    with open('/proc/%d/cmdline' % lab.pids()['vma'], 'rb') as f:
        assert tok.encode() not in f.read()


# ---------------------------------------------------------------- labctl

def run_labctl(*args):
    r = subprocess.run([LABCTL] + list(args), check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_labctl_up_write_down_leaves_no_process(tmp_path):
    d = str(tmp_path / 'cli')
    t0 = time.monotonic()
    out = json.loads(run_labctl('up', '--dir', d, '--vms', '2', '--disks', '1', '--disk-size', '4M'))
    assert time.monotonic() - t0 < 10
    pids = out['pids']
    assert set(pids) == {'vcsim', 'vma', 'nbdkit-VM0-2000', 'nbdkit-VM1-2000'}
    assert all(pid_alive(p) for p in pids.values())
    lab = Lab(d)
    assert [v['name'] for v in lab.vms] == ['VM0', 'VM1']
    assert lab.vms[0]['uuid'] != lab.vms[1]['uuid']
    written = json.loads(run_labctl('write', '--dir', d, '--vm', 'VM1', '--disk-key', '2000',
                                    '--random-blocks', '3', '--block-size', '65536', '--seed', '5'))
    assert len(written) == 3 and all(n == 65536 and o % 65536 == 0 for o, n in written)
    assert chain_read(lab.disk('VM1', 2000)['image'], written[0][0], 65536) != bytes(65536)
    r = subprocess.run([LABCTL, 'up', '--dir', d], check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and 'already running' in r.stderr
    run_labctl('down', '--dir', d)
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [n for n, p in pids.items() if pid_alive(p)]
    assert Lab(d).pids() == {}
    assert not [f for f in os.listdir(os.path.join(d, 'nbd')) if f.endswith('.sock')]
    assert os.path.exists(os.path.join(d, 'lab.json'))
    run_labctl('down', '--dir', d)  # idempotent
