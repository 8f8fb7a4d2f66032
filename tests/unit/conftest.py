# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared by the module unit tests: run a module's main() in process.

``run_module(module, args, check_mode=False, diff=True)`` gives ``main()``
the arguments as Ansible would, catches ``exit_json``/``fail_json`` and
returns a ``ModuleOutcome(result, failed, warnings)``: the result keyword
arguments (with ``msg`` on failure), whether the module failed, and the
warnings it emitted (``module.warn``).
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import collections
import json

import pytest

from ansible.module_utils import basic
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.common.text.converters import to_bytes

ModuleOutcome = collections.namedtuple('ModuleOutcome', 'result failed warnings')


class _ModuleExit(Exception):
    def __init__(self, result, failed):
        super(_ModuleExit, self).__init__(result)
        self.result = result
        self.failed = failed


@pytest.fixture
def run_module(monkeypatch):
    """Return ``run(module, args, check_mode=False, diff=True)`` -> :class:`ModuleOutcome`."""

    def exit_json(self, **kwargs):
        raise _ModuleExit(kwargs, False)

    def fail_json(self, msg, **kwargs):
        kwargs['msg'] = msg
        raise _ModuleExit(kwargs, True)

    def run(module, args, check_mode=False, diff=True):
        args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff,
                    _ansible_remote_tmp='/tmp', _ansible_keep_remote_files=False)
        monkeypatch.setattr(basic, '_ANSIBLE_ARGS', to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': args})))
        monkeypatch.setattr(basic, '_ANSIBLE_PROFILE', 'legacy', raising=False)
        monkeypatch.setattr(module_warnings, '_global_warnings', type(module_warnings._global_warnings)())
        monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
        monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
        with pytest.raises(_ModuleExit) as info:
            module.main()
        return ModuleOutcome(info.value.result, info.value.failed, list(module_warnings.get_warning_messages()))

    return run
