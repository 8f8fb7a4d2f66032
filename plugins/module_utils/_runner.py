# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module runner: every module's ``main()`` is a call of :func:`run_module`.

It builds the AnsibleModule from the backend's :class:`~._argspec.ArgumentSpec`,
checks the libraries the backend declares (one ``missing_required_lib``
path), calls the backend's entry point with the options and check mode, and
reports once: warnings through ``module.warn``, ``diff`` only in diff mode,
a :class:`~.errors.MigratekitError` as its message and fields, anything else
as an unexpected failure with its traceback.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError


def missing_libraries(libraries):
    """The ``(name, import error)`` pairs of ``libraries`` whose import failed."""
    return [(name, error) for name, error in libraries if error is not None]


def run_module(name, spec, entry, libraries=()):
    """Run module ``name``: ``entry(options, check_mode=...)`` returns the result dict.

    ``libraries``: ``(name shown to the user, import error or None)`` pairs,
    as the backend declares them (``LIBRARIES``).
    """
    module = spec.create_ansible_module(supports_check_mode=True)
    for library, error in missing_libraries(libraries):
        module.fail_json(msg=missing_required_lib(library), exception=error)
    try:
        result = entry(spec.options(module.params), check_mode=module.check_mode)
    except MigratekitError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='%s failed unexpectedly: %s: %s' % (name, type(exc).__name__, exc),
                         exception=traceback.format_exc())
    for warning in result.pop('warnings', None) or []:
        module.warn(warning)
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
    module.exit_json(**result)
