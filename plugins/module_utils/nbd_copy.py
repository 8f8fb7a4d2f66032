# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy engine: copy a disk, or only its changed extents, between NBD servers.

This module is the engine's front: the nbd_incremental_copy module's options
(:data:`COPY_SPEC`) and entry point, the library call :func:`copy_disk`, and
the names other code imports. The parts, split as nbdcopy splits them, are
in ``_copy``: ``geometry`` (pure sizes and splitting), ``endpoints`` (a
handle and what a server negotiated), ``plan`` (the policy, settled once),
``worker`` (the loop) and ``job`` (validate, copy, flush, verify, commit).

Usable without Ansible. The shape (see docs/copy-engine.md):

* ``connections`` worker threads; each owns one source and one target libnbd
  handle, polls that pair itself and keeps up to ``requests_in_flight``
  asynchronous requests going on it. Buffers come from a per-worker pool of
  ``request_size`` bytearrays that is reused for the whole copy (a fresh
  ``nbd.Buffer`` per request, i.e. fresh pages to fault in, was the measured
  cost), so memory is bounded by connections x requests_in_flight x
  request_size whatever the disk size or the number of extents.
* Work is a lazy stream of requests shared by the workers: the extents (a list
  or a streamed extents file) split to the servers' block size limits, or, for
  a whole disk, 128 MiB segments that a worker first asks the source's
  ``base:allocation`` block status about.
* Data that reads back as zeros becomes a write-zeroes request; holes become
  write-zeroes requests (zero-filled writes if the target cannot zero) unless
  the caller says the target is already zero.
* Transient errors are retried per request with exponential backoff; a
  persistent one stops every worker and raises :class:`CopyIOError` naming the
  operation, disk, offset and error. Nothing is committed then.

