# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vmware_migration_preflight against the lab: findings per VM, and nothing changes anywhere."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess
import time

import pytest

pytest.importorskip('pyVmomi')
pytest.importorskip('nbd')

from ansible_collections.migratekit.migration.plugins.module_utils import preflight  # noqa: E402
from ansible_collections.migratekit.migration.tests.integration.test_vmware_cbt_snapshot_cycles import (  # noqa: E402
    connect,
)

MiB = 1 << 20

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')


def run(lab, tmp_path, **options):
    conn = connect(lab)
    try:
        vm = preflight.find_vm_with(conn, preflight.PREFLIGHT_SPEC.options(
            hostname='x', username='x', password='x', path=lab.vm('VM0')['path']))
        values = dict(path=lab.vm('VM0')['path'], state_file=str(tmp_path / 'VM0.json'),
                      targets=dict((str(d['key']), d['target_uri']) for d in lab.vm('VM0')['disks']),
                      datastore_paths=lab.datastores, vma_url=lab.vma_url)
        values.update(options)
        return preflight.preflight(conn, vm, preflight.PREFLIGHT_SPEC.options(
            hostname='x', username='x', password='x', **values))
    finally:
        conn.close()


def codes(result, level=None):
    return sorted(set(f['code'] for f in result['findings'] if level is None or f['level'] == level))


def small_target(tmp_path):
    sock = str(tmp_path / 'small.sock')
    proc = subprocess.Popen(['nbdkit', '--foreground', '--exit-with-parent', '-U', sock, 'memory', '1M'])
    for _attempt in range(100):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return proc, 'nbd+unix:///?socket=' + sock


def test_a_ready_vm_has_no_error_and_each_disk_its_decision(lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=2)
    before = lab.state()
    result = run(lab, tmp_path)
    assert result['ready'] is True, result['findings']
    assert codes(result, 'error') == [] and codes(result, 'warning') == []
    decisions = [f for f in result['findings'] if f['code'] == 'decision']
    assert [f['disk'] for f in decisions] == [2000, 2001]
    assert all('full copy' in f['message'] for f in decisions)
    assert 'cbt_off' in codes(result, 'info')
    assert lab.state() == before and not os.path.exists(str(tmp_path / 'VM0.json'))


def test_every_problem_is_a_finding_and_nothing_changes(lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=2)
    users = lab.user_snapshot('VM0', 'before-upgrade')
    proc, small = small_target(tmp_path)
    try:
        lab.vma_mode('down')
        before = lab.state()
        result = run(lab, tmp_path, targets={'2000': small}, datastore_paths={}, source_transport='file')
    finally:
        proc.terminate()
        proc.wait()
        lab.vma_mode('up')
    assert result['ready'] is False
    errors = dict(((f['code'], f['disk']), f['message']) for f in result['findings'] if f['level'] == 'error')
    assert 'holds 1048576 bytes, the disk %d' % (64 * MiB) in errors[('target_too_small', 2000)]
    assert ('no_target', 2001) in errors
    assert ('datastore_not_mapped', 2000) in errors and ('datastore_not_mapped', 2001) in errors
    assert ('vma_unreachable', None) in errors
    warnings = [f['message'] for f in result['findings'] if f['code'] == 'users_snapshots']
    assert len(warnings) == 1 and users in warnings[0] and 'before-upgrade' in warnings[0]
    assert result['counts']['error'] == len(errors)
    assert lab.state() == before


def test_the_preflight_playbook_prints_each_finding_and_a_fleet_summary_and_changes_nothing(tmp_path):
    from lab import Lab
    from ansible_collections.migratekit.migration.tests.integration.test_roles import Env
    lab = Lab.up(str(tmp_path / 'lab'), vms=2, disks=2, disk_size=16 * MiB, watch_pid=os.getpid())
    try:
        env = Env(lab, str(tmp_path))
        with open(lab.inventory) as handle:
            text = handle.read()
        gone = lab.disk('VM1', 2001)['target_uri']
        broken = str(tmp_path / 'inventory.yml')
        with open(broken, 'w') as handle:
            handle.write(text.replace(gone, gone.replace('VM1-2001.sock', 'gone.sock')))
        os.chmod(broken, 0o600)
        lab.user_snapshot('VM0', 'before-upgrade')
        before = lab.state()
        run = env.playbook('preflight.yml', inventory=broken)
        assert run.rc != 0, run
        assert 'VM1 error: Hard disk 2 (key 2001): target' in run.out and 'gone.sock' in run.out, run
        assert "VM0 warning: the VM has snapshots that are not migratekit.migration's" in run.out, run
        assert 'VM0: ready, 0 errors, 1 warnings' in run.out, run
        assert 'VM1: NOT READY (target_unreachable), 1 errors, 0 warnings' in run.out, run
        assert '2 VMs: 1 ready, 1 not ready; 1 errors, 1 warnings' in run.out, run
        assert 'Not ready: VM1' in run.out
        assert lab.state() == before
        assert not os.path.exists(env.state_dir)
    finally:
        lab.down()


def test_a_disk_a_snapshot_cannot_freeze_is_an_error_unless_excluded(lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=2)
    lab.disk_config('VM0', 2001, disk_mode='independent_persistent')
    result = run(lab, tmp_path)
    [finding] = [f for f in result['findings'] if f['code'] == 'disk_unfreezable']
    assert finding['level'] == 'error' and finding['disk'] == 2001 and 'independent_persistent' in finding['message']
    assert 'exclude it' in finding['message'] and result['ready'] is False
    excluded = run(lab, tmp_path, exclude_disks=['2001'])
    assert excluded['ready'] is True and 'disk_excluded' in codes(excluded, 'warning')
    assert [f['disk'] for f in excluded['findings'] if f['code'] == 'decision'] == [2000]
