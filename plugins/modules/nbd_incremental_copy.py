#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
module: nbd_incremental_copy
short_description: Copy a disk, or only its changed extents, from one NBD server to another
description:
  - Copies a disk from a source NBD URI (for example nbdkit serving a frozen VMware snapshot) to a
    target NBD URI (the new cloud volume), with many asynchronous libnbd requests in flight over
    several connections.
  - With O(extents_file) or O(extents) only those areas are copied (an incremental sync from
    Changed Block Tracking); with neither the whole disk is copied, skipping the source's holes
    (its C(base:allocation) block status).
  - A full copy onto a target not known to be zero (O(target_is_zero=false)) writes zeros where the
    source is zero or a hole; it never leaves old target data there.
  - Everything is checked before the first write (both servers reachable, target writable and at
    least as large as the source, every extent inside the source, the incremental base matches
    O(state_file)); a problem fails the task with nothing written.
  - Transient I/O errors are retried per request with backoff; a persistent error fails the task
    naming the operation, disk and offset, and the state file is left untouched.
  - After the last write and a successful flush of the target (and O(verify)), O(change_id) is
    committed for O(disk_key) in O(state_file), atomically.
  - Progress is reported to the migration appliance (VMA) every O(progress_interval) seconds when
    O(vma_url) is set.
version_added: 0.1.0
author:
  - migratekit.migration contributors (@migratekit)
requirements:
  - libnbd Python bindings (C(import nbd), Debian package C(python3-libnbd)) on the host that runs the module.
extends_documentation_fragment:
  - migratekit.migration.vma
  - migratekit.migration.vma.reporting
  - migratekit.migration.vma.attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the servers are connected to and the input is validated, nothing is written
        and the state file is not changed; RV(plan) says what would move.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - A run with nothing to copy (an empty extent list) reports C(changed=false).
      - A run with extents, or a whole-disk copy, writes them again and reports C(changed=true);
        the data on the target is the same.
