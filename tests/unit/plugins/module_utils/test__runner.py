# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module runner: options in, one report out (warnings, diff, known and unexpected errors)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import _runner
from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils.errors import MigratekitError

SPEC = ArgumentSpec(dict(size=dict(type='int', default=1), secret=dict(type='str', no_log=True)))


class Module(object):
    """main() of a module whose entry point is ``entry``."""

    def __init__(self, entry, libraries=()):
        self.entry, self.libraries = entry, libraries

    def main(self):
        _runner.run_module('demo', SPEC, self.entry, self.libraries)


def test_entry_gets_typed_options_and_check_mode_warnings_go_out(run_module):
    seen = []

    def entry(options, check_mode=False):
        seen.append((options.size, options.secret, check_mode))
        return {'changed': False, 'warnings': ['w1'], 'diff': {'before': 1, 'after': 2}}
    out = run_module(Module(entry), {'size': '7'}, check_mode=True, diff=False)
    assert seen == [(7, None, True)]
    assert out.warnings == ['w1'] and 'warnings' not in out.result and 'diff' not in out.result
    assert run_module(Module(entry), {}, diff=True).result['diff'] == {'before': 1, 'after': 2}


def test_a_known_error_is_reported_once_with_its_fields(run_module):
    def entry(options, check_mode=False):
        raise MigratekitError('no space', operation='write', subject='disk 1', details={'failed_offset': 0})
    out = run_module(Module(entry), {})
    assert out.failed and out.result == {'msg': 'write of disk 1 failed: no space', 'failed_offset': 0}


def test_an_unexpected_error_names_the_module_and_keeps_the_traceback(run_module):
    def entry(options, check_mode=False):
        raise KeyError('x')
    out = run_module(Module(entry), {})
    assert out.failed and out.result['msg'] == "demo failed unexpectedly: KeyError: 'x'"
    assert 'Traceback' in out.result['exception']


def test_a_missing_library_fails_before_the_entry_point_runs(run_module):
    def entry(options, check_mode=False):
        pytest.fail('the entry point ran')
    out = run_module(Module(entry, [('nbd (python3-libnbd)', 'ImportError: no nbd'), ('ok', None)]), {})
    assert out.failed and 'Failed to import the required Python library (nbd (python3-libnbd))' in out.result['msg']
    assert out.result['exception'] == 'ImportError: no nbd'
