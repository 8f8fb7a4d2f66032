# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks, snapshot trees and the extents directory as the VM's properties show them (pure)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import os
from types import SimpleNamespace

import pytest
from pyVmomi import vim

from ansible_collections.migratekit.migration.plugins.module_utils import cbt
from ansible_collections.migratekit.migration.plugins.module_utils._cbt import inventory
from ansible_collections.migratekit.migration.plugins.module_utils.vsphere import VSphereError
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.cbt_fakes import (
    CAP, make_disk, node,
)

UTC = inventory._UTC


def test_hardware_version_and_datastore():
    assert cbt.hardware_version_number('vmx-13') == 13
    assert cbt.hardware_version_number('weird') is None
    assert cbt.datastore_of('[LocalDS_0] VM0/disk.vmdk') == 'LocalDS_0'
    assert cbt.datastore_of('no brackets') is None


def test_classify_disks_skips_physical_rdm_and_independent_and_reads_kb():
    devices = [
        vim.vm.device.VirtualLsiLogicController(key=1000),
        make_disk(2001, kb_only=True, unit=1),
        make_disk(2000),
        make_disk(2002, rdm='physicalMode', unit=2),
        make_disk(2003, rdm='virtualMode', unit=3),
        make_disk(2004, mode='independent_persistent', unit=4),
    ]
    disks, skipped = cbt.classify_disks(devices)
    assert [d['key'] for d in disks] == [2000, 2001, 2003]
    assert disks[1]['capacity_bytes'] == CAP
    assert disks[0]['datastore'] == 'LocalDS_0' and disks[0]['label'] == 'Hard disk 1'
    assert [(s['key'], s['reason'].split(':')[0]) for s in skipped] == [
        (2002, 'physical-mode RDM'), (2004, 'independent_persistent disk')]


def test_find_snapshots_walks_the_tree_oldest_first():
    t0 = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    tree = SimpleNamespace(rootSnapshotList=[
        node('base', 'snapshot-1', t0, [node('migratekit', 'snapshot-3', t0 + datetime.timedelta(hours=2)),
                                        node('other', 'snapshot-4', t0, [node('migratekit', 'snapshot-2',
                                                                              t0 + datetime.timedelta(hours=1))])])])
    assert [n.snapshot._moId for n in cbt.find_snapshots(tree, 'migratekit')] == ['snapshot-2', 'snapshot-3']
    assert cbt.find_snapshots(None, 'migratekit') == []
    facts = cbt.snapshot_facts(cbt.find_snapshots(tree, 'migratekit')[-1], now=t0 + datetime.timedelta(hours=3))
    assert facts == {'moid': 'snapshot-3', 'name': 'migratekit', 'created': '2026-01-01T02:00:00Z',
                     'age_seconds': 3600, 'reused': False, 'power_state': None}


def test_check_extents_dir(tmp_path):
    made = cbt.check_extents_dir(str(tmp_path / 'a' / 'b'))
    assert os.path.isdir(made)
    afile = tmp_path / 'file'
    afile.write_text('x')
    with pytest.raises(cbt.ExtentsDirError, match='not a directory'):
        cbt.check_extents_dir(str(afile))
    with pytest.raises(cbt.ExtentsDirError, match='not writable'):
        cbt.check_extents_dir(str(afile / 'sub'))
    # check mode creates nothing
    cbt.check_extents_dir(str(tmp_path / 'c'), check_mode=True)
    assert not (tmp_path / 'c').exists()
    with pytest.raises(VSphereError, match='extents_dir is required'):
        cbt.check_extents_dir(None)
