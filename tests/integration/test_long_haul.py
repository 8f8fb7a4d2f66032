# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The long haul, as users run the roles: state that survives re-created VMs and corrupt files,
one cycle per VM at a time, cheap idle cycles.

One lab of 3 VMs x 1 disk (16 MiB); the scenarios build on each other. VM2
is the kill -9 matrix's: its target is an nbdkit of the test's own that logs
every write, so the test counts what reached the target over all the runs.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import json
import os
import re
import shutil
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import MiB, NbdkitProcess
from ansible_collections.migratekit.migration.tests.integration.test_roles import Env, kill_group_except

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import Lab  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

KEY = 2000


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('long'))
    lab = Lab.up(os.path.join(base, 'lab'), vms=3, disks=1, disk_size=16 * MiB, watch_pid=os.getpid())
    the_env = Env(lab, base)
    try:
        yield the_env
    finally:
        lab.down()


def state_path(env, vm):
    return os.path.join(env.state_dir, vm + '.json')


def kept_aside(env, vm):
    return sorted(glob.glob(state_path(env, vm) + '.aside-*'))


def test_first_full_sync_records_who_the_state_belongs_to(env):
    env.lab.write('VM0', KEY, offset=0, length=256 * 1024, seed=1)
    env.lab.write('VM1', KEY, offset=MiB, length=128 * 1024, seed=2)
    run = env.playbook('full_sync.yml', limit='VM0,VM1')
    assert run.rc == 0 and run.failed_hosts() == [], run
    for vm in ('VM0', 'VM1'):
        state = env.state(vm)
        info = env.lab.vm(vm)
        assert state['vm_uuid'] == info['uuid'] and state['vm_instance_uuid'] == info['instance_uuid']
        assert state['vcenter'] == env.lab.vcenter['hostname']
        assert env.target_equals_source(vm, KEY)


def test_state_of_a_vm_recreated_under_the_same_name_never_blocks(env):
    # What a deleted and re-created VM0 looks like from the appliance: its state file names another VM.
    path = state_path(env, 'VM0')
    state = env.state('VM0')
    state.update(vm_uuid='4213aaaa-0000-0000-0000-00000000dead', vm_instance_uuid='5013aaaa-dead')
    old = json.dumps(state, indent=2, sort_keys=True) + '\n'
    with open(path, 'w') as handle:
        handle.write(old)
    env.lab.write('VM0', KEY, offset=4 * MiB, length=64 * 1024, seed=3)
    run = env.playbook('incremental_sync.yml', limit='VM0')
    assert run.rc == 0 and run.failed_hosts() == [], run
    disk = run.disk('VM0', KEY)
    assert disk['sync_type'] == 'full' and 'belongs to VM' in disk['reason'], disk
    aside = kept_aside(env, 'VM0')
    assert len(aside) == 1 and open(aside[0]).read() == old, 'the old state is kept, unchanged'
    assert env.state('VM0')['vm_uuid'] == env.lab.vm('VM0')['uuid']
    assert env.state('VM0')['disks'][str(KEY)]['change_id'] == disk['committed_change_id']
    assert env.target_equals_source('VM0', KEY)
    env.assert_clean()


