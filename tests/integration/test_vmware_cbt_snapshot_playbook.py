# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vmware_cbt_snapshot through ansible-playbook against the lab: check -> apply -> repeat -> absent.

The tasks live in tests/integration/targets/vmware_cbt_snapshot; this driver
brings up a fresh lab (VM0 with two 64 MiB disks, CBT off), runs the target
with the lab's inventory and checks the results and the simulator's state.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import PYTHON, REPO_ROOT, run_playbook

pytest.importorskip('pyVmomi')

TARGET = os.path.join(REPO_ROOT, 'tests', 'integration', 'targets', 'vmware_cbt_snapshot')


def run_target(lab, tmp_path, extra_args=()):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(
        '- hosts: migratekit_vms\n'
        '  gather_facts: false\n'
        '  roles:\n'
        '    - role: %s\n' % TARGET)
    return run_playbook(['-i', lab.inventory, str(playbook), '--diff', '-v',
                         '-e', 'ansible_python_interpreter=' + PYTHON] + list(extra_args))


def test_check_apply_repeat_absent_through_ansible(lab_factory, tmp_path):
    lab = lab_factory(vms=1, disks=2)
    vm = lab.vm('VM0')
    lab.write('VM0', 2000, offset=3 * 65536, length=65536, seed=1)  # CBT is off: data for the full copy
    proc = run_target(lab, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:]
    results = json.load(open(os.path.join(lab.dir, 'cbt-target', 'VM0', 'results.json')))

    check = results['check']
    assert check['diff'] == {'before': {'cbt_enabled': False, 'snapshot': None},
                             'after': {'cbt_enabled': True, 'snapshot': 'migratekit'}}
    apply = results['apply']
    assert apply['vm']['moid'] == vm['moid'] and apply['vm']['uuid'] == vm['uuid']
    assert [d['key'] for d in apply['disks']] == [2000, 2001]
    disk = apply['disks'][0]
    # the snapshot keeps the base descriptor, frozen (the VM now writes into a delta)
    assert disk['backing_file'] == vm['disks'][0]['backing_file'] == '[LocalDS_0] VM0/VM0.vmdk'
    assert disk['datastore'] == 'LocalDS_0' and disk['capacity_bytes'] == 64 << 20
    assert disk['target'] == vm['disks'][0]['target_uri']
    assert (disk['extent_count'], disk['changed_bytes']) == (1, 65536)
    assert apply['disks'][1]['extent_count'] == 0
    assert results['repeat']['changed'] is False
    assert results['absent']['diff']['before']['snapshot'] == 'migratekit'

    # the simulator agrees: CBT on, no snapshot left (the stun snapshot included)
    state = lab.state()
    assert not state['snapshots']   # the lab answers null for none
    assert state['vms'][0]['cbt'] is True

    # the password never shows up, neither in the output nor in registered results
    password = lab.vcenter['password']
    assert password not in proc.stdout
    assert password not in json.dumps(results)
    # --diff shows CBT before/after
    assert '-    "cbt_enabled": false,' in proc.stdout and '+    "cbt_enabled": true,' in proc.stdout
