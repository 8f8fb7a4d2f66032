# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dynamic inventory recipe of docs/inventory.md, with the real
community.vmware.vmware_vm_inventory plugin against the lab: the VMs, their
uuid, moid and disks come from vCenter, and the full_sync playbook migrates
them from that inventory (targets equal the disks' VMDK chains).

community.vmware (and vmware.vmware, which it needs) come from PyPI's `ansible`
package into .venv-tools/collections (scripts/tools-venv.sh), a collections
path of the tests only.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    PYTHON,
    REPO_ROOT,
    VENV_BIN,
    ansible_env,
    run_playbook,
)

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import compare_chain  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

RECIPE = os.path.join(REPO_ROOT, 'docs', 'inventory', 'migratekit.vmware.yml')
TEST_COLLECTIONS = os.path.join(REPO_ROOT, '.venv-tools', 'collections')
TARGETS_RULE = "'nbd://volumes.example.com:10809/' ~ config.name ~ '-'"


def test_vmware_vm_inventory_recipe_drives_a_full_sync(lab_factory, tmp_path):
    if not os.path.isdir(os.path.join(TEST_COLLECTIONS, 'ansible_collections', 'community', 'vmware')):
        pytest.fail('community.vmware is missing from %s: run scripts/tools-venv.sh (make test does)' % TEST_COLLECTIONS)
    lab = lab_factory(vms=2, disks=2, disk_size=4 << 20)
    for index, vm in enumerate(('VM0', 'VM1')):
        lab.write(vm, 2000, offset=0, length=128 * 1024, seed=index)
        lab.write(vm, 2001, offset=1 << 20, length=64 * 1024, seed=10 + index)
    with open(RECIPE) as handle:
        recipe = handle.read()
    # the lab's targets are unix sockets: the recipe's naming rule with the lab's names
    assert TARGETS_RULE in recipe
    recipe = recipe.replace(TARGETS_RULE + ')', "'nbd+unix:///?socket=%s/nbd/' ~ config.name ~ '-')"
                            " | map('regex_replace', '$', '.sock')" % lab.dir)
    inventory = tmp_path / 'lab.vmware.yml'
    inventory.write_text(recipe)
    vcenter = lab.vcenter
    env = {
        'ANSIBLE_COLLECTIONS_PATH': os.pathsep.join([os.environ['ANSIBLE_COLLECTIONS_PATH'], TEST_COLLECTIONS]),
        'ANSIBLE_DEPRECATION_WARNINGS': '0',
        # one environment for the plugin and the roles, as an AWX vCenter credential gives it
        'VMWARE_HOST': vcenter['hostname'], 'VMWARE_PORT': str(vcenter['port']),
        'VMWARE_USER': vcenter['username'], 'VMWARE_PASSWORD': vcenter['password'],
        'VMWARE_VALIDATE_CERTS': 'false',
        'MIGRATEKIT_STATE_DIR': str(tmp_path / 'state'), 'MIGRATEKIT_RUN_DIR': str(tmp_path / 'run'),
    }
    listed = subprocess.run([os.path.join(VENV_BIN, 'ansible-inventory'), '-i', str(inventory), '--list'],
                            env=ansible_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    hosts = json.loads(listed.stdout)
    assert sorted(hosts['migratekit_vms']['hosts']) == ['VM0', 'VM1']
    for name in ('VM0', 'VM1'):
        hostvars, vm = hosts['_meta']['hostvars'][name], lab.vm(name)
        assert hostvars['migratekit_vm_uuid'] == vm['uuid'] and hostvars['migratekit_vm_moid'] == vm['moid']
        assert hostvars['migratekit_vm_disks'] == {'2000': 'Hard disk 1', '2001': 'Hard disk 2'}
        assert hostvars['migratekit_targets'] == dict((str(disk['key']), disk['target_uri']) for disk in vm['disks'])
    run = run_playbook(['-i', str(inventory), os.path.join(REPO_ROOT, 'playbooks', 'full_sync.yml'),
                        '-e', json.dumps({'migratekit_datastore_paths': lab.datastores,
                                          'ansible_python_interpreter': PYTHON})],
                       env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:]
    for name in ('VM0', 'VM1'):
        state = json.load(open(str(tmp_path / 'state' / (name + '.json'))))
        for disk in lab.vm(name)['disks']:
            assert state['disks'][str(disk['key'])]['change_id']
            assert compare_chain(lab.live(name, disk['key'])['image'], disk['target_image'])
