# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VMDK chain the file transport serves, checked before any server starts (reads files, writes none).

A vSphere disk on a datastore is a descriptor (text, ``# Disk DescriptorFile``)
naming its extents (``VM0-flat.vmdk``; ``-delta.vmdk``, ``-sesparse.vmdk`` for
deltas), or a sparse VMDK with an embedded descriptor (``KDMV``). A delta's
descriptor names its parent (``parentFileNameHint``, relative to its
directory, or absolute for a parent on another datastore). Everything the
chain needs must be readable inside the datastore mount, and raw device
mappings are not files the transport can read.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re
import struct

from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.config import NbdkitConfigError

TEXT_MAGIC = b'# Disk DescriptorFile'
SPARSE_MAGIC = b'KDMV'
RDM_TYPES = ('vmfsRawDeviceMap', 'vmfsPassthroughRawDeviceMap', 'fullDevice', 'partitionedDevice')
RDM_EXTENTS = ('VMFSRDM', 'VMFSRAW')
NO_PARENT = 'ffffffff'
EXTENT_RE = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+"([^"]*)")?(?:\s+(\d+))?\s*$')
MAX_DEPTH = 255  # vSphere allows 32 snapshots per chain; anything deeper is a loop
HEADER_BYTES = 64 * 1024


def _fail(disk, path, message):
    raise NbdkitConfigError('path: cannot serve %s: %s %s' % (disk, path, message))


def read_descriptor(path, disk):
    """The descriptor text of ``path`` (a text descriptor or a sparse VMDK's embedded one)."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(HEADER_BYTES)
            if head.startswith(SPARSE_MAGIC):
                if len(head) < 44:
                    _fail(disk, path, 'is a truncated sparse VMDK (expected a 512-byte header)')
                offset, size = struct.unpack('<QQ', head[28:44])
                if not offset or not size:
                    _fail(disk, path, 'is a sparse VMDK without an embedded descriptor (expected a monolithicSparse '
                          'file or a text descriptor)')
                handle.seek(offset * 512)
                text = handle.read(size * 512).rstrip(b'\0')
                return text.decode('utf-8', 'replace'), True
    except (IOError, OSError) as exc:
        _fail(disk, path, 'cannot be read: %s (expected the VMDK descriptor on the datastore mount)'
              % (exc.strerror or exc))
    if not head.startswith(TEXT_MAGIC):
        _fail(disk, path, 'is not a VMDK descriptor (expected a text file starting with "# Disk DescriptorFile", '
              'or a sparse VMDK starting with "KDMV"; got %r)' % head[:24])
    if len(head) == HEADER_BYTES:
        _fail(disk, path, 'is too large for a VMDK descriptor (expected a small text file naming its extents)')
    return head.decode('utf-8', 'replace'), False


def _fields(text):
    fields, extents = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        match = EXTENT_RE.match(line)
        if match:
            extents.append((match.group(3), match.group(4)))
            continue
        if '=' in line:
            key, value = line.split('=', 1)
            fields[key.strip()] = value.strip().strip('"')
    return fields, extents


def _inside(path, root):
    return os.path.commonpath([os.path.realpath(path), root]) == root


def check_chain(path, root=None, disk=None):
    """Check the chain whose top descriptor is ``path``; return its files (the top's descriptor first).

    ``root``: the datastore mount every file must stay inside (symlinks
    resolved). Raises NbdkitConfigError naming the disk, the file and what
    was expected.
    """
    disk = '%s (%s)' % (disk, path) if disk else path
    root = os.path.realpath(root) if root else None
    files = []
    seen = set()
    current = path
    while True:
        if root and not _inside(current, root):
            _fail(disk, current, 'is outside the datastore mount %s (expected every descriptor, extent and parent '
                  'of the chain inside it; map the parent\'s datastore in migratekit_datastore_paths)' % root)
        real = os.path.realpath(current)
        if real in seen or len(files) > MAX_DEPTH:
            _fail(disk, current, 'closes a loop in the chain of parents')
        seen.add(real)
        text, sparse = read_descriptor(current, disk)
        fields, extents = _fields(text)
        create_type = fields.get('createType', '')
        if create_type in RDM_TYPES:
            _fail(disk, current, 'is a raw device mapping (createType %s): the file transport reads VMDK files, '
                  'not LUNs (expected a flat, sparse or delta disk)' % create_type)
        if not extents:
            _fail(disk, current, 'names no extent (expected lines like RW 2097152 FLAT "disk-flat.vmdk" 0)')
        files.append(current)
        directory = os.path.dirname(current)
        for kind, name in extents:
            if kind in RDM_EXTENTS:
                _fail(disk, current, 'names a raw device mapping extent (%s): the file transport reads VMDK files, '
                      'not LUNs' % kind)
            if kind == 'ZERO' or (sparse and kind == 'SPARSE' and not name):
                continue
            if not name:
                _fail(disk, current, 'names a %s extent without a file name' % kind)
            extent = os.path.join(directory, name)
            if sparse and os.path.realpath(extent) == real:
                continue
            if root and not _inside(extent, root):
                _fail(disk, current, 'names the extent %s outside the datastore mount %s' % (extent, root))
            if not os.path.isfile(extent):
                _fail(disk, current, 'names the extent %s, which is missing (expected it next to the descriptor)'
                      % extent)
            if extent not in files:
                files.append(extent)
        parent_cid = fields.get('parentCID', NO_PARENT).lower()
        hint = fields.get('parentFileNameHint')
        if parent_cid == NO_PARENT and not hint:
            return files
        if not hint:
            _fail(disk, current, 'is a delta (parentCID %s) without parentFileNameHint (expected the name of its '
                  'parent disk)' % parent_cid)
        parent = hint if os.path.isabs(hint) else os.path.join(directory, hint)
        if root and not _inside(parent, root):
            _fail(disk, current, 'has its parent %s outside the datastore mount %s (expected every link of the '
                  'chain inside it)' % (parent, root))
        if not os.path.isfile(parent):
            _fail(disk, current, 'names the parent %s, which is missing (expected the parent descriptor of the '
                  'delta)' % parent)
        current = parent
