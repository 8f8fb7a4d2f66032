# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error root: every area's errors derive from it and read as users have matched them."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import cbt, extents, nbd_copy, nbdkit, sync_state
from ansible_collections.migratekit.migration.plugins.module_utils import vma, vsphere
from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError, format_error


@pytest.mark.parametrize('error_class', [
    vsphere.VSphereError, cbt.CbtError, nbd_copy.NbdCopyError, nbd_copy.CopyIOError, nbdkit.NbdkitError,
    vma.VmaError, vma.VmaRequestError, vma.VmaValidationError, sync_state.SyncStateError, extents.ExtentsError,
])
def test_every_error_of_the_collection_has_the_one_root(error_class):
    assert issubclass(error_class, MigratekitError)


def test_the_phrase_names_operation_and_subject():
    assert str(MigratekitError('disk full', operation='write', subject='disk 2000')) == \
        'write of disk 2000 failed: disk full'
    assert str(MigratekitError('disk full', operation='write')) == 'write failed: disk full'
    assert str(MigratekitError('disk full', subject='disk 2000')) == 'disk 2000: disk full'
    assert str(MigratekitError('disk full')) == 'disk full'


def test_located_fills_in_only_what_is_unknown():
    error = MigratekitError('x', operation='read').located('write', 'disk 1')
    assert (error.operation, error.subject) == ('read', 'disk 1')
    assert error.located('write', 'disk 2').subject == 'disk 1'


def test_each_area_keeps_its_released_wording():
    assert str(vsphere.TaskFailedError('busy', operation='power off', vm='VM0', disk='Hard disk 1')) == \
        'power off of VM VM0, disk Hard disk 1 failed: busy'
    assert str(nbdkit.NbdkitConfigError('bad').located(subject='the server on /s')) == \
        'nbd_disk_server: cannot configure the server on /s: bad'
    assert str(vma.VmaRequestError('read the progress', 'http://v/api', 'HTTP 500')) == \
        'Cannot read the progress at http://v/api: HTTP 500'
    assert str(nbd_copy.ValidationError('bad', operation='validate', disk='disk 2000', offset=4096)) == \
        'validate of disk 2000 at offset 4096 failed: bad'


def test_copy_io_errors_carry_their_own_location_and_result_fields():
    error = nbd_copy.CopyIOError('write to target failed for disk 2000 at offset 0 (length 512) after 1 attempt: EIO',
                                 operation='write to target', disk='disk 2000', offset=0)
    assert str(error) == error.message
    assert error.details == {'failed_operation': 'write to target', 'failed_disk': 'disk 2000', 'failed_offset': 0}
    flush = nbd_copy.CopyIOError('flush of the target t of disk 2000 failed', operation='flush target',
                                 disk='disk 2000')
    assert str(flush) == 'flush target failed: flush of the target t of disk 2000 failed'


def test_format_error_is_the_str_of_every_error():
    error = vsphere.VMNotFoundError('gone', operation='find VM', vm='VM0')
    assert format_error(error) == str(error)


def test_vma_request_errors_give_the_http_status_and_the_vma_text_as_fields():
    error = vma.VmaHTTPError('post', 'http://v', 'HTTP 400: bad stage', status_code=400, details='bad stage')
    assert error.details == {'status_code': 400, 'vma_error': 'bad stage'}
