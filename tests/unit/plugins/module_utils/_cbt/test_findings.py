# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks a snapshot cannot freeze: the findings (for a preflight) and the refusal (for a cycle)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest
from pyVmomi import vim

from ansible_collections.migratekit.migration.plugins.module_utils._cbt import inventory
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.cbt_fakes import make_disk


def controller(key=1000, shared='noSharing', label='SCSI controller 0'):
    return vim.vm.device.ParaVirtualSCSIController(key=key, busNumber=key - 1000, sharedBus=shared,
                                                   deviceInfo=vim.Description(label=label, summary=''))


def multi_writer(key, unit):
    disk = make_disk(key, unit=unit)
    disk.backing.sharing = 'sharingMultiWriter'
    return disk


def test_findings_name_each_kind_and_leave_virtual_rdm_alone():
    shared = controller(1001, shared='physicalSharing', label='SCSI controller 1')
    on_shared = make_disk(2004, unit=0)
    on_shared.controllerKey = 1001
    devices = [controller(), shared, make_disk(2000), make_disk(2001, mode='independent_persistent', unit=1),
               make_disk(2002, rdm='physicalMode', unit=2), make_disk(2003, rdm='virtualMode', unit=3), on_shared,
               multi_writer(2005, 5)]
    findings = inventory.snapshot_findings(devices)
    assert [(f['key'], f['kind'], f['mode'], f['excludable']) for f in findings] == [
        (2001, 'independent', 'independent_persistent', True),
        (2002, 'physical_rdm', 'physicalMode RDM', True),
        (2004, 'shared_bus', 'on SCSI controller 1 with bus sharing physicalSharing', False),
        (2005, 'multi_writer', 'sharingMultiWriter', True),
    ]


def test_refusal_lists_every_disk_and_both_ways_out():
    devices = [controller(), make_disk(2000), make_disk(2001, mode='independent_nonpersistent', unit=1),
               make_disk(2002, rdm='physicalMode', unit=2)]
    with pytest.raises(inventory.UnfreezableDisksError) as info:
        inventory.excluded_disks(devices, ['2001'], vm_name='VM0')
    message = str(info.value)
    assert "disk 2002 ('Hard disk 3', [DS] vm/rdm.vmdk) is physicalMode RDM" in message and '2001' not in message
    assert 'exclude_disks' in message and 'virtualMode' in message
    assert [d['key'] for d in inventory.excluded_disks(devices, ['2001', 'Hard disk 3'])] == [2001, 2002]


def test_a_disk_on_a_shared_bus_is_refused_even_when_excluded():
    shared = controller(1000, shared='virtualSharing')
    with pytest.raises(inventory.UnfreezableDisksError, match='is not enough'):
        inventory.excluded_disks([shared, make_disk(2000), make_disk(2001, unit=1)], ['2000'])


def test_any_disk_may_be_excluded():
    excluded = inventory.excluded_disks([controller(), make_disk(2000), make_disk(2001, unit=1)], [2001])
    assert excluded == [{'key': 2001, 'label': 'Hard disk 2', 'backing_file': '[LocalDS_0] VM0/disk-2001.vmdk',
                         'reason': 'excluded by exclude_disks', 'kind': None, 'mode': None}]
