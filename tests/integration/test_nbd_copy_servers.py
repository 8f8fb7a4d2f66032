# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy engine against real nbdkit servers on unix sockets (no mocks).

Each test starts its own servers in a temporary directory and checks what a
user checks: the target equals the source byte for byte (qemu-img compare),
the state file holds the new changeId, or is untouched when the copy fails.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import random
import shutil
import time

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy, sync_state
from ansible_collections.migratekit.migration.plugins.module_utils.extents import write_extents_file
from ansible_collections.migratekit.migration.tests.integration.helpers import (
    MiB,
    compare,
    digest,
    garbage,
    patterned_chunks,
    write_image,
)

pytest.importorskip('nbd')
pytestmark = pytest.mark.skipif(not (shutil.which('nbdkit') and shutil.which('qemu-img')),
                                reason='needs nbdkit and qemu-img')

SIZE = 64 * MiB
VM = '4207c2a6-0a3e-4a3f-9c6e-3f1a2b3c4d5e'


def fast(**kwargs):
    kwargs.setdefault('retry_delay', 0.01)
    return kwargs


# ---------------------------------------------------------------- full copies

def test_full_copy_onto_garbage_equals_the_source(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 1))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    state = str(tmp_path / 'state.json')
    result = nbd_copy.copy_disk(src.uri, dst.uri, state_file=state, vm_uuid=VM, disk_key=2000,
                                change_id='52 aa/1', verify='checksum')
    compare(source, target)
    assert result['changed'] and result['verified'] and result['flushed']
    assert result['bytes_zeroed'] > SIZE // 2, 'holes and zero data are written as zeros on a used target'
    assert result['bytes_written'] + result['bytes_zeroed'] == SIZE
    assert result['bytes_skipped'] == 0
    assert sync_state.load(state)['disks']['2000']['change_id'] == '52 aa/1'
    assert result['committed_change_id'] == '52 aa/1'


def test_full_copy_onto_a_zero_target_skips_holes(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 2))
    target = str(tmp_path / 'target.img')
    write_image(target, SIZE)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    result = nbd_copy.copy_disk(src.uri, dst.uri, target_is_zero=True, connections=2)
    compare(source, target)
    assert result['bytes_zeroed'] == 0
    assert result['bytes_skipped'] > SIZE // 2
    assert result['throughput_bps'] > 0


def test_full_copy_from_a_server_without_block_status_uses_zero_detection(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 3))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True, filters=['noextents'])
    dst = nbdkit('dst', 'file', target)
    result = nbd_copy.copy_disk(src.uri, dst.uri)
    compare(source, target)
    assert result['bytes_zeroed'] > SIZE // 2


def test_full_copy_from_allocated_extents_zeroes_the_gaps(tmp_path, nbdkit):
    chunks = [(MiB, b'\x11' * MiB), (40 * MiB, b'\x22' * 65536)]
    source = write_image(str(tmp_path / 'source.img'), SIZE, chunks)
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    result = nbd_copy.copy_disk(src.uri, dst.uri, extents=[[MiB, MiB], [40 * MiB, 65536]], sync_type='full')
    compare(source, target)
    assert result['bytes_written'] == MiB + 65536
    assert result['bytes_zeroed'] == SIZE - MiB - 65536


def test_target_that_cannot_zero_gets_zero_filled_writes(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 4, count=10))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target, filters=['nozero'], )
    result = nbd_copy.copy_disk(src.uri, dst.uri, request_size=1 * MiB)
    compare(source, target)
    assert result['bytes_zeroed'] > 0


# ---------------------------------------------------------------- incremental copies

