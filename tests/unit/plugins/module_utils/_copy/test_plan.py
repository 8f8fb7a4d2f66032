# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy's policy, settled once from what both ends negotiated; the work it makes."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils._copy import plan as copy_plan
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import COPY, PROBE, VERIFY, ZERO

KiB = 1024
MiB = 1024 * KiB


class Info(object):
    def __init__(self, size=64 * MiB, block_min=1, block_preferred=0, block_max=0, can_multi_conn=True,
                 can_zero=True, can_block_status=True):
        self.size, self.block_min, self.block_preferred, self.block_max = size, block_min, block_preferred, block_max
        self.can_multi_conn, self.can_zero, self.can_block_status = can_multi_conn, can_zero, can_block_status


def negotiate(source=None, target=None, **over):
    settings = dict(disk='disk 2000', source_uri='s', target_uri='t', request_size=256 * KiB, connections=4,
                    requests_in_flight=32, retries=5, retry_delay=0.1, io_timeout=300.0, whole_disk=True,
                    fill_gaps=False, target_is_zero=False)
    settings.update(over)
    return copy_plan.CopyPlan.negotiate(source or Info(), target or Info(), **settings)


def test_several_connections_only_when_both_ends_offer_multi_conn():
    assert negotiate().connections == 4
    assert negotiate(source=Info(can_multi_conn=False)).connections == 1  # nbdkit-vddk
    assert negotiate(target=Info(can_multi_conn=False)).connections == 1


def test_alignment_and_request_size_follow_the_stricter_end():
    plan = negotiate(source=Info(block_min=512, block_max=128 * KiB), target=Info(block_min=4096))
    assert plan.align == 4096 and plan.request_size == 128 * KiB
    assert plan.zero_size == 128 * MiB and 128 * KiB in plan.length_classes


def test_zeros_are_skipped_only_on_a_whole_disk_onto_a_zero_target():
    assert negotiate(target_is_zero=True).skip_zeros is True
    assert negotiate(target_is_zero=True, whole_disk=False).skip_zeros is False
    assert negotiate(whole_disk=False, fill_gaps=True).fill_gaps is True
    assert negotiate(whole_disk=False, fill_gaps=True, target_is_zero=True).fill_gaps is False
    assert negotiate(target=Info(can_zero=False)).zero_by_write is True


def test_the_plan_is_read_only():
    plan = negotiate()
    with pytest.raises(AttributeError, match='read-only'):
        plan.request_size = 1
    with pytest.raises(TypeError, match='CopyPlan needs'):
        copy_plan.CopyPlan(disk='d')


def test_copy_items_walk_block_status_or_read_everything():
    assert list(copy_plan.copy_items(negotiate(), None))[0] == (PROBE, 0, 64 * MiB)
    plain = list(copy_plan.copy_items(negotiate(source=Info(can_block_status=False)), None))
    assert plain[0] == (COPY, 0, 256 * KiB) and len(plain) == 256


def test_copy_items_of_a_full_copy_from_extents_zero_the_gaps():
    plan = negotiate(whole_disk=False, fill_gaps=True, source=Info(size=4 * MiB))
    items = list(copy_plan.copy_items(plan, [(MiB, 4096)]))
    assert items == [(ZERO, 0, MiB), (COPY, MiB, 4096), (ZERO, MiB + 4096, 3 * MiB - 4096)]
    assert list(copy_plan.verify_items(plan, [(MiB, 4096)]))[0] == (VERIFY, 0, 256 * KiB)
