# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles as users run them: ansible-playbook over the lab's inventory.

One lab of 10 VMs x 2 disks (16 MiB each), forks 5, and the scenarios in
order (they build on each other): full sync, guest writes and an incremental
sync, an idle incremental (changed=0), a CBT reset falling back to full, a VM
with a broken target failing alone, the VMA down, a refused cutover, the
cutover. After each scenario: no snapshot, no nbdkit process of ours, no file
left in the run directory, no file holding the vCenter password.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    ANSIBLE_PLAYBOOK,
    REPO_ROOT,
    MiB,
    ansible_env,
    digest,
    live_processes,
    processes_mentioning,
    run_playbook,
)

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import Lab, compare_chain  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

PLAYBOOKS = os.path.join(REPO_ROOT, 'playbooks')
VMS = ['VM%d' % i for i in range(10)]
KEYS = [2000, 2001]
FORKS = 5

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

DUMP_PLAYBOOK = """
- name: Dump the cycle results
  hosts: migratekit_vms
  gather_facts: false
  tasks:
    - name: Write migratekit_sync_result
      ansible.builtin.copy:
        content: "{{ {'sync': migratekit_sync_result | default(none),
                      'cutover': migratekit_cutover_result | default(none)} | to_json }}"
        dest: "%s/{{ inventory_hostname }}.json"
        mode: "0600"
      delegate_to: localhost
      changed_when: false
"""

RECAP_RE = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+'
                      r'skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)', re.M)


class Run(object):
    def __init__(self, proc, results_dir, elapsed):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.elapsed = elapsed
        self.recap = {}
        for match in RECAP_RE.finditer(self.out):
            host = match.group(1)
            self.recap[host] = dict(zip(('ok', 'changed', 'unreachable', 'failed', 'skipped', 'rescued',
                                         'ignored'), (int(g) for g in match.groups()[1:])))
        self.results = {}
        if os.path.isdir(results_dir):
            for name in os.listdir(results_dir):
                with open(os.path.join(results_dir, name)) as handle:
                    self.results[name[:-5]] = json.load(handle)

    def changed(self, host):
        return self.recap[host]['changed']

    def failed_hosts(self):
        return sorted(h for h, r in self.recap.items() if r['failed'] or r['unreachable'])

    def disk(self, host, key):
        for disk in self.results[host]['sync']['disks']:
            if disk['key'] == key:
                return disk
        raise KeyError('%s has no disk %s in its result' % (host, key))

    def __repr__(self):
        return 'rc=%s elapsed=%.1fs recap=%s\n%s' % (self.rc, self.elapsed, self.recap, self.out[-6000:])


