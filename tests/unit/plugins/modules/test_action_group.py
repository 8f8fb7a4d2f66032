# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_defaults for group/migratekit.migration.vmware give every member the whole vSphere
connection: each module of the group accepts every connection option (name and aliases)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib
import os

import pytest
import yaml

from ansible_collections.migratekit.migration.plugins.module_utils import vsphere

RUNTIME = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'meta', 'runtime.yml')
with open(RUNTIME) as _handle:
    GROUP = yaml.safe_load(_handle)['action_groups']['vmware']


def _names(options):
    names = set(options)
    for spec in options.values():
        names.update(spec.get('aliases') or ())
    return names


@pytest.mark.parametrize('name', GROUP)
def test_every_group_member_accepts_the_whole_connection(name):
    module = importlib.import_module('ansible_collections.migratekit.migration.plugins.modules.' + name)
    spec = module.main.__globals__  # the module's namespace: its spec object is imported there
    specs = [value for value in spec.values() if hasattr(value, 'argument_spec') and hasattr(value, 'options')]
    assert specs, name
    accepted = set.union(*(_names(found.argument_spec) for found in specs))
    assert _names(vsphere.CONNECTION_SPEC.argument_spec) - accepted == set(), name
