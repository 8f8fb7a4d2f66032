# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress where the user looks: during a long copy the play's output shows each disk's progress
(disk, percent, bytes, rate, ETA) at least every migratekit_progress_log_interval seconds.

One lab VM with one 16 MiB disk whose target is the lab's image behind nbdkit's rate filter
(2 MiB/s), so that the full copy of its 12 MiB of data takes several seconds.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    ANSIBLE_PLAYBOOK,
    REPO_ROOT,
    MiB,
    NbdkitProcess,
    ansible_env,
    processes_mentioning,
)

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import Lab, compare_chain  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

KEY = 2000
INTERVAL = 2
LINE_RE = re.compile(r'"msg": "VM VM0, disk 2000 \(Hard disk 1\), full: ([\d.]+) % \(([\d.]+) MiB of ([\d.]+) MiB\), '
                     r'([\d.]+) MiB/s, ETA (\d+ s|unknown)"')


def test_a_slow_copy_shows_its_progress_while_it_runs(tmp_path):
    base = str(tmp_path)
    lab = Lab.up(os.path.join(base, 'lab'), vms=1, disks=1, disk_size=16 * MiB, watch_pid=os.getpid())
    target = None
    try:
        lab.write('VM0', KEY, offset=0, length=12 * MiB, seed=3)
        target = NbdkitProcess(base, 'slow-target', 'file', lab.disk('VM0', KEY)['target_image'], 'rate=2M',
                               filters=['rate'])
        extra = {'migratekit_state_dir': os.path.join(base, 'state'), 'migratekit_run_dir': os.path.join(base, 'r'),
                 'migratekit_progress_log_interval': INTERVAL, 'migratekit_targets': {str(KEY): target.uri}}
        proc = subprocess.Popen([ANSIBLE_PLAYBOOK, '-i', lab.inventory, '-e', json.dumps(extra),
                                 os.path.join(REPO_ROOT, 'playbooks', 'full_sync.yml')],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ansible_env(),
                                universal_newlines=True)
        seen, started, out = [], None, []
        for line in proc.stdout:
            out.append(line)
            now = time.monotonic()
            if 'Start the copy of the disk in the background' in line:
                started = now
            match = LINE_RE.search(line)
            if match:
                seen.append((now, float(match.group(1)), float(match.group(2)), float(match.group(3)),
                             float(match.group(4)), match.group(5)))
        assert proc.wait(timeout=300) == 0, ''.join(out[-60:])
        output = ''.join(out)
        with open(os.path.join(base, 'run.log'), 'w') as handle:
            handle.write(output)
        # several lines while the copy ran, each newer than the last, with rate and ETA
        assert len(seen) >= 2, output[-4000:]
        assert [s[1] for s in seen] == sorted(s[1] for s in seen) and seen[-1][1] < 100
        assert all(s[3] == 16.0 for s in seen) and all(s[2] <= 16.0 for s in seen)
        assert all(s[4] > 0 for s in seen[1:]) and all(s[5].endswith(' s') for s in seen[1:])
        # at least every INTERVAL seconds, plus the poll's own tasks (a few seconds on a loaded machine)
        gaps = [b[0] - a[0] for a, b in zip([(started,)] + seen, seen)]
        print('\nprogress lines: %s; gaps (s): %s' % ([s[1] for s in seen], [round(g, 1) for g in gaps]))
        assert max(gaps) <= INTERVAL + 10, gaps
        assert compare_chain(lab.live('VM0', KEY)['image'], lab.disk('VM0', KEY)['target_image'])
        assert processes_mentioning('.progress.json') == []
    finally:
        if target is not None:
            target.stop()
        lab.down()