class Env(object):
    """The lab, the playbook runner and the checks every scenario ends with."""

    def __init__(self, lab, base):
        self.lab = lab
        self.base = base
        self.state_dir = os.path.join(base, 'state')
        self.run_dir = os.path.join(base, 'r')
        self.runs = 0
        self.timings = []
        self.private_files = []  # copies of the inventory made by the tests

    def _playbook_args(self, name, inventory, limit, extra, forks, results_dir, check=False):
        dump = os.path.join(self.base, 'dump-%d.yml' % self.runs)
        with open(dump, 'w') as handle:
            handle.write(DUMP_PLAYBOOK % results_dir)
        extra_vars = {'migratekit_state_dir': self.state_dir, 'migratekit_run_dir': self.run_dir}
        extra_vars.update(extra or {})
        args = ['-i', inventory or self.lab.inventory, '-f', str(forks),
                '-e', json.dumps(extra_vars), os.path.join(PLAYBOOKS, name), dump]
        if limit:
            args += ['-l', limit]
        if check:
            args.append('--check')
        return args

    def playbook(self, name, inventory=None, limit=None, extra=None, forks=FORKS, check=False):
        self.runs += 1
        results_dir = os.path.join(self.base, 'results-%d' % self.runs)
        os.makedirs(results_dir)
        args = self._playbook_args(name, inventory, limit, extra, forks, results_dir, check=check)
        started = time.monotonic()
        proc = run_playbook(args, timeout=900)
        run = Run(proc, results_dir, time.monotonic() - started)
        self.timings.append((name, limit or 'all', round(run.elapsed, 1)))
        with open(os.path.join(self.base, 'run-%d-%s.log' % (self.runs, name)), 'w') as handle:
            handle.write(proc.stdout)
        return run

    def start(self, name, limit=None, extra=None):
        """Start a playbook in its own process group (to be killed); return the Popen."""
        self.runs += 1
        results_dir = os.path.join(self.base, 'results-%d' % self.runs)
        os.makedirs(results_dir)
        args = self._playbook_args(name, None, limit, extra, FORKS, results_dir)
        log = open(os.path.join(self.base, 'run-%d-%s.log' % (self.runs, name)), 'w')
        try:
            return subprocess.Popen([ANSIBLE_PLAYBOOK] + args, stdout=log, stderr=subprocess.STDOUT, env=ansible_env(),
                                    start_new_session=True)
        finally:
            log.close()

    # ---------------------------------------------------------------- checks

    def disk_info(self, vm, key):
        return self.lab.disk(vm, key)

    def target_equals_source(self, vm, key):
        """The target holds exactly what the disk's VMDK chain presents (qemu-img compare -f vmdk -F raw)."""
        return compare_chain(self.lab.live(vm, key)['image'], self.disk_info(vm, key)['target_image'])

    def assert_all_equal(self, vms=VMS):
        bad = ['%s-%s' % (vm, key) for vm in vms for key in KEYS if not self.target_equals_source(vm, key)]
        assert bad == [], 'targets differing from their source: %s' % bad

    def state(self, vm):
        with open(os.path.join(self.state_dir, vm + '.json')) as handle:
            return json.load(handle)

    def snapshots(self):
        si = self.lab.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [], True)
            found = {}
            for obj in view.view:
                if obj._wsdlName == 'VirtualMachine' and obj.snapshot is not None:
                    found[obj.name] = [s.name for s in obj.snapshot.rootSnapshotList]
            view.Destroy()
            return found
        finally:
            from pyVim.connect import Disconnect
            Disconnect(si)

    def power_states(self):
        si = self.lab.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [], True)
            states = dict((obj.name, str(obj.runtime.powerState)) for obj in view.view
                          if obj._wsdlName == 'VirtualMachine')
            view.Destroy()
            return states
        finally:
            from pyVim.connect import Disconnect
            Disconnect(si)

    def our_nbdkit(self):
        """Our source servers: qemu-nbd for the file transport, nbdkit for vddk."""
        return (processes_mentioning(self.run_dir, program='qemu-nbd')
                + processes_mentioning(self.run_dir, program='nbdkit'))

    def files_with_password(self):
        secret = self.lab.vcenter['password'].encode()
        hits = []
        allowed = set([self.lab.lab_json, self.lab.inventory] + self.private_files)
        for root in (self.base, self.lab.dir):
            for dirpath, _dirs, files in os.walk(root):
                if os.path.join(self.lab.dir, 'datastores') in dirpath or dirpath.startswith(
                        os.path.join(self.lab.dir, 'targets')):
                    continue
                for name in files:
                    path = os.path.join(dirpath, name)
                    if path in allowed or not os.path.isfile(path) or os.path.getsize(path) > 8 * MiB:
                        continue
                    with open(path, 'rb') as handle:
                        if secret in handle.read():
                            hits.append(path)
        return hits

    def assert_clean(self):
        assert self.snapshots() == {}
        assert self.our_nbdkit() == []
        leftovers = []
        if os.path.isdir(self.run_dir):
            for dirpath, _dirs, files in os.walk(self.run_dir):
                leftovers.extend(os.path.join(dirpath, f) for f in files)
        assert leftovers == []
        assert self.files_with_password() == []


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('roles'))
    lab = Lab.up(os.path.join(base, 'lab'), vms=len(VMS), disks=len(KEYS), disk_size=16 * MiB,
                 watch_pid=os.getpid())
    the_env = Env(lab, base)
    try:
        yield the_env
    finally:
        lab.down()
        print('\nplaybook timings (s): %s' % the_env.timings)


