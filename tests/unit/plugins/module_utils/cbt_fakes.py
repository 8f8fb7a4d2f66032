# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""vSphere objects for the CBT unit tests: disks, QueryChangedDiskAreas pages, snapshot tree nodes."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from types import SimpleNamespace

from pyVmomi import vim

MiB = 1024 * 1024
CAP = 64 * MiB
UUID_A = '52 aa aa aa aa aa aa aa-aa aa aa aa aa aa aa aa'
UUID_B = '52 bb bb bb bb bb bb bb-bb bb bb bb bb bb bb bb'
VM_UUID = '4213a8c4-0000-0000-0000-000000000001'
# a disk's state entry after a good sync
GOOD = {'change_id': UUID_A + '/5', 'capacity_bytes': CAP, 'target': 'nbd://t/2000', 'synced_at': '2026-01-01T00:00:00Z'}


def make_disk(key=2000, capacity=CAP, change_id=None, mode='persistent', rdm=None, kb_only=False, unit=0,
              file_name=None):
    if rdm:
        backing = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
            fileName=file_name or '[DS] vm/rdm.vmdk', compatibilityMode=rdm, diskMode=mode, changeId=change_id)
    else:
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=file_name or '[LocalDS_0] VM0/disk-%d.vmdk' % key, diskMode=mode, changeId=change_id)
    disk = vim.vm.device.VirtualDisk(key=key, unitNumber=unit, controllerKey=1000, backing=backing,
                                     deviceInfo=vim.Description(label='Hard disk %d' % (key - 1999), summary=''),
                                     capacityInKB=capacity // 1024)
    if not kb_only:
        disk.capacityInBytes = capacity
    return disk


def paged_query(areas, page_areas=64, calls=None, capacity=CAP):
    """A QueryChangedDiskAreas double: ``page_areas`` areas per answer, like the lab and vSphere."""
    def query(start, change_id):
        if calls is not None:
            calls.append((start, change_id))
        todo = [a for a in areas if a[0] + a[1] > start]
        page = todo[:page_areas]
        if len(todo) > page_areas:
            end = page[-1][0] + page[-1][1]
        else:
            end = capacity
        return vim.VirtualMachine.DiskChangeInfo(
            startOffset=start, length=end - start,
            changedArea=[vim.VirtualMachine.DiskChangeInfo.DiskChangeExtent(start=s, length=n) for s, n in page])
    return query


def node(name, moid, created, children=()):
    return SimpleNamespace(name=name, snapshot=SimpleNamespace(_moId=moid), createTime=created,
                           childSnapshotList=list(children))