options:
  source:
    description:
      - NBD URI of the source disk, as libnbd parses it, for example
        V(nbd+unix:///?socket=/run/migratekit/vm0-2000.sock) or V(nbd://10.0.0.5:10809/disk).
      - It is only read.
    type: str
    required: true
  target:
    description:
      - NBD URI of the target volume, for example V(nbd://volume-host:10809/vol-1) or
        V(nbds://volume-host/vol-1) (TLS).
      - It must be writable and at least as large as the source.
    type: str
    required: true
  extents_file:
    description:
      - Extents file written by M(migratekit.migration.vmware_cbt_snapshot) (JSON, one extent per
        line); it is streamed, so files with millions of extents are fine.
      - Its header also gives defaults for O(disk_key), O(change_id) and O(sync_type).
      - Mutually exclusive with O(extents). With neither, the whole disk is copied.
    type: path
  extents:
    description:
      - Areas to copy, as a list of V([offset, length]) pairs in bytes. They are sorted and merged.
      - An empty list copies nothing (C(changed=false)).
      - Mutually exclusive with O(extents_file).
    type: list
    elements: raw
  sync_type:
    description:
      - V(incremental) copies only the extents and leaves the rest of the target alone.
      - V(full) makes the target equal to the source everywhere. With extents (the allocated
        areas of the disk) the areas between them are written as zeros unless O(target_is_zero=true).
      - Default the C(sync_type) of the extents file, else V(incremental) with O(extents) and V(full)
        without extents. A value other than the extents file's fails before anything is written.
    type: str
    choices: [full, incremental]
  target_is_zero:
    description:
      - The target reads as zeros everywhere (for example a newly created volume), so that a full
        copy may skip holes and zero data instead of writing zeros.
      - Wrong on a used target, this leaves old data in place. Leave it V(false) unless sure.
    type: bool
    default: false
  connections:
    description:
      - Number of connections to each server, each driven by its own thread.
      - Used only when both servers advertise multi-conn; otherwise one connection is used (for
        example nbdkit's vddk plugin), with O(requests_in_flight) requests on it.
    type: int
    default: 4
  request_size:
    description:
      - Largest read or write request, in bytes (4096 to 33554432). Lowered to the servers' maximum
        block size; requests are aligned to their minimum block size.
      - Memory used for data is about O(connections) x O(requests_in_flight) x O(request_size).
    type: int
    default: 262144
  requests_in_flight:
    description:
      - Requests in flight per connection (1 to 1024).
    type: int
    default: 32
  retries:
    description:
      - How many times one failed request is retried (exponential backoff from 0.1 s, at most 5 s
        between tries) before the copy fails.
    type: int
    default: 5
  io_timeout:
    description:
      - Seconds without any reply from a server, while requests are in flight, before the copy
        fails (a stalled server or network).
    type: int
    default: 300
  verify:
    description:
      - V(none) trusts the writes and the flush.
      - V(checksum) reads back the copied areas from both servers after the flush and compares
        them; a difference fails the task and nothing is committed. It doubles the reads.
    type: str
    choices: [none, checksum]
    default: none
  state_file:
    description:
      - Sync state file of the VM (one per VM). After a successful copy and flush, O(change_id),
        the disk size and O(target) are committed there for O(disk_key), atomically.
      - For an incremental copy it is also checked first; the extents must be relative to the
        changeId recorded there for this disk, onto the same target.
      - Untouched when the copy fails.
    type: path
  disk_key:
    description:
      - vSphere device key of the disk (for example V(2000)). Default from the extents file.
      - Required with O(state_file).
    type: int
  change_id:
    description:
      - The snapshot's changeId to commit after the copy. Default from the extents file.
      - Required with O(state_file).
    type: str
  vm_uuid:
    description:
      - UUID of the VM the disk belongs to. The state file is refused when it belongs to another VM.
    type: str
  disk_id:
    description:
      - Disk id in the progress updates. Default V(disk-<disk_key>).
    type: str
  progress_interval:
    description:
      - Seconds between progress updates to the VMA.
    type: float
    default: 2.0
  checkpoint_file:
    description:
      - Make the copy resumable. While copying, at least every 5 seconds and every GiB, the target is flushed and
        then this file records how far the copy got (written atomically as temp file, fsync, rename), with what
        the copy is (O(snapshot_moref), the changeId, a digest of the extents, the target, the disk size and the
        sync type).
      - A copy that finds a checkpoint of the same copy goes on from there (RV(resumed_at_bytes)); a checkpoint
        of any other copy is removed before anything is written, and the copy starts from the beginning.
      - The file is removed once the disk is complete (after the flush and the commit of O(change_id)); the
        changeId is committed only then, resumed or not.
      - Keep it where it survives a reboot of the appliance (next to O(state_file)).
    type: path
    version_added: 0.2.0
  snapshot_moref:
    description:
      - The managed object reference of the snapshot the source serves (for example V(snapshot-42)). Required
        with O(checkpoint_file), because a checkpoint is valid only for the frozen data it was taken on.
    type: str
  progress_file:
    description:
      - "Publish the copy's progress in this file (JSON, replaced atomically every O(progress_interval) seconds and
        once at the end): C(disk), C(sync_type), C(state) (V(running), V(done) or V(failed)), C(bytes_done),
        C(total_bytes), C(percent), C(bytes_moved), C(rate_bps), C(eta_seconds), C(elapsed), C(updated),
        C(message)."
      - For a copy run as an async task, so that the play can show its progress while it runs (the sync roles
        do). Its directory must exist. Best effort, like the VMA's updates (a file that cannot be written is a
        warning).
    type: path
    version_added: 0.2.0
  watch_pid:
    description:
      - The process running the cycle (the RV(migratekit.migration.cycle_lock#module:watch_pid) of the cycle's
        lock). When it is gone the copy stops (as if killed; its checkpoint stays, so the next cycle resumes), so
        that a copy run in the background never outlives the playbook that started it.
    type: int
    version_added: 0.2.0
notes:
  - Memory stays bounded by O(connections) x O(requests_in_flight) x O(request_size), whatever the
    disk size or the number of extents.
  - The module runs on the host that reaches both NBD servers (usually the migration appliance),
    with the Python interpreter that has the C(nbd) module.
seealso:
  - module: migratekit.migration.vmware_cbt_snapshot
  - module: migratekit.migration.vma_progress
'''

EXAMPLES = r'''
- name: First (full) copy of a disk onto a new, empty volume
  migratekit.migration.nbd_incremental_copy:
    source: "nbd+unix:///?socket=/run/migratekit/vm0-2000.sock"
    target: "nbd://volume-host:10809/vol-2000"
    sync_type: full
    target_is_zero: true
    state_file: /var/lib/migratekit/state/vm0.json
    vm_uuid: "{{ vm.uuid }}"
    disk_key: 2000
    change_id: "{{ snapshot.disks['2000'].change_id }}"

- name: Incremental copy of the changed areas, reporting progress to the VMA
  migratekit.migration.nbd_incremental_copy:
    source: "nbd+unix:///?socket=/run/migratekit/vm0-2000.sock"
    target: "nbd://volume-host:10809/vol-2000"
    extents_file: /var/lib/migratekit/extents/vm0-2000.json
    state_file: /var/lib/migratekit/state/vm0.json
    vm_uuid: "{{ vm.uuid }}"
    vma_url: https://vma.example.com:8081
    job_id: "{{ job_id }}"
    token: "{{ vma_token }}"
  register: copy

- name: Copy two areas and compare them afterwards
  migratekit.migration.nbd_incremental_copy:
    source: "nbd+unix:///?socket=/tmp/src.sock"
    target: "nbd+unix:///?socket=/tmp/dst.sock"
    extents: [[0, 1048576], [67108864, 65536]]
    verify: checksum
'''

RETURN = r'''
changed:
  description: Whether anything was written to the target (false when there was nothing to copy).
  returned: always
  type: bool
bytes_written:
  description: Bytes of data written to the target.
  returned: always
  type: int
  sample: 85852160
bytes_zeroed:
  description: Bytes written as zeros (write-zeroes requests, or zero-filled writes where the target cannot zero).
  returned: always
  type: int
  sample: 0
bytes_skipped:
  description:
    - Bytes of the disk not written, that is areas outside the extents, and holes and zeros skipped on a
      zero target.
  returned: always
  type: int
  sample: 4209115136
extent_count:
  description: Number of extents copied (whole-disk copies count the allocated runs found).
  returned: always
  type: int
  sample: 1310
elapsed:
  description: Seconds spent copying, flushing and verifying.
  returned: success
  type: float
  sample: 0.42
throughput_bps:
  description: Bytes of data actually written per second of copying (holes and zeros not counted).
  returned: success
  type: int
  sample: 612000000
verified:
  description: Whether the copied areas were read back from both ends and found equal (O(verify=checksum)).
  returned: always
  type: bool
committed_change_id:
  description: The changeId recorded for the disk in O(state_file), or null when none was committed.
  returned: always
  type: str
  sample: "52 3c 5f 1a .../7"
state_updated:
  description: Whether O(state_file) was written (false when it already held that changeId).
  returned: always
  type: bool
flushed:
  description: Whether the target was flushed (false only when the server does not support flush).
  returned: success
  type: bool
retried_requests:
  description: Number of request retries after transient errors.
  returned: success
  type: int
  sample: 0
sync_type:
  description: V(full) or V(incremental), as used.
  returned: success
  type: str
capacity_bytes:
  description: Size of the source disk in bytes.
  returned: success
  type: int
  sample: 4294967296
disk_key:
  description: The disk's device key, when known.
  returned: success
  type: int
  sample: 2000
connections:
  description: Connections used per server.
  returned: success
  type: int
request_size:
  description: Largest request used, after the servers' block size limits.
  returned: success
  type: int
requests_in_flight:
  description: Requests in flight per connection.
  returned: success
  type: int
resumed_at_bytes:
  description: Bytes of the copy that an earlier, interrupted run had done (with O(checkpoint_file)); 0 or absent otherwise.
  returned: when the copy resumed
  type: int
  sample: 107374182400
resume:
  description: What became of O(checkpoint_file), for example V(resumed at 107374182400 of 214748364800 bytes (...)).
  returned: when a checkpoint was found
  type: str
checkpoints:
  description: Checkpoints written during this run.
  returned: success
  type: int
  sample: 12
checkpoint_file:
  description: On failure, the checkpoint that lets the next run go on (only when one was written).
  returned: failure
  type: str
plan:
  description: In check mode, what the copy would move.
  returned: check mode
  type: dict
  contains:
    data_bytes:
      description: Bytes that would be read and written (for a whole disk, the allocated bytes).
      type: int
    zero_bytes:
      description: Bytes that would be written as zeros.
      type: int
    skipped_bytes:
      description: Bytes that would be left alone.
      type: int
    extent_count:
      description: Extents (or allocated runs) that would be copied.
      type: int
    capacity_bytes:
      description: Size of the source disk.
      type: int
    connections:
      description: Connections that would be used.
      type: int
    request_size:
      description: Request size that would be used.
      type: int
    requests_in_flight:
      description: Requests in flight per connection.
      type: int
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.nbd_copy import COPY_SPEC, LIBRARIES, copy_module


def main():
    run_module('nbd_incremental_copy', COPY_SPEC, copy_module, LIBRARIES)


if __name__ == '__main__':
    main()
