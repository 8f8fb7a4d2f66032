# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real module through Ansible (ad-hoc ``ansible localhost -m ...``) against nbdkit servers."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil
import subprocess
import threading

import pytest

try:
    from http.server import BaseHTTPRequestHandler, HTTPServer
except ImportError:  # pragma: no cover
    pytest.skip('python 3 only', allow_module_level=True)

from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.tests.integration.helpers import (
    ANSIBLE,
    ANSIBLE_DOC,
    MiB,
    compare,
    digest,
    garbage,
    patterned_chunks,
    run_module,
    write_image,
)

pytest.importorskip('nbd')
pytestmark = pytest.mark.skipif(not (os.path.exists(ANSIBLE) and shutil.which('nbdkit')),
                                reason='needs the venv ansible and nbdkit')
SIZE = 32 * MiB
VM = '4207c2a6-0a3e-4a3f-9c6e-3f1a2b3c4d5e'
MODULE = 'nbd_incremental_copy'


@pytest.fixture
def disk(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 21, count=12))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    return {'source': source, 'target': target, 'src': src, 'dst': dst, 'state': str(tmp_path / 'state.json')}


class VmaHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.server.updates.append((self.path, self.headers.get('Authorization'), json.loads(body.decode())))
        payload = b'{"status": "success"}'
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def vma():
    server = HTTPServer(('127.0.0.1', 0), VmaHandler)
    server.updates = []
    thread = threading.Thread(target=server.serve_forever)
    thread.daemon = True
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_check_mode_apply_and_repeat_with_nothing_to_copy(disk, vma):
    args = {'source': disk['src'].uri, 'target': disk['dst'].uri, 'sync_type': 'full',
            'state_file': disk['state'], 'vm_uuid': VM, 'disk_key': 2000, 'change_id': '52 de/3',
            'vma_url': 'http://127.0.0.1:%d' % vma.server_address[1], 'token': 'sekrit-token',
            'progress_interval': 0.2}
    before = digest(disk['target'])

    planned = run_module(MODULE, args, check=True, env={'MIGRATEKIT_PROGRESS_JOB_ID': 'job-7'}).result
    assert planned['changed'] is True, planned
    assert planned['plan']['data_bytes'] + planned['plan']['zero_bytes'] == SIZE
    assert digest(disk['target']) == before
    assert not os.path.exists(disk['state'])

    run = run_module(MODULE, args, env={'MIGRATEKIT_PROGRESS_JOB_ID': 'job-7'})
    applied = run.result
    assert applied['changed'] is True, applied
    compare(disk['source'], disk['target'])
    assert applied['bytes_written'] + applied['bytes_zeroed'] == SIZE
    assert applied['committed_change_id'] == '52 de/3' and applied['state_updated'] is True
    assert sync_state.load(disk['state'])['disks']['2000']['change_id'] == '52 de/3'
    assert 'sekrit-token' not in run.output
    # progress went to the VMA: start at 0 %, final at 100 % (the disk never ends the job), with the token
    assert vma.updates, 'no progress update reached the VMA'
    paths = set(path for path, _auth, _body in vma.updates)
    assert paths == {'/api/v1/progress/job-7/update'}
    assert all(auth == 'Bearer sekrit-token' for _path, auth, _body in vma.updates)
    final = vma.updates[-1][2]
    assert final['status'] == 'in_progress' and final['percent'] == 100.0
    assert final['disk_id'] == 'disk-2000' and final['sync_type'] == 'full'
    assert final['bytes_transferred'] == SIZE and final['total_bytes'] == SIZE

    repeat = dict(args, extents=[], sync_type='incremental')
    repeat.pop('vma_url')
    again = run_module(MODULE, repeat).result
    assert again['changed'] is False, again
    assert again['state_updated'] is False and again['committed_change_id'] == '52 de/3'


def test_persistent_error_fails_the_task_and_keeps_the_state(disk, nbdkit):
    sync_state.commit_disk(disk['state'], VM, 2000, 'cbt/1', SIZE, disk['dst'].uri)
    before = open(disk['state']).read()
    failing = nbdkit('bad', 'file', disk['target'], 'error=EIO', 'error-pwrite-rate=100%', 'error-zero-rate=100%',
                     filters=['error'])
    args = {'source': disk['src'].uri, 'target': failing.uri, 'extents': [[MiB, 65536]],
            'sync_type': 'full', 'state_file': disk['state'], 'vm_uuid': VM, 'disk_key': 2000,
            'change_id': 'cbt/2', 'retries': 1}
    run = run_module(MODULE, args)
    result = run.result
    assert run.failed, result
    assert 'to target failed for disk 2000 at offset' in result['msg']
    assert result['failed_disk'] == 'disk 2000' and result['failed_offset'] is not None
    assert open(disk['state']).read() == before


def test_bad_input_fails_before_writing(disk):
    before = digest(disk['target'])
    args = {'source': disk['src'].uri, 'target': disk['dst'].uri, 'extents': [[SIZE - 1, 2]]}
    run = run_module(MODULE, args)
    result = run.result
    assert run.failed
    assert 'validate extents failed' in result['msg'] and 'beyond the disk size' in result['msg']
    assert digest(disk['target']) == before


def test_documentation_renders():
    out = subprocess.run([ANSIBLE_DOC, 'migratekit.migration.' + MODULE],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    for option in ('source', 'target', 'extents_file', 'requests_in_flight', 'vma_url', 'job_id', 'token'):
        assert option in text
