# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Side-by-side benchmark of the copy engine (plugins/module_utils/nbd_copy.py) and nbdcopy.

Starts its own nbdkit servers on unix sockets in a temporary directory, runs
the engine and nbdcopy alternately on the same source, each onto a fresh
target, and prints medians (``--json``: one JSON object).

  --mode full          sparse source (nbdkit sparse-random, ~50 % allocated) ->
                       fresh nbdkit memory target; nbdcopy with its defaults;
                       the engine as a whole-disk copy with its defaults.
  --mode incremental   scattered changed blocks of --block bytes covering
                       --changed-percent of a fully written disk (nbdkit pattern).
                       The engine gets the extents; nbdcopy gets the same disk
                       behind nbdkit's extentlist filter, so that only those
                       extents are allocated, and --target-is-zero so that it
                       leaves the rest alone as the engine does: both move the
                       same bytes.
  --latency-ms N       nbdkit's delay filter adds N ms to every read, write and
                       zero on both servers.

The engine runs in a child process (the same interpreter) so that its peak RSS
(``ru_maxrss``, interpreter included) is its own; its time is the
``copy_disk()`` call: connect, validate, copy, flush (``ours_s``, ``ratio``);
``ours_process_s`` / ``ratio_process`` also count starting Python and importing
the engine. nbdcopy's time is its process's wall time (it connects and flushes
too).

Usage:  .venv/bin/python benchmarks/copy_bench.py --mode full --size 4G --runs 3 --json
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
COLLECTIONS_ROOT = os.path.join(REPO_ROOT, 'build', 'collections')

SUFFIXES = {'': 1, 'B': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3, 'T': 1024 ** 4}


def parse_size(text):
    text = str(text).strip().upper().rstrip('IB') if str(text).upper().endswith('IB') else str(text).strip().upper()
    unit = text[-1] if text and text[-1] in SUFFIXES else ''
    number = text[:-1] if unit else text
    return int(float(number) * SUFFIXES[unit])


def link_collection():
    """Make ansible_collections.migratekit.migration importable (as tests/conftest.py does)."""
    namespace_dir = os.path.join(COLLECTIONS_ROOT, 'ansible_collections', 'migratekit')
    link = os.path.join(namespace_dir, 'migration')
    if not os.path.isdir(namespace_dir):
        os.makedirs(namespace_dir)
    if not os.path.islink(link) and not os.path.exists(link):
        try:
            os.symlink(REPO_ROOT, link)
        except OSError:
            pass
    if COLLECTIONS_ROOT not in sys.path:
        sys.path.insert(0, COLLECTIONS_ROOT)


# ---------------------------------------------------------------- servers (tests/integration/helpers.py:NbdkitProcess)

def delay_args(latency_ms):
    if not latency_ms:
        return [], []
    value = '%sms' % latency_ms
    return ['delay'], ['delay-read=' + value, 'delay-write=' + value, 'delay-zero=' + value]


def make_extents(size, block, percent, seed):
    """Sorted, non-adjacent-merged 64 KiB blocks covering ``percent`` of the disk."""
    blocks = size // block
    count = max(1, int(blocks * percent / 100.0))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(blocks), count))
    extents = []
    for index in chosen:
        offset = index * block
        if extents and extents[-1][0] + extents[-1][1] == offset:
            extents[-1][1] += block
        else:
            extents.append([offset, block])
    return extents


# ---------------------------------------------------------------- the engine (child process)

def engine_child(spec_path):
    link_collection()
    from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
    with open(spec_path) as handle:
        spec = json.load(handle)
    started = time.monotonic()
    result = nbd_copy.copy_disk(spec['source'], spec['target'], extents_file=spec.get('extents_file'),
                                sync_type=spec.get('sync_type'), connections=spec['connections'],
                                request_size=spec['request_size'], requests_in_flight=spec['requests_in_flight'])
    elapsed = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({'elapsed': elapsed, 'peak_rss_kib': usage.ru_maxrss, 'cpu_s': usage.ru_utime + usage.ru_stime,
                      'result': result}))


def run_engine(workdir, source_uri, target_uri, args, extents_file):
    spec = {'source': source_uri, 'target': target_uri, 'extents_file': extents_file,
            'sync_type': 'incremental' if extents_file else 'full', 'connections': args.connections,
            'request_size': args.request_size, 'requests_in_flight': args.requests_in_flight}
    spec_path = os.path.join(workdir, 'engine-spec.json')
    with open(spec_path, 'w') as handle:
        json.dump(spec, handle)
    started = time.monotonic()
    out = subprocess.check_output([sys.executable, os.path.abspath(__file__), '--engine-child', spec_path])
    wall = time.monotonic() - started
    result = json.loads(out.decode().strip().splitlines()[-1])
    result['process_s'] = wall
    return result


def run_nbdcopy(source_uri, target_uri, extra):
    argv = ['nbdcopy'] + extra + [source_uri, target_uri]
    started = time.monotonic()
    subprocess.check_call(argv)
    return time.monotonic() - started


# ---------------------------------------------------------------- the benchmark

