# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
import json
import tracemalloc

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import extents as ex


def test_merge_sorts_and_joins_overlapping_and_adjacent():
    got = list(ex.merge_extents([(100, 10), (0, 10), (10, 5), (105, 20), (50, 0), (200, 1)]))
    assert got == [(0, 15), (100, 25), (200, 1)]


def test_coalesce_rejects_unsorted_stream():
    with pytest.raises(ex.ExtentsError, match='not sorted'):
        list(ex.coalesce_sorted([(100, 10), (0, 10)]))


def test_clip_keeps_only_parts_inside_the_disk():
    assert list(ex.clip_extents([(0, 10), (90, 20), (120, 5)], 100)) == [(0, 10), (90, 10)]


@pytest.mark.parametrize('bad, message', [
    ([(0, 0)], 'positive length'),
    ([(-1, 5)], 'non-negative'),
    ([(0, 5), (3, 5)], 'overlaps'),
    ([(95, 10)], 'beyond the disk size 100'),
    ([('a', 1)], 'non-negative integers'),
    ([(1, 2, 3)], 'expected \\[offset, length\\]'),
])
def test_validate_names_the_bad_extent(bad, message):
    with pytest.raises(ex.ExtentsError, match=message):
        list(ex.validate_extents(bad, 100))


def test_split_respects_max_and_realigns_after_unaligned_start():
    got = list(ex.split_extents([(100, 3000)], 1024, alignment=512))
    assert got == [(100, 924), (1024, 1024), (2048, 1024), (3072, 28)]
    assert ex.total_length(got) == 3000


def test_split_without_alignment_cuts_at_max():
    assert list(ex.split_extents([(0, 10), (20, 3)], 4)) == [(0, 4), (4, 4), (8, 2), (20, 3)]


def test_extents_file_round_trip_and_is_plain_json(tmp_path):
    path = str(tmp_path / 'disk.json')
    header = {'disk_key': 2000, 'capacity_bytes': 1 << 20, 'change_id': 'u/2',
              'previous_change_id': 'u/1', 'sync_type': 'incremental'}
    count, changed = ex.write_extents_file(path, header, [(0, 4096), (65536, 512)])
    assert (count, changed) == (2, 4608)
    with open(path) as handle:
        assert json.load(handle)['extents'] == [[0, 4096], [65536, 512]]
    head, extents = ex.open_extents_file(path)
    assert head['change_id'] == 'u/2' and head['extent_count'] == 2
    assert list(extents) == [(0, 4096), (65536, 512)]


def test_empty_extents_file(tmp_path):
    path = str(tmp_path / 'disk.json')
    ex.write_extents_file(path, {'capacity_bytes': 4096}, [])
    head, extents = ex.open_extents_file(path)
    assert head['changed_bytes'] == 0 and list(extents) == []


def test_hand_written_extents_file_is_validated(tmp_path):
    path = tmp_path / 'user.json'
    path.write_text(json.dumps({'capacity_bytes': 100, 'extents': [[0, 10], [50, 60]]}))
    _head, extents = ex.open_extents_file(str(path))
    with pytest.raises(ex.ExtentsError, match='beyond the disk size'):
        list(extents)


def test_streaming_a_large_file_does_not_hold_the_extents(tmp_path):
    path = str(tmp_path / 'big.json')
    n = 200000
    ex.write_extents_file(path, {'capacity_bytes': n * 8192}, ((i * 8192, 4096) for i in range(n)))
    _head, extents = ex.open_extents_file(path)
    tracemalloc.start()
    total = sum(length for _offset, length in extents)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert total == n * 4096
    assert peak < 2 * 1024 * 1024


def _written(tmp_path, extents):
    path = str(tmp_path / 'disk.json')
    ex.write_extents_file(path, {'capacity_bytes': 1 << 20}, extents)
    return path


def test_a_file_cut_short_is_refused_at_open(tmp_path):
    path = _written(tmp_path, [(0, 4096), (8192, 4096), (65536, 4096)])
    with open(path) as handle:
        text = handle.read()
    with open(path, 'w') as handle:
        handle.write(text[:text.index('[8192')])
    with pytest.raises(ex.ExtentsError, match='truncated'):
        ex.open_extents_file(path)


def test_an_extent_count_that_does_not_match_fails_the_iteration(tmp_path):
    path = _written(tmp_path, [(0, 4096), (8192, 4096)])
    with open(path) as handle:
        text = handle.read()
    with open(path, 'w') as handle:
        handle.write(text.replace('[8192, 4096]\n', ''))
    _head, extents = ex.open_extents_file(path)
    with pytest.raises(ex.ExtentsError, match='holds 1 extents, its header says extent_count 2'):
        list(extents)