:func:`run_copy` runs the whole sequence (connect, validate, copy, flush,
verify, commit the changeId) and returns the result dict of the module.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._copy.endpoints import (
    HAS_NBD,
    NBD_IMPORT_ERROR,
    ServerInfo,
    close_handle,
    open_handle,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.errors import (
    CommitError,
    ConnectError,
    CopyIOError,
    NbdCopyError,
    ValidationError,
    VerifyError,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.geometry import (
    BASE_ALLOCATION,
    BATCH,
    COPY,
    DEFAULT_CONNECTIONS,
    DEFAULT_IO_TIMEOUT,
    DEFAULT_REQUEST_SIZE,
    DEFAULT_REQUESTS_IN_FLIGHT,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_DELAY,
    MAX_CONNECTIONS,
    MAX_REQUEST_SIZE,
    MAX_REQUESTS_IN_FLIGHT,
    MIN_REQUEST_SIZE,
    PERMANENT_ERRNOS,
    PROBE,
    SEGMENT_SIZE,
    STATE_HOLE,
    STATE_ZERO,
    UNSUPPORTED_ERRNOS,
    VERIFY,
    VERIFY_CHOICES,
    WRITE,
    ZERO,
    ZERO_REQUEST_SIZE,
    GiB,
    KiB,
    MiB,
    align_down,
    align_extents,
    align_runs,
    align_up,
    class_pieces,
    describe_errno,
    effective_request_size,
    errno_name,
    gaps,
    length_classes,
    merge_ranges,
    request_quantum,
    runs_from_block_status,
    split_range,
    throughput,
    uncovered,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.job import (
    DiskCopy,
    ExtentsFile,
    check_incremental_base,
    resolve_extents,
    run_copy,
)
from ansible_collections.migratekit.migration.plugins.module_utils._copy.plan import CopyPlan
from ansible_collections.migratekit.migration.plugins.module_utils._copy.progress_file import Fanout, ProgressFile, Watchdog, mark_failed
from ansible_collections.migratekit.migration.plugins.module_utils._copy.shared import SharedState
from ansible_collections.migratekit.migration.plugins.module_utils._copy.worker import Worker
from ansible_collections.migratekit.migration.plugins.module_utils._vma.options import REPORTING_SPEC

# The names other code uses from here, the parts in _copy included.
__all__ = [
    'BASE_ALLOCATION', 'BATCH', 'COPY', 'COPY_SPEC', 'CommitError', 'ConnectError', 'CopyIOError', 'CopyPlan',
    'DEFAULT_CONNECTIONS', 'DEFAULT_IO_TIMEOUT', 'DEFAULT_REQUESTS_IN_FLIGHT', 'DEFAULT_REQUEST_SIZE',
    'DEFAULT_RETRIES', 'DEFAULT_RETRY_DELAY', 'DiskCopy', 'ExtentsFile', 'GiB', 'HAS_NBD', 'KiB', 'LIBRARIES',
    'MAX_CONNECTIONS', 'MAX_REQUESTS_IN_FLIGHT', 'MAX_REQUEST_SIZE', 'MIN_REQUEST_SIZE', 'MiB', 'NBD_IMPORT_ERROR',
    'NbdCopyError', 'PERMANENT_ERRNOS', 'PROBE', 'SEGMENT_SIZE', 'STATE_HOLE', 'STATE_ZERO', 'ServerInfo',
    'SharedState', 'UNSUPPORTED_ERRNOS', 'VERIFY', 'VERIFY_CHOICES', 'ValidationError', 'VerifyError', 'WRITE',
    'Worker', 'ZERO', 'ZERO_REQUEST_SIZE', 'align_down', 'align_extents', 'align_runs', 'align_up',
    'check_incremental_base', 'class_pieces', 'close_handle', 'copy_disk', 'copy_module', 'describe_errno',
    'effective_request_size', 'errno_name', 'error_details', 'error_message', 'gaps', 'length_classes', 'merge_ranges',
    'open_handle', 'progress_factory', 'request_quantum', 'resolve_extents', 'run_copy',
    'runs_from_block_status', 'split_range', 'throughput', 'uncovered',
]

# The old private name of the worker (tests and benchmarks of the first wave).
_Worker = Worker

# What the copy needs besides Ansible.
LIBRARIES = (('nbd (Debian package python3-libnbd)', NBD_IMPORT_ERROR),)

# The options of the nbd_incremental_copy module: the copy's, and the VMA's for its progress.
COPY_SPEC = REPORTING_SPEC.merge(ArgumentSpec(dict(
    source=dict(type='str', required=True),
    target=dict(type='str', required=True),
    extents_file=dict(type='path'),
    extents=dict(type='list', elements='raw'),
    sync_type=dict(type='str', choices=['full', 'incremental']),
    target_is_zero=dict(type='bool', default=False),
    connections=dict(type='int', default=DEFAULT_CONNECTIONS),
    request_size=dict(type='int', default=DEFAULT_REQUEST_SIZE),
    requests_in_flight=dict(type='int', default=DEFAULT_REQUESTS_IN_FLIGHT),
    retries=dict(type='int', default=DEFAULT_RETRIES),
    io_timeout=dict(type='int', default=DEFAULT_IO_TIMEOUT),
    verify=dict(type='str', choices=list(VERIFY_CHOICES), default='none'),
    state_file=dict(type='path'),
    disk_key=dict(type='int', no_log=False),
    change_id=dict(type='str'),
    vm_uuid=dict(type='str'),
    disk_id=dict(type='str'),
    progress_interval=dict(type='float', default=2.0),
    checkpoint_file=dict(type='path'),
    snapshot_moref=dict(type='str'),
    progress_file=dict(type='path'),
    watch_pid=dict(type='int'),
), mutually_exclusive=[('extents', 'extents_file')], required_by={'checkpoint_file': ['snapshot_moref']}))


def copy_module(options, check_mode=False):
    """The whole nbd_incremental_copy module (:data:`COPY_SPEC`): progress to the VMA when ``vma_url`` is set,
    to ``progress_file`` when set."""
    factories = []
    if options.vma_url:
        # imported here: a copy that does not report needs neither requests nor the client
        from ansible_collections.migratekit.migration.plugins.module_utils._vma.reporter import ProgressReporter
        factories.append(progress_factory(ProgressReporter, options))
    if options.progress_file:
        factories.append(progress_file_factory(options))
    factory = None
    if len(factories) == 1:
        factory = factories[0]
    elif factories:
        def factory(total_bytes, sync_type, disk_key):
            return Fanout([make(total_bytes, sync_type, disk_key) for make in factories])
    # from the start: a copy run in the background stops once the process running the cycle is gone
    watchdog = Watchdog(options.watch_pid).start() if options.watch_pid else None
    try:
        return run_copy(options, check_mode=check_mode, progress_factory=factory)
    except Exception as exc:
        if options.progress_file:  # a copy refused before it started reporting ends its progress too
            mark_failed(options.progress_file, str(exc))
        raise
    finally:
        if watchdog is not None:
            watchdog.stop()


def copy_disk(source, target, progress=None, progress_factory=None, check_mode=False,  # pylint: disable=redefined-outer-name
              retry_delay=DEFAULT_RETRY_DELAY, **options):
    """Library form of the module: ``options`` are any of :data:`COPY_SPEC`'s, defaults fill in the rest."""
    return run_copy(COPY_SPEC.options(source=source, target=target, **options), check_mode=check_mode,
                    progress=progress, progress_factory=progress_factory, retry_delay=retry_delay)


def progress_factory(reporter_class, options):
    """Return a ``progress_factory`` for :func:`run_copy` building VMA reporters from the module's options.

    ``options`` has ``vma_url``, ``job_id``, ``token``, ``validate_certs``,
    ``disk_id`` and ``progress_interval`` (an Options or a dict).
    """
    def factory(total_bytes, sync_type, disk_key):
        disk_id = options['disk_id']
        if not disk_id and disk_key is not None:
            disk_id = 'disk-%s' % disk_key
        return reporter_class(options['vma_url'], options['job_id'], disk_id, sync_type, total_bytes,
                              token=options['token'], validate_certs=options['validate_certs'],
                              interval=options['progress_interval'] or 2.0)
    return factory


def progress_file_factory(options):
    """A ``progress_factory`` publishing progress in ``options['progress_file']`` (see ``_copy/progress_file.py``)."""
    def factory(total_bytes, sync_type, disk_key):
        disk = options['disk_id'] or ('disk-%s' % disk_key if disk_key is not None else options['source'])
        return ProgressFile(options['progress_file'], disk, sync_type, total_bytes,
                            interval=options['progress_interval'] or 2.0)
    return factory


def error_message(exc):
    """The failure message: names the operation, the disk and (for I/O) the offset (``str(exc)``)."""
    return str(exc)


def error_details(exc):
    """Structured fields of a failure for the module result (``exc.details``)."""
    return dict(exc.details)
