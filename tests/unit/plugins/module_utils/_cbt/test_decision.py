# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The full-or-incremental decision table and the QueryChangedDiskAreas paging loop (pure)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
from pyVmomi import vim

from ansible_collections.migratekit.migration.plugins.module_utils import cbt
from ansible_collections.migratekit.migration.plugins.module_utils._cbt import inventory
from ansible_collections.migratekit.migration.plugins.module_utils import sync_state
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.cbt_fakes import (
    CAP, GOOD, UUID_A, UUID_B, VM_UUID, paged_query,
)

UTC = inventory._UTC


def test_parse_change_id():
    assert cbt.parse_change_id(UUID_A + '/7') == (UUID_A, 7)
    for bad in (None, '', '*', 'abc', UUID_A + '/x', '/3'):
        with pytest.raises(ValueError):
            cbt.parse_change_id(bad)


# --------------------------------------------------------------------------
# the decision table

def state_with(entry=None, vm_uuid=VM_UUID):
    state = sync_state.empty_state(vm_uuid)
    if entry is not None:
        state['disks']['2000'] = entry
    return state


@pytest.mark.parametrize('kwargs, code', [
    (dict(mode='full', state=state_with(GOOD)), 'mode_full'),
    (dict(state=None), 'no_state'),
    (dict(state=state_with(GOOD, vm_uuid='other')), 'other_vm'),
    (dict(state=state_with(None)), 'no_state'),
    (dict(state=state_with(dict(GOOD, change_id='garbage'))), 'bad_state'),
    (dict(state=state_with(GOOD), cbt_was_enabled=False), 'cbt_off'),
    (dict(state=state_with(GOOD), capacity_bytes=2 * CAP), 'capacity_changed'),
    (dict(state=state_with(GOOD), change_id=None), 'no_change_id'),
    (dict(state=state_with(GOOD), change_id=UUID_B + '/1'), 'cbt_reset'),
    (dict(state=state_with(GOOD), target='nbd://elsewhere'), 'target_changed'),
    (dict(state=state_with(GOOD), rejected='FileFault: Error caused by file'), 'change_id_rejected'),
    (dict(state=state_with(GOOD)), 'incremental'),
    (dict(state=state_with(GOOD), target='nbd://t/2000'), 'incremental'),
    (dict(state=state_with(dict(GOOD, target=None)), target='nbd://new'), 'incremental'),
    (dict(state=state_with(GOOD, vm_uuid=None)), 'incremental'),
    (dict(state=state_with(GOOD, vm_uuid=VM_UUID.upper())), 'incremental'),
])
def test_decision_table(kwargs, code):
    args = dict(mode='auto', disk_key=2000, capacity_bytes=CAP, change_id=UUID_A + '/9', vm_uuid=VM_UUID)
    args.update(kwargs)
    decision = cbt.decide_sync(**args)
    assert decision.reason_code == code
    assert decision.sync_type == ('incremental' if code == 'incremental' else 'full')
    assert decision.previous_change_id == (GOOD['change_id'] if code == 'incremental' else None)
    assert decision.reason


