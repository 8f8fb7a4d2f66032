# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Full, incremental, failing and cutover cycles, as users run them (ansible-playbook over the
lab), seen from the migration appliance: the lab's VMA receiver behaves as the seed's appliance
does, and after each cycle every VM's job is read back (GET) and judged as the seed's OMA poller
judges it (helpers.oma_poll).

One lab of 2 VMs x 2 disks (4 MiB each). Each cycle of each VM is its own job
(``migratekit_job_id: <VM>-<cycle>``), as the OMA gives each replication its job id.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    REPO_ROOT,
    MiB,
    oma_poll,
    run_module,
    run_playbook,
)

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')
pytest.importorskip('requests')

from lab import Lab  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

from ansible_collections.migratekit.migration.plugins.module_utils import vma  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

VMS = ['VM0', 'VM1']
KEYS = [2000, 2001]
SIZE = 4 * MiB
PLAYBOOKS = os.path.join(REPO_ROOT, 'playbooks')


class Cycles(object):
    def __init__(self, lab, base):
        self.lab = lab
        self.base = base
        self.client = vma.VmaClient(lab.vma_url)
        self.pending = []

    def run(self, playbook, cycle, inventory=None, extra=None):
        extra_vars = {'migratekit_state_dir': os.path.join(self.base, 'state'),
                      'migratekit_run_dir': os.path.join(self.base, 'r'),
                      'migratekit_job_id': '{{ inventory_hostname }}-' + cycle}
        extra_vars.update(extra or {})
        proc = run_playbook(['-i', inventory or self.lab.inventory, '-f', str(len(VMS)), '-e', json.dumps(extra_vars),
                             os.path.join(PLAYBOOKS, playbook)], timeout=600)
        with open(os.path.join(self.base, '%s.log' % cycle), 'w') as handle:
            handle.write(proc.stdout)
        return proc

    def job(self, vm, cycle):
        """The job as the appliance answers it, and the updates it received, oldest first."""
        job_id = '%s-%s' % (vm, cycle)
        updates = [u['body'] for u in self.lab.vma_log() if u['job_id'] == job_id and u['status_code'] == 200]
        return self.client.get_progress(job_id), updates


@pytest.fixture(scope='module')
def cycles(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('vma-cycles'))
    lab = Lab.up(os.path.join(base, 'lab'), vms=len(VMS), disks=len(KEYS), disk_size=SIZE, watch_pid=os.getpid())
    try:
        yield Cycles(lab, base)
    finally:
        lab.down()


def disks_of(job):
    return dict((d['disk_id'], d) for d in job.get('disk_progresses', []))


def check_protocol(updates):
    """What the collection sends: copy progress names its disk, VM-wide updates do not; only the last update ends the job."""
    for body in updates:
        assert body['status'] in ('in_progress', 'completed', 'failed'), body
        assert 'message' not in body, body
        if 'disk_id' in body:
            assert body['stage'] == 'Transfer' and body['disk_id'] in ('disk-2000', 'disk-2001'), body
    assert updates[0] == {'stage': 'Discover', 'status': 'in_progress'}, updates[0]
    assert 'disk_id' not in updates[-1], updates[-1]
    # No disk ends the job: only the VM-wide update at the end says completed or failed
    # (a disk whose copy fails says failed, and then its VM fails: not in these cycles).
    assert all(body['status'] == 'in_progress' for body in updates[:-1]), updates


def check_completed(job, updates, sync_type, copied):
    """``copied``: bytes per disk key, as each disk's copy covered them (what it reports as done)."""
    check_protocol(updates)
    assert updates[-1]['stage'] == 'Complete' and updates[-1]['status'] == 'completed'
    record = oma_poll(job)
    assert record['finished'] and record['status'] == 'completed' and record['error_message'] is None, record
    assert record['progress_percent'] == 100.0 and record['vma_sync_type'] == sync_type
    disks = disks_of(job)
    # a disk with nothing to copy runs no copy (its changeId is committed at the snapshot): it reports nothing
    assert sorted(disks) == ['disk-%d' % key for key, done in sorted(copied.items()) if done or sync_type == 'full']
    for key, done in copied.items():
        if not done and sync_type != 'full':
            continue
        assert disks['disk-%d' % key]['bytes_transferred'] == disks['disk-%d' % key]['total_bytes'] == done, disks
    # The aggregate the OMA records is what the disks say: the bytes of the whole VM.
    assert record['bytes_transferred'] == record['total_bytes'] == sum(copied.values()), record
    assert (job['phase'], job['status'], job['percentage']) == ('Complete', 'completed', 100.0)
    assert job['errors'] == [] and job['last_error'] is None


