# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make demo` as a new user runs it: the whole migration on a fresh lab (VMDK disks, one VM with a user's
snapshot), every target equal to its disk's chain, the user's snapshot kept, then nothing left."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import REPO_ROOT, processes_mentioning

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')


def test_demo(tmp_path):
    pytest.importorskip('nbd')
    demo_dir = str(tmp_path / 'd')
    started = time.monotonic()
    proc = subprocess.run([os.path.join(REPO_ROOT, 'scripts', 'demo.sh'), '-e', 'migratekit_demo_dir=' + demo_dir],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600,
                          check=False, env=dict(os.environ, ANSIBLE_NOCOLOR='1'))
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert proc.stdout.count('target == source: yes') == 4, proc.stdout[-3000:]
    for vm in ('VM0', 'VM1'):
        for key in (2000, 2001):
            assert '%s disk %d: full sync: full' % (vm, key) in proc.stdout
    assert 'incremental sync: incremental' in proc.stdout and 'cutover: incremental' in proc.stdout
    assert 'Done: every target equals its source.' in proc.stdout
    # VM1's user snapshot, taken before the first sync, is still there at the end
    line = [text for text in proc.stdout.splitlines() if 'VM1 snapshots after the demo:' in text]
    assert line and 'user-before-sync' in line[0], proc.stdout[-3000:]
    assert processes_mentioning(demo_dir) == []
    assert elapsed < 180, 'the demo took %.0f s' % elapsed
