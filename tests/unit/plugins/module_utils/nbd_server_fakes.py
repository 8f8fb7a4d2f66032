# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module options of an NBD server for the unit tests of _nbd_server."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.migratekit.migration.plugins.module_utils import nbdkit

SECRET = 'S3cr3t pa$$ word'
THUMB = ':'.join(['AB'] * 20)


def validate(params):
    return nbdkit.validate(nbdkit.SERVER_SPEC.options(params))


def vddk_params(**over):
    params = dict(socket='/run/mk/c1/disk-2000.sock', transport='vddk', vddk_libdir='/opt/vddk',
                  server='vcenter.example.com', username='admin@vsphere.local', password=SECRET,
                  thumbprint=THUMB, vm_moref='vm-42', snapshot_moref='snapshot-7',
                  backing_file='[datastore1] vm0/vm0.vmdk', transports=None, compression=None,
                  config=None, filters=[], port=None)
    params.update(over)
    return params
