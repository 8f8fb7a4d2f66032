# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A copy's checkpoint: how far an interrupted copy got, and what it belongs to.

The file holds a watermark (everything below it was written and flushed),
the ranges done above it (``done_above``, ``[start, end)`` pairs: work that
finished while earlier work was still under way) and the identity of the copy: the snapshot the source serves, its changeId,
a digest of the extents, the target, the disk size and the sync type. A copy
resumes from a checkpoint only when all of these match; any other checkpoint
is removed before the copy writes anything. Written atomically (temp file,
fsync, rename) by :mod:`.worker` after each flush; removed once the disk is
complete.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import hashlib
import json
import os

from ansible_collections.migratekit.migration.plugins.module_utils import sync_state

VERSION = 1
# what must be equal for a copy to go on from a checkpoint, and how a refusal names it
IDENTITY = (('snapshot', 'snapshot'), ('change_id', 'changeId'), ('extents_digest', 'extents'),
            ('target', 'target'), ('capacity_bytes', 'disk size'), ('sync_type', 'sync type'),
            ('disk_key', 'disk'))


def extents_digest(extents, extents_file):
    """A digest of the areas a copy covers: the extents file's bytes, the extents list, or the whole disk."""
    digest = hashlib.sha256()
    if extents_file:
        with open(extents_file, 'rb') as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b''):
                digest.update(chunk)
    elif extents is not None:
        digest.update(json.dumps([list(extent) for extent in extents]).encode('ascii'))
    else:
        digest.update(b'whole disk')
    return 'sha256:' + digest.hexdigest()


def load(path):
    """The checkpoint in ``path``: a dict, or None when there is none or it cannot be read."""
    try:
        with open(path) as handle:
            saved = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get('version') != VERSION or not isinstance(saved.get('watermark'), int):
        return None
    done = saved.get('done_above', [])
    if not isinstance(done, list) or not all(isinstance(pair, list) and len(pair) == 2 and
                                             all(isinstance(value, int) for value in pair) and
                                             saved['watermark'] <= pair[0] < pair[1] for pair in done):
        return None
    saved['done_above'] = done
    return saved


def mismatch(saved, identity):
    """None when ``saved`` belongs to the copy of ``identity``, else why not."""
    for key, what in IDENTITY:
        if saved.get(key) != identity.get(key):
            return 'the checkpoint is for %s %s, this copy is for %s' % (what, saved.get(key), identity.get(key))
    return None


def write(path, identity, watermark, done_above=(), now=None):
    data = dict(identity, version=VERSION, watermark=int(watermark), done_above=[list(pair) for pair in done_above],
                written_at=(now or datetime.datetime.utcnow()).strftime('%Y-%m-%dT%H:%M:%SZ'))
    sync_state.write_atomic(path, data, what='checkpoint')


def remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
