# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ArgumentSpec composes specs without changing them; Options read as the spec declares."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec

BASE = ArgumentSpec(dict(name=dict(type='str'), path=dict(type='str')), mutually_exclusive=[('name', 'path')])
MORE = ArgumentSpec(dict(force=dict(type='bool', default=False), token=dict(type='str', no_log=True)),
                    required_if=[('force', True, ['name'])])


def test_merge_makes_a_new_spec_with_both_options_and_rules():
    merged = BASE.merge(MORE)
    assert merged.names == ['force', 'name', 'path', 'token']
    assert merged.mutually_exclusive == [('name', 'path')] and merged.required_if == [('force', True, ['name'])]
    assert BASE.names == ['name', 'path'] and MORE.mutually_exclusive == []
    merged.argument_spec['name']['type'] = 'int'
    assert BASE.argument_spec['name']['type'] == 'str'


def test_ansible_module_kwargs_carry_only_the_rules_in_use():
    kwargs = BASE.merge(MORE).ansible_module_kwargs(supports_check_mode=True)
    assert set(kwargs) == {'argument_spec', 'mutually_exclusive', 'required_if', 'supports_check_mode'}


def test_options_fill_defaults_and_refuse_unknown_names():
    options = BASE.merge(MORE).options(name='vm0')
    assert (options.name, options.path, options.force) == ('vm0', None, False)
    assert options['name'] == 'vm0' and 'path' in options
    with pytest.raises(ValueError, match='unknown options forse, nme; the options are force, name, path, token'):
        BASE.merge(MORE).options(forse=True, nme='x')


def test_options_are_read_only_and_replace_makes_a_copy():
    options = MORE.options(token='t0p')
    with pytest.raises(AttributeError, match='read-only'):
        options.force = True
    changed = options.replace(force=True)
    assert changed.force is True and options.force is False
    assert changed == MORE.options(token='t0p', force=True)
    with pytest.raises(ValueError):
        options.replace(forse=True)


def test_repr_never_shows_a_secret():
    assert 't0p' not in repr(MORE.options(token='t0p')) and '<hidden>' in repr(MORE.options(token='t0p'))


def test_an_alias_counts_as_its_option():
    spec = ArgumentSpec(dict(username=dict(type='str', aliases=['user', 'admin'])))
    # AnsibleModule's params hold the alias and the option
    assert spec.options({'user': 'u', 'username': 'u'}).username == 'u'
    assert spec.options(admin='a').username == 'a'
