# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A copy killed with -9 resumes from its last checkpoint, with real nbdkit servers.

The source is slowed by nbdkit's rate filter so that a copy lasts long
enough for checkpoints; the target logs every write (log filter), so the
test counts what was written to it over all the runs.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import re
import signal
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    PYTHON,
    REPO_ROOT,
    NbdkitProcess,
    compare,
    write_image,
)

pytest.importorskip('nbd')

MiB = 1 << 20
SIZE = 96 * MiB
RATE = '48M'            # bits per second on the source: about 6 MiB/s, 16 s for the disk
WRITE_RE = re.compile(r' Write id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+)')

CHILD = '''
import json, sys
sys.path.insert(0, %(collections)r)
from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
result = nbd_copy.copy_disk(*sys.argv[1:3], sync_type='full', checkpoint_file=sys.argv[3], snapshot_moref=sys.argv[4],
                            state_file=sys.argv[5], vm_uuid='vm-1', disk_key=2000, change_id='52 aa/7', connections=1,
                            requests_in_flight=4)
print(json.dumps(result))
'''


def random_image(path, size):
    with open(path, 'wb') as handle:
        for _chunk in range(size // MiB):
            handle.write(os.urandom(MiB))
    return path


def written_bytes(log):
    with open(log) as handle:
        return sum(int(count, 16) for _offset, count in WRITE_RE.findall(handle.read()))


class Server(object):
    """An nbdkit that is started again (same files, same socket) when it did not survive a killed client:
    nbdkit 1.32 was seen to exit, now and then, when a client was killed with requests in flight."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.process = NbdkitProcess(*args, **kwargs)

    @property
    def uri(self):
        if self.process.proc.poll() is not None:
            self.process = NbdkitProcess(*self.args, **self.kwargs)
        return self.process.uri

    def stop(self):
        self.process.stop()


@pytest.fixture
def servers(tmp_path):
    source = random_image(str(tmp_path / 'source.img'), SIZE)
    target = write_image(str(tmp_path / 'target.img'), SIZE)
    log = str(tmp_path / 'target.log')
    src = Server(tmp_path, 'src', 'file', source, 'rate=' + RATE, read_only=True, filters=['rate'])
    dst = Server(tmp_path, 'dst', 'file', target, 'logfile=' + log, 'logappend=true', filters=['log'])
    yield source, target, log, src, dst
    src.stop()
    dst.stop()


def kill_after_a_checkpoint(proc, path, seconds=120):
    """kill -9 ``proc`` once it wrote a checkpoint beyond the one in ``path`` now."""
    def watermark():
        try:
            with open(path) as handle:
                return json.load(handle)['watermark']
        except (IOError, ValueError):
            return 0
    before, deadline = watermark(), time.monotonic() + seconds
    while watermark() <= before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, 'the copy ended before a new checkpoint'
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def copy(tmp_path, src, dst, snapshot='snapshot-12', kill=False):
    argv = [PYTHON, '-c', CHILD % {'collections': os.path.join(REPO_ROOT, 'build', 'collections')}, src.uri, dst.uri,
            str(tmp_path / 'disk.checkpoint.json'), snapshot, str(tmp_path / 'state.json')]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if kill:
        kill_after_a_checkpoint(proc, str(tmp_path / 'disk.checkpoint.json'))
        return None
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def checkpoint(tmp_path):
    with open(str(tmp_path / 'disk.checkpoint.json')) as handle:
        return json.load(handle)


def committed(tmp_path):
    try:
        with open(str(tmp_path / 'state.json')) as handle:
            return json.load(handle)['disks'].get('2000')
    except IOError:
        return None


def test_a_copy_killed_twice_resumes_and_writes_each_byte_about_once(tmp_path, servers):
    source, target, log, src, dst = servers
    marks = []
    for _run in range(2):
        assert copy(tmp_path, src, dst, kill=True) is None
        saved = checkpoint(tmp_path)
        assert saved['snapshot'] == 'snapshot-12' and saved['change_id'] == '52 aa/7'
        assert committed(tmp_path) is None, 'a changeId committed before the disk was complete'
        marks.append(saved['watermark'])
        done = saved['watermark'] + sum(end - start for start, end in saved['done_above'])
    assert 0 < marks[0] < marks[1] < SIZE, marks
    result = copy(tmp_path, src, dst)
    assert result['resumed_at_bytes'] == done and result['resume'].startswith('resumed at %d of %d bytes'
                                                                              % (done, SIZE))
    assert result['bytes_written'] == SIZE - done and result['committed_change_id'] == '52 aa/7'
    assert committed(tmp_path)['change_id'] == '52 aa/7'
    assert not os.path.exists(str(tmp_path / 'disk.checkpoint.json')), 'a complete disk keeps no checkpoint'
    compare(source, target)
    total = written_bytes(log)
    assert SIZE <= total <= 1.5 * SIZE, 'written %d bytes for a %d-byte disk' % (total, SIZE)


def test_a_checkpoint_of_another_snapshot_is_dropped_and_the_copy_starts_over(tmp_path, servers):
    source, target, log, src, dst = servers
    assert copy(tmp_path, src, dst, kill=True) is None
    assert checkpoint(tmp_path)['watermark'] > 0
    result = copy(tmp_path, src, dst, snapshot='snapshot-13')
    assert result.get('resumed_at_bytes') is None and result['bytes_written'] == SIZE
    assert result['resume'].startswith('not resumed: the checkpoint is for snapshot snapshot-12, this copy is for '
                                       'snapshot-13'), result
    compare(source, target)


DATA = 48 * 3 * MiB // 2  # the incremental copy's extents
CHILD_INCREMENTAL = '''
import json, sys
sys.path.insert(0, %(collections)r)
from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
from ansible_collections.migratekit.migration.plugins.module_utils.extents import write_extents_file
extents = [(index * 2 * 1048576, 1572864) for index in range(48)]  # 72 MiB: 12 s at the source's rate
write_extents_file(sys.argv[3] + '.extents', {'disk_key': 2000, 'capacity_bytes': %(size)d, 'change_id': '52 aa/8',
                                               'previous_change_id': '52 aa/7', 'sync_type': 'incremental'}, extents)
result = nbd_copy.copy_disk(*sys.argv[1:3], extents_file=sys.argv[3] + '.extents', checkpoint_file=sys.argv[3],
                            snapshot_moref='snapshot-14', connections=1, requests_in_flight=4)
print(json.dumps(result))
'''


def test_an_incremental_copy_resumes_too(tmp_path, servers):
    source, target, log, src, dst = servers
    argv = [PYTHON, '-c', CHILD_INCREMENTAL % {'collections': os.path.join(REPO_ROOT, 'build', 'collections'),
                                               'size': SIZE},
            src.uri, dst.uri, str(tmp_path / 'inc.checkpoint.json')]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    kill_after_a_checkpoint(proc, str(tmp_path / 'inc.checkpoint.json'))
    with open(str(tmp_path / 'inc.checkpoint.json')) as handle:
        saved = json.load(handle)
    # for an incremental copy the watermark is an offset: what was done below it is the extents' bytes there
    below = sum(max(0, min(index * 2 * MiB + 3 * MiB // 2, saved['watermark']) - index * 2 * MiB)
                for index in range(48))
    done = below + sum(end - start for start, end in saved['done_above'])
    assert saved['sync_type'] == 'incremental' and 0 < done < DATA
    argv[3:5] = [src.uri, dst.uri]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['resumed_at_bytes'] == done and result['bytes_written'] == DATA - done
    with open(source, 'rb') as src_file, open(target, 'rb') as dst_file:
        for index in range(48):
            src_file.seek(index * 2 * MiB)
            dst_file.seek(index * 2 * MiB)
            assert src_file.read(3 * MiB // 2) == dst_file.read(3 * MiB // 2), 'extent %d differs' % index
    assert DATA <= written_bytes(log) <= 1.5 * DATA
