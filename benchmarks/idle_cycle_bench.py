# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an idle incremental cycle costs: CPU-seconds per VM when nothing changed.

Scheduled incremental syncs run every few minutes over hundreds of VMs, and
most of them find nothing to copy; their cost is the appliance's and the
controller's CPU. This brings up a lab of ``--vms`` VMs, syncs them in full
once (not measured), then runs ``incremental_sync`` ``--runs`` times with no
guest write in between, and reports per run the wall time and the CPU-seconds
of ansible-playbook and everything it ran (its workers, the modules, the
processes they started and waited for), per VM.

    .venv/bin/python benchmarks/idle_cycle_bench.py --vms 20 --forks 10 --runs 3 --json
"""
from __future__ import (absolute_import, division, print_function)

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, 'tests', 'lab'))
sys.path.insert(0, HERE)

from copy_bench import link_collection  # noqa: E402  (the collection importable as tests/conftest.py makes it)

RECAP_RE = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', re.M)
TASK_RE = re.compile(r'^TASK \[', re.M)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_playbook(lab, base, name, forks):
    from ansible_collections.migratekit.migration.tests.integration.helpers import ANSIBLE_PLAYBOOK, ansible_env
    extra = {'migratekit_state_dir': os.path.join(base, 'state'), 'migratekit_run_dir': os.path.join(base, 'r')}
    args = [ANSIBLE_PLAYBOOK, '-i', lab.inventory, '-f', str(forks), '-e', json.dumps(extra),
            os.path.join(REPO_ROOT, 'playbooks', name)]
    cpu, started = children_cpu(), time.monotonic()
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=ansible_env(), check=False)
    elapsed, cpu = time.monotonic() - started, children_cpu() - cpu
    recap = dict((m.group(1), (int(m.group(3)), int(m.group(5)))) for m in RECAP_RE.finditer(proc.stdout))
    if proc.returncode != 0 or any(failed for _changed, failed in recap.values()):
        raise SystemExit('%s failed:\n%s' % (name, proc.stdout[-4000:]))
    return {'wall_s': round(elapsed, 2), 'cpu_s': round(cpu, 2), 'changed': sum(c for c, _f in recap.values()),
            'tasks': len(TASK_RE.findall(proc.stdout))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--vms', type=int, default=20)
    parser.add_argument('--disks', type=int, default=2)
    parser.add_argument('--forks', type=int, default=10)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args()
    link_collection()
    os.environ.setdefault('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, 'build', 'collections'))
    os.environ.setdefault('ANSIBLE_PYTHON_INTERPRETER', os.path.join(REPO_ROOT, '.venv', 'bin', 'python'))
    from lab import Lab
    base = tempfile.mkdtemp(prefix='idle-bench-')
    lab = Lab.up(os.path.join(base, 'lab'), vms=args.vms, disks=args.disks, disk_size=16 << 20,
                 watch_pid=os.getpid())
    try:
        for vm in lab.vms:
            for disk in vm['disks']:
                lab.write(vm['name'], disk['key'], offset=0, length=64 * 1024, seed=disk['key'])
        run_playbook(lab, base, 'full_sync.yml', args.forks)
        runs = [run_playbook(lab, base, 'incremental_sync.yml', args.forks) for _run in range(args.runs)]
    finally:
        lab.down()
        shutil.rmtree(base, ignore_errors=True)
    cpu_per_vm = [run['cpu_s'] / args.vms for run in runs]
    result = {
        'vms': args.vms, 'disks': args.disks, 'forks': args.forks, 'runs': runs,
        'cpu_s_per_vm': round(statistics.median(cpu_per_vm), 3),
        'wall_s': statistics.median(run['wall_s'] for run in runs),
        'changed': [run['changed'] for run in runs],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in sorted(result.items()):
            print('%s: %s' % (key, value))


if __name__ == '__main__':
    main()
