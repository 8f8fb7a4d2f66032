# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A sync cycle as an unprivileged user, as in an execution environment (uid 1000, no root).

The lab and the playbook run as ``nobody`` (setpriv, no user to create): the
roles' default directories (/var/lib/migratekit/state, /run/migratekit) are
root's and the cycle fails on them, naming the path; with the directories the
EE of docs/awx.md names in MIGRATEKIT_STATE_DIR and MIGRATEKIT_RUN_DIR, the
cycle copies the disk and its state file belongs to that user.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import REPO_ROOT, VENV_BIN, ansible_env

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import Lab, compare_chain  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

NOBODY = 65534
SETPRIV = ['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups', '--']


def as_nobody(argv, home, extra=None, timeout=300):
    # nobody's passwd home is /nonexistent, and Ansible takes the remote temporary directory of an async task
    # (the background copy) from there, not from HOME: give it one, as a real user's home would
    env = ansible_env(dict(extra or {}, HOME=home, ANSIBLE_REMOTE_TMP=os.path.join(home, '.ansible', 'tmp'),
                           ANSIBLE_ASYNC_DIR=os.path.join(home, '.ansible_async')))
    env.pop('ANSIBLE_PYTHON_INTERPRETER', None)  # the lab's inventory names it
    return subprocess.run(SETPRIV + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, check=False)


@pytest.fixture
def nobody_home():
    if os.geteuid() != 0:
        pytest.skip('switching to an unprivileged user needs root (CI and make test run as root)')
    home = tempfile.mkdtemp(prefix='migratekit-nobody-')  # pytest's tmp_path is 0700, closed to nobody
    os.chmod(home, 0o755)
    os.chown(home, NOBODY, NOBODY)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_cycle_as_an_unprivileged_user(nobody_home):
    lab_dir = os.path.join(nobody_home, 'lab')
    up = as_nobody([os.path.join(REPO_ROOT, 'tests', 'lab', 'labctl'), 'up', '--dir', lab_dir, '--vms', '1',
                    '--disks', '1', '--disk-size', '4M'], nobody_home, timeout=120)
    assert up.returncode == 0, up.stdout
    lab = Lab(lab_dir)
    try:
        lab.write('VM0', 2000, offset=0, length=256 * 1024, seed=3)
        playbook = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', lab.inventory,
                    os.path.join(REPO_ROOT, 'playbooks', 'full_sync.yml')]
        refused = as_nobody(playbook, nobody_home)
        assert refused.returncode != 0
        assert 'cannot open the lock file /var/lib/migratekit/state/VM0.cycle.lock: Permission denied' \
            in refused.stdout, refused.stdout[-4000:]
        state_dir, run_dir = os.path.join(nobody_home, 'state'), os.path.join(nobody_home, 'run')
        run = as_nobody(playbook, nobody_home, {'MIGRATEKIT_STATE_DIR': state_dir, 'MIGRATEKIT_RUN_DIR': run_dir})
        assert run.returncode == 0, run.stdout[-6000:]
        state_file = os.path.join(state_dir, 'VM0.json')
        assert os.stat(state_file).st_uid == NOBODY
        with open(state_file) as handle:
            assert json.load(handle)['disks']['2000']['change_id']
        disk = lab.disk('VM0', 2000)
        assert compare_chain(lab.live('VM0', 2000)['image'], disk['target_image'])
        assert os.listdir(run_dir) == []  # the cycle's private directory is gone
    finally:
        lab.down()
