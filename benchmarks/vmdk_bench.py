# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file transport's source servers side by side: a VMDK chain through qemu-nbd vs a raw image through nbdkit.

Builds the same disk twice in a temporary directory: a raw sparse image, and a
VMDK chain as a datastore holds it (a monolithicFlat base disk and
``--links - 1`` sparse deltas, the data spread over the links). Serves the
chain as ``nbd_disk_server`` does (qemu-nbd ``--read-only --format=vmdk
--persistent --shared=N``, ``--aio=io_uring`` where the kernel allows it;
argv from the module's own code) and the raw image
with nbdkit's file plugin (read-only), then runs the copy engine's full copy
(block status on, the engine's defaults) from each alternately onto a fresh
``nbdkit memory`` target, and prints medians: wall time of the copy, the
engine's CPU-seconds, and the ratio qemu-nbd / nbdkit.

Usage:  .venv/bin/python benchmarks/vmdk_bench.py --size 1G --runs 5 --json
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import copy_bench  # noqa: E402  (same directory)

MiB = 1 << 20


def build_disks(workdir, size, links, percent, chunk, seed):
    """(chain top descriptor, raw image, allocated bytes): the same data in both."""
    rng = random.Random(seed)
    count = max(1, int(size // chunk * percent / 100.0))
    offsets = sorted(rng.sample(range(size // chunk), count))
    writes = [(index * chunk, rng.randrange(1, 256)) for index in offsets]
    raw = os.path.join(workdir, 'disk.raw')
    with open(raw, 'wb') as handle:
        handle.truncate(size)
        for offset, byte in writes:
            handle.seek(offset)
            handle.write(bytes([byte]) * chunk)
    ds = os.path.join(workdir, 'ds', 'vm')
    os.makedirs(ds)
    top = os.path.join(ds, 'vm.vmdk')
    subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', top,
                           str(size)])
    per_link = -(-len(writes) // links)
    for link in range(links):
        if link:
            child = os.path.join(ds, 'vm-%06d.vmdk' % link)
            subprocess.check_call(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', os.path.basename(top), '-F',
                                   'vmdk', child])
            top = child
        part = writes[link * per_link:(link + 1) * per_link]
        for start in range(0, len(part), 200):
            argv = ['qemu-io', '-f', 'vmdk']
            for offset, byte in part[start:start + 200]:
                argv += ['-c', 'write -q -P 0x%02x %d %d' % (byte, offset, chunk)]
            subprocess.check_call(argv + [top])
    subprocess.check_call(['qemu-img', 'compare', '-q', '-f', 'vmdk', '-F', 'raw', top, raw])
    return top, raw, len(writes) * chunk


class QemuNbd(object):
    """qemu-nbd as nbd_disk_server starts it (the module's argv)."""

    def __init__(self, workdir, path, connections, extra=()):
        copy_bench.link_collection()
        from ansible_collections.migratekit.migration.plugins.module_utils import nbdkit
        sock_dir = os.path.join(workdir, 'qemu')
        os.makedirs(sock_dir, 0o700)
        self.socket = os.path.join(sock_dir, 'chain.sock')
        from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.config import io_uring_usable
        config = {'transport': 'file', 'format': 'vmdk', 'socket': self.socket, 'pidfile': self.socket + '.pid',
                  'qemu_nbd_path': 'qemu-nbd', 'connections': connections, 'path': path,
                  'aio': 'io_uring' if io_uring_usable() else 'threads'}  # as the module's aio=auto
        self.argv = nbdkit.build_argv(config)
        if extra:
            self.argv[-2:-2] = list(extra)
        subprocess.check_call(self.argv)
        with open(config['pidfile']) as handle:
            self.pid = int(handle.read())
        self.uri = nbdkit.socket_uri(self.socket)

    def stop(self):
        try:
            os.kill(self.pid, 15)
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while os.path.exists('/proc/%d' % self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def bench(args):
    copy_bench.link_collection()
    from ansible_collections.migratekit.migration.tests.integration.helpers import NbdkitProcess
    workdir = tempfile.mkdtemp(prefix='vmdk-bench-')
    servers = []
    try:
        top, raw, allocated = build_disks(workdir, args.size, args.links, args.percent, args.chunk, args.seed)
        chain = QemuNbd(workdir, top, args.connections, args.qemu_nbd_arg)
        servers.append(chain)
        plain = NbdkitProcess(workdir, 'raw', 'file', 'file=' + raw, read_only=True)
        servers.append(plain)
        figures = {'qemu-nbd': {'wall': [], 'cpu': [], 'moved': []}, 'nbdkit': {'wall': [], 'cpu': [], 'moved': []}}
        for run in range(args.runs):
            order = ('qemu-nbd', 'nbdkit') if run % 2 == 0 else ('nbdkit', 'qemu-nbd')
            for who in order:
                target = NbdkitProcess(workdir, 'target', 'memory', 'size=%d' % args.size)
                try:
                    source = chain.uri if who == 'qemu-nbd' else plain.uri
                    out = copy_bench.run_engine(workdir, source, target.uri, args, None)
                    figures[who]['wall'].append(out['elapsed'])
                    figures[who]['cpu'].append(out['cpu_s'])
                    figures[who]['moved'].append(out['result']['bytes_written'])
                finally:
                    target.stop()
            if not args.json:
                print('run %d: qemu-nbd chain %.3f s, nbdkit raw %.3f s'
                      % (run + 1, figures['qemu-nbd']['wall'][-1], figures['nbdkit']['wall'][-1]), file=sys.stderr)
        ratios = [a / b for a, b in zip(figures['qemu-nbd']['wall'], figures['nbdkit']['wall'])]
        return {
            'size': args.size, 'links': args.links, 'allocated_bytes': allocated, 'runs': args.runs,
            'connections': args.connections,
            'qemu_nbd_chain_s': round(statistics.median(figures['qemu-nbd']['wall']), 3),
            'nbdkit_raw_s': round(statistics.median(figures['nbdkit']['wall']), 3),
            'ratio': round(statistics.median(ratios), 3),
            'engine_cpu_s_qemu_nbd': round(statistics.median(figures['qemu-nbd']['cpu']), 3),
            'engine_cpu_s_nbdkit': round(statistics.median(figures['nbdkit']['cpu']), 3),
            'bytes_moved_qemu_nbd': int(statistics.median(figures['qemu-nbd']['moved'])),
            'bytes_moved_nbdkit': int(statistics.median(figures['nbdkit']['moved'])),
            'qemu_nbd_all_s': [round(v, 3) for v in figures['qemu-nbd']['wall']],
            'nbdkit_all_s': [round(v, 3) for v in figures['nbdkit']['wall']],
            'qemu_nbd_argv': chain.argv,
        }
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    copy_bench.link_collection()
    from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
    parser = argparse.ArgumentParser(description='qemu-nbd on a VMDK chain vs nbdkit on a raw image, same engine.')
    parser.add_argument('--size', type=copy_bench.parse_size, default=copy_bench.parse_size('1G'))
    parser.add_argument('--links', type=int, default=3, help='links of the chain: the base disk and deltas')
    parser.add_argument('--percent', type=float, default=50.0, help='allocated share of the disk')
    parser.add_argument('--chunk', type=copy_bench.parse_size, default=copy_bench.parse_size('1M'))
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--connections', type=int, default=nbd_copy.DEFAULT_CONNECTIONS)
    parser.add_argument('--request-size', type=copy_bench.parse_size, default=nbd_copy.DEFAULT_REQUEST_SIZE)
    parser.add_argument('--requests-in-flight', type=int, default=nbd_copy.DEFAULT_REQUESTS_IN_FLIGHT)
    parser.add_argument('--qemu-nbd-arg', action='append', default=[],
                        help='an extra qemu-nbd argument (repeatable), e.g. --qemu-nbd-arg=--aio=io_uring')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    result = bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print('%s: %s' % (key, value))
    return 0


if __name__ == '__main__':
    sys.exit(main())
