# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM with its user's snapshots: one taken before the first sync, another between two incremental syncs.

After each cycle every target holds exactly what its disk's VMDK chain presents (qemu-img compare -f vmdk -F
raw), both user snapshots are still there, and the disks they froze never changed.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil

import pytest

from ansible_collections.migratekit.migration.tests.integration.test_roles import Env

from lab import Lab, chain_sha256, compare_chain  # noqa: E402  (conftest puts tests/lab on sys.path)

MiB = 1 << 20
KEYS = (2000, 2001)

pytestmark = pytest.mark.skipif(shutil.which('qemu-nbd') is None, reason='qemu-nbd is not installed')


def frozen_tops(lab):
    """{snapshot name: {disk key: local path of the snapshot's disk backing}} (from the simulator)."""
    names = {}
    si = lab.connect()
    try:
        vm = si.content.searchIndex.FindByInventoryPath(lab.vm('VM0')['path'])

        def walk(trees):
            for tree in trees:
                names[tree.name] = dict(
                    (d.key, lab.datastore_path(d.backing.fileName)) for d in tree.snapshot.config.hardware.device
                    if hasattr(d.backing, 'fileName') and d.key in KEYS)
                walk(tree.childSnapshotList)
        walk(vm.snapshot.rootSnapshotList if vm.snapshot else [])
    finally:
        from pyVim.connect import Disconnect
        Disconnect(si)
    return names


def test_user_snapshots_before_and_between_syncs(tmp_path):
    pytest.importorskip('nbd')
    lab = Lab.up(str(tmp_path / 'lab'), vms=1, disks=2, disk_size=16 * MiB, watch_pid=os.getpid())
    env = Env(lab, str(tmp_path))
    try:
        for key in KEYS:
            lab.write('VM0', key, random_blocks=20, seed=key)
        lab.user_snapshot('VM0', 'user-before-sync')
        for key in KEYS:
            lab.write('VM0', key, random_blocks=6, seed=key + 1)
        frozen = frozen_tops(lab)
        digests = dict((key, chain_sha256(frozen['user-before-sync'][key])) for key in KEYS)

        def check_cycle(run, sync_type, snapshots):
            assert run.rc == 0, run
            for key in KEYS:
                assert run.disk('VM0', key)['sync_type'] == sync_type
                live = lab.live('VM0', key)
                assert len(live['chain']) == len(snapshots) + 1, live  # the base and one delta per user snapshot
                assert compare_chain(live['image'], lab.disk('VM0', key)['target_image']), \
                    'the target of disk %d differs from its chain %s' % (key, live['chain'])
            assert lab.snapshot_names('VM0') == snapshots
            for key in KEYS:
                assert chain_sha256(frozen['user-before-sync'][key]) == digests[key]

        check_cycle(env.playbook('full_sync.yml'), 'full', ['user-before-sync'])
        for key in KEYS:
            lab.write('VM0', key, random_blocks=5, seed=key + 2)
        check_cycle(env.playbook('incremental_sync.yml'), 'incremental', ['user-before-sync'])

        lab.user_snapshot('VM0', 'user-between-syncs')
        for key in KEYS:
            lab.write('VM0', key, random_blocks=5, seed=key + 3)
        check_cycle(env.playbook('incremental_sync.yml'), 'incremental', ['user-before-sync', 'user-between-syncs'])
        assert len(lab.state()['snapshots']) == 2, 'our snapshot is gone, the two user snapshots stay'
        assert env.our_nbdkit() == []

        # A datastore mapped to the wrong directory: the cycle fails before copying anything, naming the disk and
        # the file; nothing is committed, the user's snapshots stay, no server is left.
        for key in KEYS:  # something to copy on each disk: a disk with nothing to copy reads nothing
            lab.write('VM0', key, random_blocks=2, seed=key + 4)
        before = env.state('VM0')
        wrong = str(tmp_path / 'not-the-datastore')
        os.makedirs(wrong)
        run = env.playbook('incremental_sync.yml', extra={'migratekit_datastore_paths': {'LocalDS_0': wrong}})
        assert run.rc != 0 and run.failed_hosts() == ['VM0'], run
        assert 'cannot serve VM0 Hard disk 1 (key 2000) (%s/VM0/VM0-000002.vmdk)' % wrong in run.out, run
        assert 'cannot be read' in run.out
        assert env.state('VM0') == before
        assert lab.snapshot_names('VM0') == ['user-before-sync', 'user-between-syncs']
        assert env.our_nbdkit() == []
    finally:
        lab.down()


def test_a_users_namesake_snapshot_and_a_failed_consolidation_do_not_fail_a_synced_cycle(tmp_path):
    """A user's snapshot named like ours is kept; disks that cannot be consolidated after our snapshot's removal
    (a backup tool still reads a link) are a warning of a cycle that synced every disk, not a failure."""
    pytest.importorskip('nbd')
    from pyVim.task import WaitForTask
    from ansible_collections.migratekit.migration.tests.integration.test_vcenter_safety import start_reader
    lab = Lab.up(str(tmp_path / 'lab'), vms=1, disks=2, disk_size=16 * MiB, watch_pid=os.getpid())
    env = Env(lab, str(tmp_path))
    reader = None
    try:
        assert env.playbook('full_sync.yml').rc == 0
        namesake = lab.user_snapshot('VM0', 'migratekit', description='taken by hand, same name as the tool\'s')
        # a snapshot of a backup tool whose reader still holds its link when the snapshot is removed
        scratch = lab.user_snapshot('VM0', 'backup-tool')
        si = lab.connect()
        vm = si.content.searchIndex.FindByInventoryPath(lab.vm('VM0')['path'])
        node = [n for n in vm.snapshot.rootSnapshotList[0].childSnapshotList if n.snapshot._moId == scratch][0]
        held = lab.datastore_path([d for d in node.snapshot.config.hardware.device if d.key == 2000][0].backing.fileName)
        reader = start_reader(held, tmp_path)
        WaitForTask(node.snapshot.RemoveSnapshot_Task(removeChildren=False), si=si)
        assert vm.runtime.consolidationNeeded is True
        for key in KEYS:
            lab.write('VM0', key, random_blocks=4, seed=key + 9)
        run = env.playbook('incremental_sync.yml')
        assert run.rc == 0 and run.failed_hosts() == [], run
        result = run.results['VM0']['sync']
        assert any('need consolidation' in w for w in result['warnings']), result
        assert 'consolidation' in result['message']
        assert lab.snapshot_names('VM0') == ['migratekit']   # the user's namesake, not ours
        assert lab.state()['snapshots'][0]['moid'] == namesake
        for key in KEYS:
            assert run.disk('VM0', key)['sync_type'] == 'incremental'
            assert compare_chain(lab.live('VM0', key)['image'], lab.disk('VM0', key)['target_image'])
        completed = [u for u in lab.vma_log()
                     if u['body'].get('status') == 'completed' and not u['body'].get('disk_id')]
        assert completed, 'the VMA got the job completed'
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait()
        lab.down()