def test_corrupt_state_fails_incremental_syncs_and_full_sync_recovers(env):
    path = state_path(env, 'VM1')
    with open(path) as handle:
        text = handle.read()
    with open(path, 'w') as handle:
        handle.write(text[:len(text) // 2])  # cut short, as a full disk or a crash would leave it
    run = env.playbook('incremental_sync.yml', limit='VM1')
    assert run.rc != 0 and run.failed_hosts() == ['VM1'], run
    assert path in run.out and 'migratekit.migration.full_sync' in run.out, run
    assert open(path).read() == text[:len(text) // 2], 'an incremental sync changes nothing'
    env.assert_clean()

    run = env.playbook('full_sync.yml', limit='VM1')
    assert run.rc == 0 and run.failed_hosts() == [], run
    aside = kept_aside(env, 'VM1')
    assert len(aside) == 1 and open(aside[0]).read() == text[:len(text) // 2]
    assert env.state('VM1')['disks'][str(KEY)]['change_id'] == run.disk('VM1', KEY)['committed_change_id']
    assert env.target_equals_source('VM1', KEY)
    env.assert_clean()


SLOW = {'migratekit_source_read_bps_limit': 256 * 1024}  # 32 s for 8 MiB


def lock_path(env, vm):
    return os.path.join(env.state_dir, vm + '.cycle.lock')


def wait_for_copy(env, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while not env.our_nbdkit() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert env.our_nbdkit(), 'the cycle never reached its copy'


def test_a_second_cycle_of_the_vm_fails_at_once_and_touches_nothing(env):
    env.lab.write('VM0', KEY, offset=0, length=8 * MiB, seed=10)  # long enough to meet it
    first = env.start('full_sync.yml', limit='VM0', extra=SLOW)
    try:
        wait_for_copy(env, first)
        servers, snapshots = env.our_nbdkit(), env.snapshots()
        started = time.monotonic()
        second = env.playbook('incremental_sync.yml', limit='VM0')
        assert second.rc != 0 and second.failed_hosts() == ['VM0'], second
        assert 'another cycle holds %s: full_sync, pid %d' % (lock_path(env, 'VM0'), first.pid) in second.out, second
        assert 'This cycle changed nothing' in second.out
        assert first.poll() is None, 'the first cycle was disturbed'
        assert env.our_nbdkit() == servers and env.snapshots() == snapshots, 'the second cycle touched the first'
        assert "Take the VM's cycle lock" in second.out and 'Snapshot the VM' not in second.out, second
        assert time.monotonic() - started < 60
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert env.target_equals_source('VM0', KEY)
    env.assert_clean()


def test_a_killed_cycle_leaves_the_lock_to_the_next(env):
    env.lab.write('VM1', KEY, offset=0, length=8 * MiB, seed=11)
    proc = env.start('full_sync.yml', limit='VM1', extra=SLOW)
    try:
        wait_for_copy(env, proc)
        holder = json.load(open(lock_path(env, 'VM1')))['holder_pid']
    finally:
        kill_group_except(proc.pid, keep=b'qemu-nbd')  # kill -9 of the controller
        proc.wait()
    run = env.playbook('incremental_sync.yml', limit='VM1')
    assert run.rc == 0 and run.failed_hosts() == [], run
    assert not os.path.exists('/proc/%d' % holder) or 'Z' in open('/proc/%d/stat' % holder).read().split()[2]
    assert env.target_equals_source('VM1', KEY)
    env.assert_clean()


def test_an_idle_disk_commits_its_new_change_id_without_a_server_or_a_copy(env):
    before = dict((vm, env.state(vm)['disks'][str(KEY)]['change_id']) for vm in ('VM0', 'VM1'))
    written = env.lab.write('VM1', KEY, offset=2 * MiB, length=64 * 1024, seed=20)
    run = env.playbook('incremental_sync.yml', limit='VM0,VM1')
    assert run.rc == 0 and run.failed_hosts() == [], run
    assert run.changed('VM0') == 0 and run.changed('VM1') >= 1, run
    idle, busy = run.disk('VM0', KEY), run.disk('VM1', KEY)
    assert idle['sync_type'] == 'incremental' and not idle['copied'] and idle['bytes_written'] == 0
    assert idle['committed_change_id'] and idle['committed_change_id'] != before['VM0']
    assert env.state('VM0')['disks'][str(KEY)]['change_id'] == idle['committed_change_id']
    assert busy['copied'] and busy['bytes_written'] == sum(length for _offset, length in written)
    assert env.state('VM1')['disks'][str(KEY)]['change_id'] == busy['committed_change_id'] != before['VM1']
    # the idle VM started no server and ran no copy; the busy one did both
    assert re.search(r'\[VM1 -> localhost\] => \(item=2000 \(Hard disk 1\) via file\)', run.out), run
    assert not re.search(r'\[VM0 -> localhost\] => \(item=2000 \(Hard disk 1\) via', run.out), run
    assert not re.search(r'\[VM0 -> localhost\] => \(item=2000 \(Hard disk 1\): incremental', run.out), run
    for vm in ('VM0', 'VM1'):
        assert env.target_equals_source(vm, KEY)
    env.assert_clean()

    # and the next cycle starts from the committed changeId: a write after it is copied, and only that
    # (its 64 KiB CBT block, the lab's tracking granularity)
    env.lab.write('VM0', KEY, offset=6 * MiB, length=4096, seed=21)
    run = env.playbook('incremental_sync.yml', limit='VM0')
    assert run.rc == 0 and run.disk('VM0', KEY)['bytes_written'] == 64 * 1024, run
    assert env.target_equals_source('VM0', KEY)
    env.assert_clean()


# ---------------------------------------------------------------- kill -9 matrix (VM2)

WRITE_RE = re.compile(r' Write id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+)')
RESUME_SLOW = {'migratekit_source_read_bps_limit': 512 * 1024}


@pytest.fixture(scope='module')
def logged_target(env):
    """VM2's target: the lab's target image behind an nbdkit that logs every write."""
    log = os.path.join(env.base, 'vm2-target.log')
    server = NbdkitProcess(env.base, 'vm2-target', 'file', env.lab.disk('VM2', KEY)['target_image'],
                           'logfile=' + log, filters=['log'])
    yield server, log
    server.stop()


def written_to(log):
    with open(log) as handle:
        return sum(int(count, 16) for _offset, count in WRITE_RE.findall(handle.read()))


def vm2_extra(server):
    return dict(RESUME_SLOW, migratekit_targets={str(KEY): server.uri})


def kill_after(env, seconds, extra):
    proc = env.start('incremental_sync.yml', limit='VM2', extra=extra)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    finished = proc.poll() is not None
    kill_group_except(proc.pid, keep=b'qemu-nbd')
    proc.wait()
    return finished


def vm2_change_id(env):
    try:
        return env.state('VM2')['disks'][str(KEY)]['change_id']
    except (IOError, KeyError):
        return None


def test_a_copy_killed_three_times_resumes_and_writes_each_byte_about_once(env, logged_target):
    server, log = logged_target
    data = 14 * MiB
    env.lab.write('VM2', KEY, offset=0, length=data, seed=30)  # about 28 s to read at 512 KiB/s
    extra = vm2_extra(server)
    watermarks = []
    checkpoint_path = os.path.join(env.state_dir, 'VM2-%d.checkpoint.json' % KEY)
    for _run in range(3):
        proc = env.start('incremental_sync.yml', limit='VM2', extra=extra)
        try:
            deadline = time.monotonic() + 120
            before = watermarks[-1] if watermarks else 0
            while time.monotonic() < deadline and proc.poll() is None:  # a new checkpoint, then kill
                if os.path.exists(checkpoint_path) and json.load(open(checkpoint_path))['watermark'] > before:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, 'the cycle ended before a checkpoint'
        finally:
            kill_group_except(proc.pid, keep=b'qemu-nbd')
            proc.wait()
        saved = json.load(open(checkpoint_path))
        watermarks.append(saved['watermark'])
        done = saved['watermark'] + sum(end - start for start, end in saved['done_above'])
        assert vm2_change_id(env) is None, 'a changeId committed before the disk was complete'
        assert 'VM2' in env.snapshots(), 'the snapshot of the interrupted copy is kept'
    assert watermarks == sorted(watermarks) and watermarks[0] > 0, watermarks
    run = env.playbook('incremental_sync.yml', limit='VM2', extra=extra)
    assert run.rc == 0 and run.failed_hosts() == [], run
    disk = run.disk('VM2', KEY)
    assert disk['resumed_at_bytes'] == done and 'resumed at %d of' % done in disk['resume']
    assert 'disk %d resumed at' % KEY in run.results['VM2']['sync']['message']
    assert vm2_change_id(env) == disk['committed_change_id'] and not os.path.exists(checkpoint_path)
    assert env.target_equals_source('VM2', KEY)
    total = written_to(log)
    assert data <= total <= 1.5 * data, 'wrote %d bytes for %d bytes of data' % (total, data)
    env.assert_clean()


# three kill points (early: snapshot/serve, mid-copy, late: flush/commit/cleanup) keep make test under 30 min
@pytest.mark.parametrize('seconds', [1.5, 7.0, 14.0])
def test_a_cycle_killed_at_any_point_never_commits_ahead_of_its_data(env, logged_target, seconds):
    server, _log = logged_target
    extra = vm2_extra(server)
    env.lab.write('VM2', KEY, offset=int(seconds * MiB) % (12 * MiB), length=2 * MiB, seed=int(seconds * 10))
    before = vm2_change_id(env)
    finished = kill_after(env, seconds, extra)
    if vm2_change_id(env) != before:
        assert env.target_equals_source('VM2', KEY), 'a changeId committed ahead of its data'
    run = env.playbook('incremental_sync.yml', limit='VM2', extra=extra)
    assert run.rc == 0 and run.failed_hosts() == [], (finished, run)
    assert vm2_change_id(env) != before
    assert env.target_equals_source('VM2', KEY)
    env.assert_clean()


def test_a_cutover_never_resumes_from_a_snapshot_taken_while_the_vm_ran(env):
    # an incremental sync of VM1 killed after a checkpoint: its snapshot (VM on) and checkpoint stay
    env.lab.write('VM1', KEY, offset=8 * MiB, length=6 * MiB, seed=50)
    checkpoint_path = os.path.join(env.state_dir, 'VM1-%d.checkpoint.json' % KEY)
    proc = env.start('incremental_sync.yml', limit='VM1', extra=RESUME_SLOW)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(checkpoint_path) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert os.path.exists(checkpoint_path) and proc.poll() is None
    finally:
        kill_group_except(proc.pid, keep=b'qemu-nbd')
        proc.wait()
    assert 'VM1' in env.snapshots()
    # the guest goes on writing after that snapshot, until the cutover shuts it down
    late = env.lab.write('VM1', KEY, offset=MiB, length=64 * 1024, seed=51)
    # without the presync (which would resume the copy from that snapshot with the VM on, as any sync does)
    run = env.playbook('cutover.yml', limit='VM1',
                       extra={'migratekit_cutover_shutdown_timeout': 30, 'migratekit_cutover_presync': False})
    assert run.rc == 0 and run.failed_hosts() == [], run
    assert re.search(r'VM VM1: the snapshot snapshot-\d+ left over by an interrupted cycle is \d+ s old: replaced by '
                     r'a fresh one \(taken while the VM was poweredOn', run.out), run
    assert run.disk('VM1', KEY)['resumed_at_bytes'] == 0 and late
    assert env.target_equals_source('VM1', KEY), 'the cutover missed what the VM wrote after the old snapshot'
    assert not os.path.exists(checkpoint_path)
    env.assert_clean()
