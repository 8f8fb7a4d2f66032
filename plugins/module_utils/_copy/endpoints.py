# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two ends of a copy: connecting a libnbd handle and what a server negotiated.

Like nbdcopy's ``*-ops.c``: everything the engine asks an NBD server before
the first request (size, read-only, zero, flush, multi-conn, block sizes,
block status) is read once here into :class:`ServerInfo`.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import traceback

from ansible_collections.migratekit.migration.plugins.module_utils._copy.errors import ConnectError
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import BASE_ALLOCATION

try:
    import nbd
    HAS_NBD = True
    NBD_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the system
    nbd = None
    HAS_NBD = False
    NBD_IMPORT_ERROR = traceback.format_exc()


class ServerInfo(object):
    """What one NBD server negotiated."""

    def __init__(self, handle, role):
        self.role = role
        self.size = handle.get_size()
        self.read_only = bool(handle.is_read_only())
        self.can_zero = bool(handle.can_zero())
        self.can_flush = bool(handle.can_flush())
        self.can_multi_conn = bool(handle.can_multi_conn())
        self.block_min = handle.get_block_size(nbd.SIZE_MINIMUM) or 1
        self.block_preferred = handle.get_block_size(nbd.SIZE_PREFERRED) or 0
        self.block_max = handle.get_block_size(nbd.SIZE_MAXIMUM) or 0
        try:
            self.can_block_status = bool(handle.can_meta_context(BASE_ALLOCATION))
        except nbd.Error:
            self.can_block_status = False

    def as_dict(self):
        return dict((key, value) for key, value in vars(self).items() if key != 'role')


def open_handle(uri, role, disk=None, block_status=False):
    """Connect one libnbd handle to ``uri``; ConnectError names the role and URI."""
    handle = nbd.NBD()
    try:
        handle.set_handle_name('migratekit-%s' % role)
        handle.set_pread_initialize(False)   # buffers are only read after a successful read
        handle.set_uri_allow_local_file(True)  # tls-psk-file=... in a user-given URI
        if block_status:
            handle.add_meta_context(BASE_ALLOCATION)
        handle.connect_uri(uri)
    except nbd.Error as exc:
        message = 'cannot connect to the %s %s of %s: %s' % (role, uri, disk or 'the disk', exc.string)
        raise ConnectError(message + _tls_hint(uri, exc.string), operation='connect to %s' % role, disk=disk)
    return handle


def _tls_hint(uri, error):
    """What to check when the failure is TLS: the server wants it, or the key or certificates do not match."""
    text = (error or '').lower()
    if 'requires tls' in text:
        return ('; the server requires TLS: use an nbds:// (or nbds+unix://) URI with tls-psk-file=<file> and the '
                'PSK user before the host (nbds://<user>@host/...), or tls-certificates=<directory>')
    if uri.startswith('nbds') and ('tls' in text or 'gnutls' in text or 'handshake' in text):
        return ('; the TLS handshake failed: check that the PSK file (tls-psk-file) holds the key the server has for '
                'the user named before the host, or that tls-certificates names the client certificate directory '
                'the server trusts')
    return ''


def close_handle(handle):
    if handle is None:
        return
    try:
        if handle.aio_is_ready() and not handle.aio_in_flight():
            handle.shutdown()
    except nbd.Error:
        pass