def kill_group_except(pgid, keep):
    """SIGKILL every process of process group ``pgid`` (ours) except those whose argv[0] contains ``keep``."""
    for pid, group, argv in live_processes():
        if group == pgid and keep not in argv[0]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def write_some(lab, vm, key, blocks=4, seed=None):
    return lab.write(vm, key, random_blocks=blocks, seed=seed)


def test_full_sync(env):
    # The live images start with data: a full copy has something to move.
    for i, vm in enumerate(VMS):
        env.lab.write(vm, 2000, offset=0, length=256 * 1024, seed=i)
        env.lab.write(vm, 2001, offset=8 * MiB, length=128 * 1024, seed=100 + i)
    run = env.playbook('full_sync.yml')
    assert run.rc == 0, run
    assert sorted(run.recap) == VMS and run.failed_hosts() == []
    for vm in VMS:
        assert run.changed(vm) >= 1, run
        for key in KEYS:
            disk = run.disk(vm, key)
            assert disk['sync_type'] == 'full' and disk['copied'] and disk['committed_change_id']
            assert env.state(vm)['disks'][str(key)]['change_id'] == disk['committed_change_id']
    env.assert_all_equal()
    env.assert_clean()
    log = env.lab.vma_log()
    for vm in VMS:
        stages = [(u['body']['stage'], u['body']['status']) for u in log if u['job_id'] == vm
                  and 'disk_id' not in u['body']]
        assert stages[0] == ('Discover', 'in_progress') and stages[-1] == ('Complete', 'completed'), stages


def test_incremental_copies_only_what_changed(env):
    written = {('VM1', 2000): write_some(env.lab, 'VM1', 2000, seed=1),
               ('VM4', 2001): write_some(env.lab, 'VM4', 2001, seed=2),
               ('VM7', 2000): write_some(env.lab, 'VM7', 2000, seed=3)}
    env.lab.write('VM7', 2001, offset=16 * MiB - 4096, length=4096, seed=4)  # the last bytes of a disk
    run = env.playbook('incremental_sync.yml')
    assert run.rc == 0 and run.failed_hosts() == [], run
    for vm in VMS:
        expected = 1 if vm in ('VM1', 'VM4', 'VM7') else 0
        assert run.changed(vm) == expected, (vm, run)
        for key in KEYS:
            disk = run.disk(vm, key)
            assert disk['sync_type'] == 'incremental', disk
    assert run.disk('VM1', 2000)['bytes_written'] == sum(length for _o, length in written[('VM1', 2000)])
    assert run.disk('VM1', 2001)['bytes_written'] == 0
    env.assert_all_equal()
    env.assert_clean()


def test_idle_incremental_reports_changed_0(env):
    run = env.playbook('incremental_sync.yml')
    assert run.rc == 0, run
    assert dict((vm, run.changed(vm)) for vm in VMS) == dict((vm, 0) for vm in VMS), run
    env.assert_clean()


def state_files(env):
    return dict((name, open(os.path.join(env.state_dir, name), 'rb').read()) for name in os.listdir(env.state_dir))


def target_digests(env, vms):
    return dict(('%s-%s' % (vm, key), digest(env.disk_info(vm, key)['target_image'])) for vm in vms for key in KEYS)


