# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which snapshots of a VM are ours: the marker in their description and the record in the sync state.

A snapshot this collection creates carries a marker line in its description
(``[migratekit.migration snapshot kind=<kind> vm=<instance uuid>
token=<hex>]``), and its token (written before CreateSnapshot) and moref
(written after) are recorded in the VM's sync state file. A migration
snapshot is ours only when both agree: the marker names this VM and its token
or moref is recorded. A name is never enough: a user's snapshot called like
ours is a user's snapshot. Without a state file the marker naming this VM is
the only record there is.

CBT stun snapshots (created and removed within one call) are recognised by
their marker alone: one that survives a crash holds nothing anyone wants and
the next cycle removes it.

Pure functions over SnapshotTree nodes already read.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import binascii
import collections
import os
import re

from ansible_collections.migratekit.migration.plugins.module_utils._cbt.inventory import (
    iter_snapshot_tree,
    snapshot_created_at,
)

KIND_MIGRATION = 'migration'
KIND_STUN = 'cbt-stun'

_MARKER = re.compile(r'\[migratekit\.migration snapshot kind=(?P<kind>[a-z-]+) vm=(?P<vm>[^\s\]]+) '
                     r'token=(?P<token>[0-9a-f]{8,64})\]')

Marker = collections.namedtuple('Marker', 'kind vm token')

# What a VM's snapshot tree holds, for one cycle: ``ours`` the migration
# snapshots we may reuse or remove (oldest first), ``stun_leftovers`` CBT stun
# snapshots a crash left behind, ``unrecorded`` migration snapshots of this VM
# whose marker is not in our record (another state directory's, or a record
# kept aside), ``users`` every other snapshot.
SnapshotSort = collections.namedtuple('SnapshotSort', 'ours stun_leftovers unrecorded users')


def new_token():
    return binascii.hexlify(os.urandom(16)).decode('ascii')


def marker_line(kind, vm_instance_uuid, token):
    return '[migratekit.migration snapshot kind=%s vm=%s token=%s]' % (kind, vm_instance_uuid or '-', token)


def describe(text, kind, vm_instance_uuid, token):
    """A snapshot description: ``text`` for people, then the marker line."""
    return '%s\n%s' % (text, marker_line(kind, vm_instance_uuid, token))


def parse_marker(description):
    """The :class:`Marker` in a snapshot description, or None."""
    match = _MARKER.search(description or '')
    if not match:
        return None
    return Marker(match.group('kind'), match.group('vm'), match.group('token'))


def _normalize_uuid(value):
    return value.replace('-', '').replace(' ', '').lower()


def _same_vm(marker, vm_instance_uuid):
    if not vm_instance_uuid:
        return True
    return _normalize_uuid(marker.vm) == _normalize_uuid(vm_instance_uuid)


def sort_snapshots(snapshot_info, name, vm_instance_uuid, recorded):
    """Sort a VM's snapshot tree into a :class:`SnapshotSort`.

    ``name`` is the migration snapshot's name, ``recorded`` the ``snapshots``
    record of the sync state (``{token: {"moid": ...}}``), or None when no
    state file is used (the marker is then the only record).
    """
    recorded_tokens = set((recorded or {}).keys())
    recorded_moids = set(entry.get('moid') for entry in (recorded or {}).values() if entry.get('moid'))
    ours, stun, unrecorded, users = [], [], [], []
    for node in iter_snapshot_tree(snapshot_info):
        marker = parse_marker(getattr(node, 'description', None))
        if marker is None or not _same_vm(marker, vm_instance_uuid):
            users.append(node)
        elif marker.kind == KIND_STUN:
            stun.append(node)
        elif marker.kind != KIND_MIGRATION:
            users.append(node)
        elif recorded is not None and marker.token not in recorded_tokens \
                and node.snapshot._moId not in recorded_moids:
            unrecorded.append(node)
        elif node.name == name:
            ours.append(node)
        else:
            # ours, but made under another snapshot_name: not this cycle's to reuse
            unrecorded.append(node)
    ours.sort(key=snapshot_created_at)
    return SnapshotSort(ours, stun, unrecorded, users)


def describe_nodes(nodes):
    """``'name' (moid, created <time>)`` of each node, for messages."""
    return ', '.join("'%s' (%s, created %s)" % (node.name, node.snapshot._moId, _iso_or_unknown(node))
                     for node in nodes)


def _iso_or_unknown(node):
    created = getattr(node, 'createTime', None)
    if created is None:
        return 'at an unknown time'
    return created.strftime('%Y-%m-%dT%H:%M:%SZ')
