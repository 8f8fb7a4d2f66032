# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error root of the collection and its one formatter.

Every error a module_utils backend raises derives from
:class:`MigratekitError`: a ``message`` (the cause), the ``operation`` that
failed ("create snapshot 'migratekit'"), the ``subject`` it was about ("VM
VM0, disk Hard disk 1") and ``details``, extra fields for the module result.
``str()`` of any of them is :func:`format_error`; the module runner turns one
into ``fail_json(msg=str(exc), **exc.details)`` in one place.

Areas phrase the operation their way through the class attribute ``phrase``
(users' ``failed_when`` match on these texts, so they stay as released):
``'{operation}{of_subject} failed: {message}'`` by default,
``'Cannot {operation}{subject}: {message}'`` for the VMA client.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class MigratekitError(Exception):
    """Base of every error of the collection."""

    phrase = '{operation}{of_subject} failed: {message}'
    subject = None  # areas that derive it from their own fields make it a property

    def __init__(self, message, operation=None, subject=None, details=None):
        super(MigratekitError, self).__init__(message)
        self.message = message
        self.operation = operation
        if subject is not None:
            self.subject = subject
        self.details = dict(details or {})

    def located(self, operation=None, subject=None):
        """Fill in the operation and subject where they are still unknown; return self."""
        self.operation = self.operation or operation
        if subject and not self.subject:
            self.subject = subject
        return self

    def __str__(self):
        return format_error(self)


def format_error(exc):
    """The text of an error: its phrase with the operation, its subject and its message.

    Without an operation: ``'<subject>: <message>'``, or the message alone.
    """
    message = exc.message
    operation = exc.operation
    subject = exc.subject
    if not operation:
        return '%s: %s' % (subject, message) if subject else message
    return exc.phrase.format(operation=operation, message=message,
                             of_subject=' of %s' % subject if subject else '',
                             subject=' %s' % subject if subject else '')
