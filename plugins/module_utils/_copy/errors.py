# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy engine's errors: one class per way a copy fails, each naming the operation, disk and offset."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError


class NbdCopyError(MigratekitError):
    """Base of the engine's errors. ``operation``, ``disk`` and ``offset`` say where.

    The subject is the disk (unless the message names it already) and the
    offset (unless the message gives one); ``details`` are the
    ``failed_operation``, ``failed_disk`` and ``failed_offset`` result fields.
    """

    def __init__(self, message, operation=None, disk=None, offset=None):
        super(NbdCopyError, self).__init__(message, operation=operation)
        self.disk = disk
        self.offset = offset
        self.resume = {}  # where a checkpoint lets the next run go on (checkpoint_file, checkpoints)

    @property
    def subject(self):
        if not self.disk:
            return None
        subject = self.disk if self.disk not in self.message else ''
        if self.offset is not None and 'offset' not in self.message:
            subject += ' at offset %d' % self.offset
        return subject.strip() or None

    @property
    def details(self):
        fields = (('failed_operation', self.operation), ('failed_disk', self.disk), ('failed_offset', self.offset))
        details = dict((key, value) for key, value in fields if value is not None)
        details.update(self.resume)
        return details

    @details.setter
    def details(self, value):
        pass  # derived from operation, disk and offset


class ConnectError(NbdCopyError):
    """A server could not be reached or did not negotiate."""


class ValidationError(NbdCopyError):
    """Bad input, found before anything was written."""


class CopyIOError(NbdCopyError):
    """A request failed persistently (after the retries). The target is incomplete.

    A request's message names its operation, disk and offset itself.
    """

    def __init__(self, message, operation=None, disk=None, offset=None, length=None, errnum=None, attempts=None):
        super(CopyIOError, self).__init__(message, operation, disk, offset)
        self.length = length
        self.errnum = errnum
        self.attempts = attempts

    @property
    def phrase(self):
        return '{message}' if self.offset is not None else NbdCopyError.phrase


class VerifyError(NbdCopyError):
    """verify=checksum found source and target different."""


class CommitError(NbdCopyError):
    """The copy succeeded but the sync state could not be committed."""