def make_incremental(tmp_path, size, seed):
    """Old image on the target, new image = old + changes at scattered extents (last byte included)."""
    rng = random.Random(seed)
    old = write_image(str(tmp_path / 'old.img'), size, patterned_chunks(size, seed, count=10))
    new = str(tmp_path / 'new.img')
    shutil.copyfile(old, new)
    extents = []
    for _index in range(60):
        length = rng.choice((512, 4096, 65536, 65536 * 3 + 100))
        offset = rng.randrange(0, size - length)
        extents.append((offset, length))
    extents.append((size - 1, 1))                   # the very last byte of the disk
    extents.append((size - 70000, 1000))
    with open(new, 'r+b') as handle:
        for offset, length in extents:
            handle.seek(offset)
            handle.write(bytes(rng.getrandbits(8) | 1 for _byte in range(min(length, 4096))) * (length // 4096) +
                         b'\xee' * (length % 4096))
    target = str(tmp_path / 'target.img')
    shutil.copyfile(old, target)
    return old, new, target, extents


def test_incremental_copy_of_scattered_extents_equals_the_source(tmp_path, nbdkit):
    size = SIZE + 12345                               # not a multiple of any request size
    old, new, target, extents = make_incremental(tmp_path, size, 11)
    src = nbdkit('src', 'file', new, read_only=True)
    dst = nbdkit('dst', 'file', target)
    state = str(tmp_path / 'state.json')
    sync_state.commit_disk(state, VM, 2000, 'cbt/1', size, dst.uri)
    extents_file = str(tmp_path / 'extents.json')
    from ansible_collections.migratekit.migration.plugins.module_utils.extents import merge_extents
    merged = list(merge_extents(extents))
    write_extents_file(extents_file, {'disk_key': 2000, 'capacity_bytes': size, 'change_id': 'cbt/2',
                                      'previous_change_id': 'cbt/1', 'sync_type': 'incremental'}, merged)
    result = nbd_copy.copy_disk(src.uri, dst.uri, extents_file=extents_file, state_file=state, vm_uuid=VM,
                                request_size=65536, requests_in_flight=4, verify='checksum')
    compare(new, target)
    assert result['sync_type'] == 'incremental'
    assert result['extent_count'] == len(merged)
    assert result['bytes_written'] + result['bytes_zeroed'] == sum(length for _offset, length in merged)
    assert sync_state.load(state)['disks']['2000']['change_id'] == 'cbt/2'


def test_unaligned_extents_honour_the_target_block_size(tmp_path, nbdkit):
    size = SIZE
    old, new, target, extents = make_incremental(tmp_path, size, 12)
    src = nbdkit('src', 'file', new, read_only=True)
    # the target rejects (EINVAL) any request not aligned to 4096 or larger than 64 KiB
    dst = nbdkit('dst', 'file', target, 'blocksize-minimum=4096', 'blocksize-preferred=4096',
                 'blocksize-maximum=65536', 'blocksize-error-policy=error', filters=['blocksize-policy'])
    result = nbd_copy.copy_disk(src.uri, dst.uri, extents=[list(e) for e in extents], request_size=1 * MiB)
    compare(new, target)
    assert result['request_size'] == 65536


def test_transient_errors_are_retried_and_the_target_is_identical(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 5))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, 'error=EIO', 'error-pread-rate=3%', read_only=True, filters=['error'])
    dst = nbdkit('dst', 'file', target, 'error=EIO', 'error-pwrite-rate=3%', 'error-zero-rate=3%',
                 filters=['error'])
    result = nbd_copy.copy_disk(src.uri, dst.uri, request_size=65536, **fast())
    compare(source, target)
    assert result['retried_requests'] > 0


def test_persistent_error_fails_and_leaves_the_state_untouched(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 6))
    target = write_image(str(tmp_path / 'target.img'), SIZE)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target, 'error=ENOSPC', 'error-pwrite-rate=100%', filters=['error'])
    state = str(tmp_path / 'state.json')
    sync_state.commit_disk(state, VM, 2000, 'cbt/1', SIZE, dst.uri)
    before = open(state).read()
    with pytest.raises(nbd_copy.CopyIOError) as caught:
        nbd_copy.copy_disk(src.uri, dst.uri, extents=[[0, SIZE]], sync_type='full', state_file=state, vm_uuid=VM,
                           disk_key=2000, change_id='cbt/2', **fast())
    message = nbd_copy.error_message(caught.value)
    assert 'write to target failed for disk 2000 at offset' in message
    assert 'ENOSPC' in message
    assert caught.value.offset is not None
    assert open(state).read() == before


def test_an_extents_file_missing_lines_fails_before_writing(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 8))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    state = str(tmp_path / 'state.json')
    sync_state.commit_disk(state, VM, 2000, 'cbt/1', SIZE, dst.uri)
    before_state, before_target = open(state).read(), digest(target)
    extents_file = str(tmp_path / 'disk.json')
    write_extents_file(extents_file, {'disk_key': 2000, 'capacity_bytes': SIZE, 'change_id': 'cbt/2',
                                      'previous_change_id': 'cbt/1', 'sync_type': 'incremental'},
                       [(0, 65536), (MiB, 65536), (2 * MiB, 65536)])
    with open(extents_file) as handle:
        text = handle.read()
    with open(extents_file, 'w') as handle:
        handle.write(text.replace('[1048576, 65536],\n', ''))
    with pytest.raises(nbd_copy.ValidationError, match='holds 2 extents, its header says extent_count 3'):
        nbd_copy.copy_disk(src.uri, dst.uri, extents_file=extents_file, state_file=state, vm_uuid=VM, **fast())
    assert open(state).read() == before_state and digest(target) == before_target


def test_eio_that_never_clears_fails_after_the_retries(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), 4 * MiB, [(0, b'\x01' * 4 * MiB)])
    target = write_image(str(tmp_path / 'target.img'), 4 * MiB)
    src = nbdkit('src', 'file', source, 'error=EIO', 'error-pread-rate=100%', read_only=True, filters=['error'])
    dst = nbdkit('dst', 'file', target)
    with pytest.raises(nbd_copy.CopyIOError) as caught:
        nbd_copy.copy_disk(src.uri, dst.uri, retries=2, **fast())
    assert caught.value.attempts == 3
    assert 'read from source failed for disk at offset' in str(caught.value)
    assert 'EIO' in str(caught.value)


