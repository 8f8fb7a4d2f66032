# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The roles' argument specs come from one source (scripts/role_specs.yml) through scripts/role_specs.py."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _generator():
    spec = importlib.util.spec_from_file_location('role_specs', os.path.join(REPO_ROOT, 'scripts', 'role_specs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_specs_are_what_the_source_gives():
    generator = _generator()
    assert generator.stale(generator.load_source()) == [], 'run make role-specs'


def test_every_role_is_generated_and_the_public_roles_take_the_shared_options():
    generator = _generator()
    source = generator.load_source()
    roles = sorted(name for name in os.listdir(os.path.join(REPO_ROOT, 'roles'))
                   if os.path.isdir(os.path.join(REPO_ROOT, 'roles', name)))
    assert sorted(source['roles']) == roles
    for role in ('full_sync', 'incremental_sync', 'cutover'):
        options = generator.role_spec(source, role)['argument_specs']['main']['options']
        assert set(source['options']) <= set(options)
        assert not any(name.startswith('__') for name in options), role


def test_an_option_declared_in_two_groups_is_refused():
    generator = _generator()
    source = generator.load_source()
    source['cutover_options'] = dict(source['cutover_options'], migratekit_appliance={'type': 'str'})
    try:
        generator.role_spec(source, 'cutover')
    except ValueError as exc:
        assert 'migratekit_appliance declared twice' in str(exc)
    else:
        raise AssertionError('a duplicate option was accepted')


def test_generated_yaml_indents_sequences():
    generator = _generator()
    text = generator.render(generator.load_source(), 'full_sync')
    assert '\n    description:\n      - ' in text
    assert yaml.safe_load(text)['argument_specs']['main']['options']