def test_check_mode_plans_without_touching_anything(env):
    write_some(env.lab, 'VM6', 2001, seed=6)
    states, targets = state_files(env), target_digests(env, VMS)
    updates_before = len(env.lab.vma_log())

    run = env.playbook('incremental_sync.yml', check=True)
    assert run.rc == 0 and run.failed_hosts() == [], run
    assert re.search(r'VM VM6, disk 2001 \(Hard disk 2\): incremental copy would run \(changes since changeId',
                     run.out), run
    full = env.playbook('full_sync.yml', limit='VM6', check=True)
    # A full copy would write each target: the plan task (one in the recap) reports a change.
    assert full.rc == 0 and full.changed('VM6') == 1, full
    assert len(re.findall(r'VM VM6, disk 200[01] \(Hard disk [12]\): full copy would run \(mode is full\)',
                          full.out)) == 2, full
    assert state_files(env) == states and target_digests(env, VMS) == targets
    assert len(env.lab.vma_log()) == updates_before, 'check mode posted progress'
    assert not env.target_equals_source('VM6', 2001)
    env.assert_clean()

    # The write is still there to copy: the real run does it, for VM6 alone.
    run = env.playbook('incremental_sync.yml')
    assert run.rc == 0 and run.changed('VM6') == 1 and sum(run.changed(vm) for vm in VMS) == 1, run
    env.assert_all_equal()


def test_cbt_reset_falls_back_to_full(env):
    env.lab.reset_cbt('VM2', 2000)
    write_some(env.lab, 'VM2', 2000, seed=5)
    run = env.playbook('incremental_sync.yml', limit='VM2,VM3')
    assert run.rc == 0, run
    disk = run.disk('VM2', 2000)
    assert disk['sync_type'] == 'full' and 'reset' in disk['reason'].lower(), disk
    assert run.disk('VM2', 2001)['sync_type'] == 'incremental'
    assert run.changed('VM2') == 1 and run.changed('VM3') == 0
    env.assert_all_equal(['VM2', 'VM3'])
    env.assert_clean()


def test_broken_target_fails_alone(env):
    with open(env.lab.inventory) as handle:
        text = handle.read()
    good = env.lab.disk('VM3', 2001)['target_uri']
    broken = os.path.join(env.base, 'broken-inventory.yml')
    with open(broken, 'w') as handle:
        handle.write(text.replace(good, good.replace('VM3-2001.sock', 'gone.sock')))
    os.chmod(broken, 0o600)
    env.private_files.append(broken)
    before = env.state('VM3')['disks']['2001']['change_id']
    for vm in ('VM3', 'VM5', 'VM8'):
        for key in KEYS:
            write_some(env.lab, vm, key, seed=hash((vm, key)) % 1000)
    run = env.playbook('incremental_sync.yml', inventory=broken)
    assert run.rc != 0
    assert run.failed_hosts() == ['VM3'], run
    assert re.search(r'fatal: \[VM3\].*VM VM3: incremental_sync failed: .*(gone\.sock|2001)', run.out), run
    for vm in ('VM5', 'VM8'):
        assert run.changed(vm) == 1
    env.assert_all_equal(['VM5', 'VM8'])
    # disks are independent: VM3's disk 2000 was committed, 2001 kept its changeId
    assert env.state('VM3')['disks']['2001']['change_id'] == before
    assert env.target_equals_source('VM3', 2000)
    assert not env.target_equals_source('VM3', 2001)
    failed = [u for u in env.lab.vma_log() if u['job_id'] == 'VM3' and u['body'].get('status') == 'failed'
              and 'disk_id' not in u['body']]
    assert failed and 'gone.sock' in failed[-1]['body'].get('error_message', ''), failed
    env.assert_clean()
    # the next run just works: VM3's disk 2001 catches up incrementally
    run = env.playbook('incremental_sync.yml', limit='VM3')
    assert run.rc == 0, run
    assert run.disk('VM3', 2001)['sync_type'] == 'incremental' and run.changed('VM3') == 1
    env.assert_all_equal(['VM3'])
    env.assert_clean()


def test_vma_down_does_not_fail_syncs(env):
    env.lab.vma_mode('down')
    try:
        write_some(env.lab, 'VM6', 2000, seed=6)
        run = env.playbook('incremental_sync.yml')
        assert run.rc == 0 and run.failed_hosts() == [], run
        assert run.changed('VM6') == 1
        assert '[WARNING]' in run.out
    finally:
        env.lab.vma_mode('up')
    env.assert_all_equal()
    env.assert_clean()