def test_a_stalled_server_fails_after_the_io_timeout(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), MiB, [(0, b'\x01' * MiB)])
    target = write_image(str(tmp_path / 'target.img'), MiB)
    src = nbdkit('src', 'file', source, 'delay-read=3', read_only=True, filters=['delay'])
    dst = nbdkit('dst', 'file', target)
    started = time.monotonic()
    with pytest.raises(nbd_copy.CopyIOError, match='no reply from the source for 1 s'):
        nbd_copy.copy_disk(src.uri, dst.uri, io_timeout=1)
    assert time.monotonic() - started < 2.9


# ---------------------------------------------------------------- validation before writing

def test_target_smaller_than_source_fails_before_writing(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 7, count=5))
    target = write_image(str(tmp_path / 'target.img'), SIZE - MiB, fill=garbage)
    before = digest(target)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    with pytest.raises(nbd_copy.ValidationError, match='smaller than the source'):
        nbd_copy.copy_disk(src.uri, dst.uri, state_file=str(tmp_path / 'state.json'), disk_key=2000,
                           change_id='cbt/1')
    assert digest(target) == before
    assert not os.path.exists(str(tmp_path / 'state.json'))


def test_extent_beyond_the_source_fails_before_writing(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, patterned_chunks(SIZE, 8, count=5))
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    before = digest(target)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    with pytest.raises(nbd_copy.ValidationError, match='beyond the disk size'):
        nbd_copy.copy_disk(src.uri, dst.uri, extents=[[0, 4096], [SIZE - 10, 20]])
    assert digest(target) == before


def test_unreachable_target_names_it(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), MiB)
    src = nbdkit('src', 'file', source, read_only=True)
    missing = 'nbd+unix:///?socket=' + str(tmp_path / 'nobody.sock')
    with pytest.raises(nbd_copy.ConnectError, match='cannot connect to the target'):
        nbd_copy.copy_disk(src.uri, missing, extents=[[0, 512]], disk_key=2000)


def test_read_only_target_is_refused(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), MiB)
    target = write_image(str(tmp_path / 'target.img'), MiB)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target, read_only=True)
    with pytest.raises(nbd_copy.ValidationError, match='read-only'):
        nbd_copy.copy_disk(src.uri, dst.uri)


# ---------------------------------------------------------------- idempotence, check mode

def test_nothing_to_copy_is_not_a_change(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), MiB)
    target = write_image(str(tmp_path / 'target.img'), MiB)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    state = str(tmp_path / 'state.json')
    sync_state.commit_disk(state, VM, 2000, 'cbt/1', MiB, dst.uri)
    result = nbd_copy.copy_disk(src.uri, dst.uri, extents=[], sync_type='incremental', state_file=state,
                                vm_uuid=VM, disk_key=2000, change_id='cbt/1')
    assert result['changed'] is False
    assert result['bytes_written'] == 0 and result['bytes_zeroed'] == 0
    assert result['committed_change_id'] == 'cbt/1' and result['state_updated'] is False


def test_check_mode_plans_without_writing(tmp_path, nbdkit):
    source = write_image(str(tmp_path / 'source.img'), SIZE, [(0, b'\x01' * MiB), (8 * MiB, b'\x02' * 2 * MiB)])
    target = write_image(str(tmp_path / 'target.img'), SIZE, fill=garbage)
    before = digest(target)
    src = nbdkit('src', 'file', source, read_only=True)
    dst = nbdkit('dst', 'file', target)
    result = nbd_copy.copy_disk(src.uri, dst.uri, check_mode=True)
    assert digest(target) == before
    assert result['plan']['data_bytes'] == 3 * MiB
    assert result['plan']['zero_bytes'] == SIZE - 3 * MiB
    assert result['plan']['extent_count'] == 2
    zero_target = nbd_copy.copy_disk(src.uri, dst.uri, check_mode=True, target_is_zero=True)
    assert zero_target['plan']['skipped_bytes'] == SIZE - 3 * MiB


def test_progress_is_reported_as_requests_complete(tmp_path, nbdkit):
    src = nbdkit('src', 'sparse-random', 'size=%d' % (256 * MiB), 'seed=3', 'percent=50', read_only=True)
    dst = nbdkit('dst', 'memory', 'size=%d' % (256 * MiB))
    updates = []
    result = nbd_copy.copy_disk(src.uri, dst.uri, progress=lambda done, moved: updates.append((done, moved)))
    assert updates[-1] == (256 * MiB, result['bytes_written'])
    assert len(updates) >= 2