def test_decision_reasons_name_the_facts():
    d = cbt.decide_sync('auto', 2000, 2 * CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert '%d to %d' % (CAP, 2 * CAP) in d.reason
    d = cbt.decide_sync('auto', 2000, CAP, UUID_B + '/1', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert UUID_A in d.reason and UUID_B in d.reason and 'reset' in d.reason
    d = cbt.decide_sync('auto', 2000, CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(None),
                        state_file='/s.json')
    assert '/s.json' in d.reason and '2000' in d.reason


def test_incremental_mode_raises_with_the_reason():
    with pytest.raises(cbt.IncrementalNotPossibleError) as info:
        cbt.decide_sync('incremental', 2000, CAP, UUID_B + '/1', vm_uuid=VM_UUID, state=state_with(GOOD),
                        label='Hard disk 1')
    assert 'Hard disk 1' in str(info.value) and 'CBT was reset' in str(info.value)
    assert info.value.details['reason_code'] == 'cbt_reset'
    ok = cbt.decide_sync('incremental', 2000, CAP, UUID_A + '/9', vm_uuid=VM_UUID, state=state_with(GOOD))
    assert ok.sync_type == 'incremental'


def test_preflight_ignores_an_unknown_change_id():
    d = cbt.decide_sync('incremental', 2000, CAP, None, vm_uuid=VM_UUID, state=state_with(GOOD),
                        change_id_known=False)
    assert d.sync_type == 'incremental'


def test_targets_lookup_by_key_or_label():
    assert cbt.target_for({'2000': 'a'}, 2000, 'Hard disk 1') == 'a'
    assert cbt.target_for({2000: 'b'}, 2000, 'Hard disk 1') == 'b'
    assert cbt.target_for({'Hard disk 1': 'c'}, 2000, 'Hard disk 1') == 'c'
    assert cbt.target_for(None, 2000, 'x') is None


# --------------------------------------------------------------------------
# paging


def test_paging_loops_on_start_offset_plus_length_until_capacity():
    areas = [(i * 2 * 65536, 65536) for i in range(200)]
    calls = []
    got = list(cbt.iter_changed_areas(paged_query(areas, calls=calls), CAP, '*'))
    assert got == areas
    assert len(calls) == 4  # 64 + 64 + 64 + 8
    assert calls[0] == (0, '*')
    assert calls[1][0] == areas[63][0] + areas[63][1]
    assert all(cid == '*' for _s, cid in calls)


def test_paging_with_no_areas_is_one_call():
    calls = []
    assert list(cbt.iter_changed_areas(paged_query([], calls=calls), CAP, UUID_A + '/1')) == []
    assert calls == [(0, UUID_A + '/1')]


def test_paging_without_progress_is_an_error():
    def stuck(start, change_id):
        return vim.VirtualMachine.DiskChangeInfo(startOffset=start, length=0, changedArea=[])
    with pytest.raises(cbt.ChangedAreasError, match='does not move past'):
        list(cbt.iter_changed_areas(stuck, CAP, '*'))


def test_changed_extents_merges_adjacent_and_clips_to_capacity():
    areas = [(0, 65536), (65536, 65536), (CAP - 65536, 131072)]
    extents, pages = cbt.changed_extents(paged_query(areas, page_areas=2), CAP, '*')
    assert extents == [(0, 131072), (CAP - 65536, 65536)]
    assert pages == 2


def test_a_change_id_older_than_the_synced_one_of_the_same_tracking_file_means_a_full_copy():
    # the VM went back to a snapshot taken before the last sync: its CBT sequence counts from there again
    state = {'vm_uuid': 'u', 'disks': {'2000': {'change_id': '52 aa/7', 'capacity_bytes': 10}}}
    decision = cbt.decide_sync('auto', 2000, 10, '52 aa/4', vm_uuid='u', state=state)
    assert decision.sync_type == 'full' and decision.reason_code == 'cbt_rewound'
    assert '52 aa/4' in decision.reason and '52 aa/7' in decision.reason and 'reverted' in decision.reason
    assert cbt.decide_sync('auto', 2000, 10, '52 aa/7', vm_uuid='u', state=state).sync_type == 'incremental'


def test_a_requested_reset_means_a_full_copy_and_refuses_mode_incremental():
    state = {'vm_uuid': 'u', 'disks': {'2000': {'change_id': '52 aa/7', 'capacity_bytes': 10}}}
    decision = cbt.decide_sync('auto', 2000, 10, '52 aa/8', vm_uuid='u', state=state, reset_requested=True)
    assert decision.reason_code == 'cbt_reset_requested'
    with pytest.raises(cbt.IncrementalNotPossibleError, match='reset_cbt'):
        cbt.decide_sync('incremental', 2000, 10, '52 aa/8', vm_uuid='u', state=state, reset_requested=True)