def test_full_cycle(cycles):
    for i, vm in enumerate(VMS):
        cycles.lab.write(vm, 2000, offset=0, length=128 * 1024, seed=i)
    proc = cycles.run('full_sync.yml', 'full')
    assert proc.returncode == 0, proc.stdout[-4000:]
    for vm in VMS:
        job, updates = cycles.job(vm, 'full')
        check_completed(job, updates, 'full', dict((key, SIZE) for key in KEYS))
        assert job['sync_type'] == 'full' and job['vm_info']['disk_size_bytes'] == 2 * SIZE
        # each disk's updates kept their own numbers, growing up to the disk's size
        for key in KEYS:
            mine = [b for b in updates if b.get('disk_id') == 'disk-%d' % key]
            assert mine[0]['bytes_transferred'] == 0 and mine[-1]['bytes_transferred'] == SIZE
            assert all(b['total_bytes'] == SIZE and b['sync_type'] == 'full' for b in mine)


def test_incremental_cycle(cycles):
    written = {('VM0', 2000): cycles.lab.write('VM0', 2000, random_blocks=3, seed=1),
               ('VM1', 2001): cycles.lab.write('VM1', 2001, random_blocks=2, seed=2)}
    proc = cycles.run('incremental_sync.yml', 'incremental')
    assert proc.returncode == 0, proc.stdout[-4000:]
    for vm in VMS:
        job, updates = cycles.job(vm, 'incremental')
        copied = dict((key, sum(length for _offset, length in written.get((vm, key), []))) for key in KEYS)
        check_completed(job, updates, 'incremental', copied)
        assert 0 < job['total_bytes'] < SIZE


def test_failing_cycle(cycles):
    """VM1's second disk has no target server: VM1's job ends failed with the reason, VM0's completes."""
    with open(cycles.lab.inventory) as handle:
        text = handle.read()
    good = cycles.lab.disk('VM1', 2001)['target_uri']
    broken = os.path.join(cycles.base, 'broken-inventory.yml')
    with open(broken, 'w') as handle:
        handle.write(text.replace(good, good.replace('VM1-2001.sock', 'gone.sock')))
    os.chmod(broken, 0o600)
    written = dict(((vm, key), cycles.lab.write(vm, key, random_blocks=2, seed=10 + key))
                   for vm in VMS for key in KEYS)
    proc = cycles.run('incremental_sync.yml', 'failing', inventory=broken)
    assert proc.returncode != 0, proc.stdout[-4000:]

    job, updates = cycles.job('VM0', 'failing')
    check_completed(job, updates, 'incremental',
                    dict((key, sum(length for _o, length in written[('VM0', key)])) for key in KEYS))

    cycles.pending = written[('VM1', 2001)]  # not copied: the cutover catches it up
    job, updates = cycles.job('VM1', 'failing')
    check_protocol(updates)
    final = updates[-1]
    assert final['status'] == 'failed' and final['stage'] == 'Transfer'
    assert 'gone.sock' in final['error_message'], final
    record = oma_poll(job)
    assert record['finished'] and record['status'] == 'failed' and record['current_operation'] == 'Failed', record
    # The seed's appliance keeps no error text (its update has no error_message field and its answer's
    # errors list is always empty): the OMA records its generic text.
    assert record['error_message'] == 'Job failed'
    # disk 2000 was copied, 2001 never started (no target; and a target other than the one of its
    # last sync means a full copy, of all its bytes): the job's totals say so
    done = sum(length for _o, length in written[('VM1', 2000)])
    planned = done + SIZE
    assert sorted(disks_of(job)) == ['disk-2000']
    assert disks_of(job)['disk-2000']['bytes_transferred'] == done
    assert (record['bytes_transferred'], record['total_bytes']) == (done, planned), record
    assert job['status'] == 'failed' and job['phase'] == 'Transfer'

    # What a playbook sees of it with vma_progress_info
    out = run_module('vma_progress_info', dict(vma_url=cycles.lab.vma_url, job_id='VM1-failing'))
    assert not out.failed and out.result['found'] is True and out.result['finished'] is True
    assert out.result['progress']['status'] == 'failed'
    assert out.result['progress']['disk_progresses'][0]['disk_id'] == 'disk-2000'


def test_cutover_cycle(cycles):
    """The cutover's last incremental: VM1's second disk catches up what the failing cycle could not copy."""
    proc = cycles.run('cutover.yml', 'cutover', extra={'migratekit_cutover_shutdown_timeout': 30})
    assert proc.returncode == 0, proc.stdout[-4000:]
    job, updates = cycles.job('VM0', 'cutover')
    check_completed(job, updates, 'incremental', dict((key, 0) for key in KEYS))
    job, updates = cycles.job('VM1', 'cutover')
    check_completed(job, updates, 'incremental', {2000: 0, 2001: sum(length for _o, length in cycles.pending)})
