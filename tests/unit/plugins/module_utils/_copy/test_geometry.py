# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure geometry of a copy: splitting, alignment, length classes, block-status runs."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy

nbd = pytest.importorskip('nbd')

KiB = 1024
MiB = 1024 * KiB


# ---------------------------------------------------------------- splitting and alignment

def test_split_range_pieces_cover_the_range_and_respect_the_size():
    pieces = list(nbd_copy.split_range(0, 10 * MiB + 1, 4 * MiB))
    assert pieces == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 2 * MiB + 1)]


def test_split_range_realigns_after_an_unaligned_start():
    pieces = list(nbd_copy.split_range(1000, 3 * 4096, 4096, align=4096))
    assert pieces[0] == (1000, 3096)
    assert all(offset % 4096 == 0 for offset, _length in pieces[1:])
    assert sum(length for _offset, length in pieces) == 3 * 4096
    assert pieces[-1][0] + pieces[-1][1] == 1000 + 3 * 4096


def test_split_range_tail_of_a_disk_not_a_multiple_of_the_request_size():
    size = 5 * MiB + 513
    pieces = list(nbd_copy.split_range(0, size, 2 * MiB))
    assert pieces[-1] == (4 * MiB, MiB + 513)
    assert max(length for _offset, length in pieces) <= 2 * MiB


@pytest.mark.parametrize('request_size, align, maxima, expected', [
    (256 * KiB, 1, (0, 0), 256 * KiB),
    (64 * MiB, 1, (0, 0), 32 * MiB),                 # protocol limit
    (1 * MiB, 1, (0, 64 * KiB), 64 * KiB),           # target's maximum block size
    (1 * MiB, 1, (128 * KiB, 0), 128 * KiB),         # source's maximum block size
    (100000, 4096, (0, 0), 98304),                   # multiple of the minimum block size
    (4096, 65536, (0, 0), 65536),                    # never below one aligned block
])
def test_effective_request_size(request_size, align, maxima, expected):
    assert nbd_copy.effective_request_size(request_size, align, maxima) == expected


def test_align_extents_widens_to_the_block_size_and_merges_neighbours():
    extents = [(100, 10), (4000, 200), (9000, 10)]
    assert list(nbd_copy.align_extents(extents, 4096, 1 << 20)) == [(0, 12288)]
    assert list(nbd_copy.align_extents([(100, 10), (9000, 10)], 4096, 1 << 20)) == [(0, 4096), (8192, 4096)]


def test_align_extents_clips_to_the_capacity():
    capacity = 10000
    assert list(nbd_copy.align_extents([(9990, 10)], 4096, capacity)) == [(8192, capacity - 8192)]


def test_align_extents_is_lazy_with_align_one():
    extents = iter([(0, 1), (5, 1)])
    assert nbd_copy.align_extents(extents, 1, 10) is extents


def test_gaps_complement_the_extents():
    assert list(nbd_copy.gaps([(10, 5), (20, 5)], 30)) == [(0, 10), (15, 5), (25, 5)]
    assert list(nbd_copy.gaps([], 30)) == [(0, 30)]
    assert list(nbd_copy.gaps([(0, 30)], 30)) == []


def test_request_quantum():
    assert nbd_copy.request_quantum(256 * KiB, 1) == 64 * KiB
    assert nbd_copy.request_quantum(32 * MiB, 1) == 2 * MiB
    assert nbd_copy.request_quantum(16 * KiB, 512) == 16 * KiB
    assert nbd_copy.request_quantum(64 * KiB, 128 * KiB) == 128 * KiB


@pytest.mark.parametrize('length', [1, 511, 512, 4096, 65536, 65536 * 3 + 100, 262144, 200000, 262143])
def test_class_pieces_cover_exactly_with_few_distinct_lengths(length):
    pieces = list(nbd_copy.class_pieces(1000, length, 64 * KiB, 1))
    assert sum(piece for _offset, piece in pieces) == length
    assert pieces[0][0] == 1000
    for (offset, piece), (next_offset, _next) in zip(pieces, pieces[1:]):
        assert offset + piece == next_offset
    classes = nbd_copy.length_classes(256 * KiB, 64 * KiB, 1)
    assert all(piece in classes for _offset, piece in pieces)
    assert len(pieces) <= 1 + 16


def test_class_pieces_keep_an_unaligned_disk_tail_whole():
    pieces = list(nbd_copy.class_pieces(0, 4096 + 4096 + 100, 64 * KiB, 4096))
    assert pieces == [(0, 8192), (8192, 100)]


def test_length_classes_are_a_small_set():
    assert len(nbd_copy.length_classes(32 * MiB, nbd_copy.request_quantum(32 * MiB, 1), 1)) <= 16 + 21
    assert len(nbd_copy.length_classes(256 * KiB, 64 * KiB, 512)) == 4 + 7


# ---------------------------------------------------------------- block status

def test_runs_from_block_status_merges_and_clips():
    entries = [4096, 0, 4096, 0, 8192, 3, 1 << 30, 0]
    runs = nbd_copy.runs_from_block_status(0, 20480, entries)
    assert runs == [[0, 8192, False], [8192, 8192, True], [16384, 4096, False]]


def test_runs_from_block_status_partial_answer_covers_less():
    runs = nbd_copy.runs_from_block_status(1 << 20, 1 << 20, [65536, 0])
    assert runs == [[1 << 20, 65536, False]]


def test_hole_without_zero_flag_is_data():
    runs = nbd_copy.runs_from_block_status(0, 8192, [8192, nbd_copy.STATE_HOLE])
    assert runs == [[0, 8192, False]]


def test_align_runs_grows_data_and_shrinks_zero_runs():
    runs = [(0, 1000, False), (1000, 9000, True), (10000, 2288, False)]
    aligned = nbd_copy.align_runs(runs, 4096, 12288)
    assert aligned == [(0, 4096, False), (4096, 4096, True), (8192, 4096, False)]
    assert sum(length for _start, length, _zero in aligned) == 12288


def test_align_runs_drops_a_zero_run_smaller_than_a_block():
    runs = [(0, 5000, False), (5000, 2000, True), (7000, 1192, False)]
    assert nbd_copy.align_runs(runs, 4096, 8192) == [(0, 8192, False)]


def test_align_runs_keeps_an_unaligned_zero_tail_at_the_end_of_the_disk():
    runs = [(0, 4096, False), (4096, 5000, True)]
    assert nbd_copy.align_runs(runs, 4096, 9096) == [(0, 4096, False), (4096, 5000, True)]


def test_merge_ranges_and_uncovered_parts():
    covered = nbd_copy.merge_ranges([[10, 20], [0, 5], [18, 30], [40, 50]])
    assert covered == [[0, 5], [10, 30], [40, 50]]
    assert nbd_copy.uncovered(0, 60, covered) == [(5, 5), (30, 10), (50, 10)]
    assert nbd_copy.uncovered(12, 10, covered) == []
    assert nbd_copy.uncovered(25, 20, covered) == [(30, 10)]
    assert nbd_copy.uncovered(60, 5, covered) == [(60, 5)]
    assert nbd_copy.uncovered(3, 4, []) == [(3, 4)]