def test_vddk_transport_failure_is_clean(env):
    """No VDDK here: nbdkit cannot load the vddk plugin. The cycle fails clearly and leaves no secret behind."""
    for key in KEYS:  # something to copy on each disk (a disk with nothing to copy needs no server)
        write_some(env.lab, 'VM0', key, blocks=2, seed=40 + key)
    before = env.state('VM0')
    run = env.playbook('incremental_sync.yml', limit='VM0', extra={
        'migratekit_source_transport': 'vddk', 'migratekit_vcenter_thumbprint': ':'.join(['AB'] * 20)})
    assert run.rc != 0 and run.failed_hosts() == ['VM0'], run
    assert re.search(r'fatal: \[VM0\].*Serve each snapshot disk.*vddk', run.out), run
    assert env.lab.vcenter['password'] not in run.out
    assert env.state('VM0') == before
    env.assert_clean()


def test_interrupted_cycle_is_cleaned_up_by_the_next(env):
    write_some(env.lab, 'VM8', 2000, blocks=24, seed=8)
    before = env.state('VM8')
    proc = env.start('incremental_sync.yml', limit='VM8', extra={
        'migratekit_source_read_bps_limit': 65536,
        'migratekit_copy_connections': 1, 'migratekit_copy_requests_in_flight': 1})
    try:
        deadline = time.monotonic() + 120
        # one server: disk 2001 has nothing to copy (its new changeId is committed at the snapshot)
        while len(env.our_nbdkit()) < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert len(env.our_nbdkit()) == 1, 'the source server did not start'
        time.sleep(3)  # the copy of disk 2000 is under way: reads throttled to 64 KiB/s
        assert proc.poll() is None
    finally:
        # The controller dies (its process group: playbook, workers, modules), the
        # qemu-nbd daemons survive (a Ctrl-C or an AWX cancel would stop them too).
        kill_group_except(proc.pid, keep=b'qemu-nbd')
        proc.wait()
    assert len(env.our_nbdkit()) == 1
    assert 'VM8' in env.snapshots()
    assert env.state('VM8')['disks']['2000'] == before['disks']['2000']  # nothing committed for the copied disk
    run = env.playbook('incremental_sync.yml', limit='VM8')
    assert run.rc == 0, run
    assert run.disk('VM8', 2000)['sync_type'] == 'incremental' and run.disk('VM8', 2000)['bytes_written'] > 0
    assert run.changed('VM8') >= 1
    # the young leftover snapshot is reused (no checkpoint yet: the copy starts over from it)
    assert re.search(r'VM VM8: the snapshot snapshot-\d+ left over by an interrupted cycle is \d+ s old: reused',
                     run.out), run
    env.assert_all_equal(['VM8'])
    env.assert_clean()


def test_cutover_refused_without_a_completed_sync(env):
    empty = os.path.join(env.base, 'empty-state')
    run = env.playbook('cutover.yml', limit='VM0', extra={'migratekit_state_dir': empty})
    assert run.rc != 0 and run.failed_hosts() == ['VM0'], run
    assert 'cutover refused, the VM was not touched' in run.out
    assert env.power_states()['VM0'] == 'poweredOn'
    env.assert_clean()


def test_cutover(env):
    write_some(env.lab, 'VM9', 2001, seed=9)
    run = env.playbook('cutover.yml', extra={'migratekit_cutover_shutdown_timeout': 30})
    assert run.rc == 0 and run.failed_hosts() == [], run
    assert set(env.power_states().values()) == {'poweredOff'}
    for vm in VMS:
        result = run.results[vm]['cutover']
        assert result['power_method'] == 'guest_shutdown'
        state = env.state(vm)['disks']
        assert result['change_ids'] == dict((str(k), state[str(k)]['change_id']) for k in KEYS) or \
            result['change_ids'] == dict((k, state[str(k)]['change_id']) for k in KEYS)
        for key in KEYS:
            assert run.disk(vm, key)['sync_type'] == 'incremental'
    assert run.changed('VM9') == 2  # the shutdown and the copy
    env.assert_all_equal()
    env.assert_clean()