def bench(args):
    size = args.size
    link_collection()
    from ansible_collections.migratekit.migration.tests.integration.helpers import NbdkitProcess
    workdir = tempfile.mkdtemp(prefix='copy-bench-')
    filters, delays = delay_args(args.latency_ms)
    servers = []
    extents_file = None
    try:
        if args.mode == 'full':
            source = NbdkitProcess(workdir, 'source', 'sparse-random', 'size=%d' % size, 'seed=%d' % args.seed,
                                   'percent=50', *delays, filters=filters, read_only=True)
            nbdcopy_extra = []
            engine_source = source
            bytes_expected = None
        else:
            extents = make_extents(size, args.block, args.changed_percent, args.seed)
            from ansible_collections.migratekit.migration.plugins.module_utils.extents import write_extents_file
            extents_file = os.path.join(workdir, 'extents.json')
            write_extents_file(extents_file, {'disk_key': 2000, 'capacity_bytes': size, 'change_id': 'bench/2',
                                              'previous_change_id': 'bench/1', 'sync_type': 'incremental'},
                               extents)
            extentlist = os.path.join(workdir, 'extentlist.txt')
            with open(extentlist, 'w') as handle:
                for offset, length in extents:
                    handle.write('%d %d\n' % (offset, length))
            # Same data for both: pattern (every block non-zero); nbdcopy sees only the extents allocated.
            source = NbdkitProcess(workdir, 'source', 'pattern', 'size=%d' % size, *delays, filters=filters,
                                   read_only=True)
            sparse_source = NbdkitProcess(workdir, 'source-extents', 'pattern', 'size=%d' % size,
                                          'extentlist=' + extentlist, *delays,
                                          filters=['extentlist'] + filters, read_only=True)
            servers.append(sparse_source)
            engine_source = source
            nbdcopy_extra = ['--target-is-zero']
            bytes_expected = sum(length for _offset, length in extents)
        servers.append(source)
        nbdcopy_source = servers[0] if args.mode == 'incremental' else source

        ours, theirs, rss, moved, cpu, process = [], [], [], [], [], []
        for run in range(args.runs):
            order = ('ours', 'nbdcopy') if run % 2 == 0 else ('nbdcopy', 'ours')
            for who in order:
                target = NbdkitProcess(workdir, 'target', 'memory', 'size=%d' % size, *delays, filters=filters)
                try:
                    if who == 'ours':
                        out = run_engine(workdir, engine_source.uri, target.uri, args, extents_file)
                        ours.append(out['elapsed'])
                        process.append(out['process_s'])
                        rss.append(out['peak_rss_kib'] / 1024.0)
                        cpu.append(out['cpu_s'])
                        moved.append(out['result']['bytes_written'])
                        settings = dict((key, out['result'][key])
                                        for key in ('connections', 'request_size', 'requests_in_flight'))
                    else:
                        theirs.append(run_nbdcopy(nbdcopy_source.uri, target.uri, nbdcopy_extra))
                finally:
                    target.stop()
            if not args.json:
                print('run %d: ours %.3f s, nbdcopy %.3f s' % (run + 1, ours[-1], theirs[-1]), file=sys.stderr)
        ratios = [a / b for a, b in zip(ours, theirs)]
        result = {
            'mode': args.mode,
            'size': size,
            'latency_ms': args.latency_ms,
            'changed_percent': args.changed_percent if args.mode == 'incremental' else None,
            'bytes_moved': int(statistics.median(moved)),
            'bytes_expected': bytes_expected,
            'ours_s': round(statistics.median(ours), 3),
            'nbdcopy_s': round(statistics.median(theirs), 3),
            'ratio': round(statistics.median(ratios), 3),
            'ours_peak_rss_mib': round(max(rss), 1),
            'ours_cpu_s': round(statistics.median(cpu), 3),
            'ours_process_s': round(statistics.median(process), 3),
            'ratio_process': round(statistics.median([a / b for a, b in zip(process, theirs)]), 3),
            'runs': args.runs,
            'ours_all_s': [round(value, 3) for value in ours],
            'nbdcopy_all_s': [round(value, 3) for value in theirs],
        }
        result.update(settings)
        return result
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == '--engine-child':
        engine_child(argv[1])
        return 0
    link_collection()
    from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
    parser = argparse.ArgumentParser(description='Compare the copy engine with nbdcopy.')
    parser.add_argument('--mode', choices=('full', 'incremental'), default='full')
    parser.add_argument('--size', type=parse_size, default=parse_size('4G'))
    parser.add_argument('--changed-percent', type=float, default=2.0)
    parser.add_argument('--block', type=parse_size, default=parse_size('64K'),
                        help='changed block size in incremental mode (default 64K)')
    parser.add_argument('--latency-ms', type=float, default=0)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--connections', type=int, default=nbd_copy.DEFAULT_CONNECTIONS)
    parser.add_argument('--request-size', type=parse_size, default=nbd_copy.DEFAULT_REQUEST_SIZE)
    parser.add_argument('--requests-in-flight', type=int, default=nbd_copy.DEFAULT_REQUESTS_IN_FLIGHT)
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    args = parser.parse_args(argv)
    if args.latency_ms == int(args.latency_ms):
        args.latency_ms = int(args.latency_ms)
    for tool in ('nbdkit', 'nbdcopy'):
        if shutil.which(tool) is None:
            parser.error('%s is not installed' % tool)
    result = bench(args)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key in sorted(result):
            print('%-20s %s' % (key, result[key]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
