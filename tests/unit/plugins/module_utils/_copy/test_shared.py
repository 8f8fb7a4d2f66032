# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checkpoint epochs of SharedState: a watermark only once every worker marked, what finished above it kept."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from types import SimpleNamespace

from ansible_collections.migratekit.migration.plugins.module_utils._copy.shared import SharedState


def state_with_workers(count, done_above=()):
    shared = SharedState(iter([]), checkpoint=lambda watermark, done: None, done_above=done_above)
    shared.workers = [SimpleNamespace(index=index, finished=[], done_bytes=0, written=0) for index in range(count)]
    shared._participants = set(range(count))
    return shared


def test_the_watermark_is_the_lowest_mark_once_every_worker_marked():
    shared = state_with_workers(2)
    shared._start_epoch(0)
    shared.mark(shared.workers[0], shared.epoch, 4096, finished=[[8192, 12288]])
    assert shared.take_flush() is None, 'one worker has not marked yet'
    shared.mark(shared.workers[1], shared.epoch, 1024, finished=[[0, 1024], [2048, 4096]])
    watermark, done_above = shared.take_flush()
    assert watermark == 1024 and done_above == [[2048, 4096], [8192, 12288]]


def test_a_retired_worker_does_not_hold_an_epoch_back():
    shared = state_with_workers(2, done_above=[[100000, 200000]])
    shared._start_epoch(0)
    shared.mark(shared.workers[0], shared.epoch, 50000)
    shared.retire(shared.workers[1])
    assert shared.take_flush() == (50000, [[100000, 200000]])
    assert shared.skip == [[100000, 200000]], 'what an earlier run did above its watermark is skipped'
