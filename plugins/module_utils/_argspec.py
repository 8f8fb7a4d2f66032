# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options declared once: :class:`ArgumentSpec` and the :class:`Options` it makes.

A backend declares its module's options as one ArgumentSpec (the options
with types and defaults, and the rules between them); the module builds its
AnsibleModule from it and the backend's entry point receives the values as
an :class:`Options` built from the same spec, so an option's name is written
in the spec, its documentation and where it is read, nowhere else. Library
callers (tests, benchmarks) build Options with :meth:`ArgumentSpec.options`:
the spec's defaults fill in what they leave out, an unknown name is refused.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy

_RULES = ('mutually_exclusive', 'required_together', 'required_one_of', 'required_if', 'required_by')


class ArgumentSpec(object):
    """Options and the rules between them; :meth:`merge` composes specs without changing them."""

    def __init__(self, argument_spec=None, mutually_exclusive=None, required_together=None,
                 required_one_of=None, required_if=None, required_by=None):
        self.argument_spec = dict(argument_spec or {})
        self.mutually_exclusive = list(mutually_exclusive or [])
        self.required_together = list(required_together or [])
        self.required_one_of = list(required_one_of or [])
        self.required_if = list(required_if or [])
        self.required_by = dict(required_by or {})

    def merge(self, *others):
        """A new spec with the options and rules of this one and ``others``."""
        merged = ArgumentSpec(copy.deepcopy(self.argument_spec), **copy.deepcopy(self._rules()))
        for other in others:
            merged.argument_spec.update(copy.deepcopy(other.argument_spec))
            for rule in _RULES[:-1]:
                getattr(merged, rule).extend(copy.deepcopy(getattr(other, rule)))
            merged.required_by.update(copy.deepcopy(other.required_by))
        return merged

    def _rules(self):
        return dict((rule, getattr(self, rule)) for rule in _RULES)

    @property
    def names(self):
        return sorted(self.argument_spec)

    def defaults(self):
        return dict((name, copy.deepcopy(option.get('default')))
                    for name, option in self.argument_spec.items())

    def options(self, values=None, **given):
        """An :class:`Options` of ``values`` and ``given`` over the spec's defaults.

        A name the spec does not declare raises ValueError naming it (a
        misspelled option would otherwise be ignored). An alias counts as its
        option (AnsibleModule's params hold both names).
        """
        supplied = dict(values or {}, **given)
        for name, option in self.argument_spec.items():
            for alias in option.get('aliases') or ():
                if alias in supplied:
                    supplied.setdefault(name, supplied.pop(alias))
        unknown = sorted(set(supplied) - set(self.argument_spec))
        if unknown:
            raise ValueError('unknown option%s %s; the options are %s'
                             % ('s' if len(unknown) > 1 else '', ', '.join(unknown), ', '.join(self.names)))
        merged = self.defaults()
        merged.update(supplied)
        return Options(merged, secrets=[name for name, option in self.argument_spec.items() if option.get('no_log')])

    def ansible_module_kwargs(self, **extra):
        kwargs = dict(argument_spec=copy.deepcopy(self.argument_spec))
        for rule, value in self._rules().items():
            if value:
                kwargs[rule] = copy.deepcopy(value)
        kwargs.update(extra)
        return kwargs

    def create_ansible_module(self, **extra):
        from ansible.module_utils.basic import AnsibleModule
        return AnsibleModule(**self.ansible_module_kwargs(**extra))


class Options(object):
    """The values of one spec's options, read as attributes (immutable).

    Reading a name the spec does not declare raises AttributeError naming it.
    ``repr()`` masks the ``secrets`` (no_log options), so a traceback never
    shows a password.
    """

    __slots__ = ('_values', '_secrets')

    def __init__(self, values, secrets=()):
        object.__setattr__(self, '_values', dict(values))
        object.__setattr__(self, '_secrets', frozenset(secrets))

    def __getattr__(self, name):
        values = object.__getattribute__(self, '_values')
        try:
            return values[name]
        except KeyError:
            raise AttributeError('no option %r; the options are %s' % (name, ', '.join(sorted(values))))

    def __setattr__(self, name, value):
        raise AttributeError('options are read-only (%s)' % name)

    def __getitem__(self, name):
        return self._values[name]

    def __contains__(self, name):
        return name in self._values

    def __eq__(self, other):
        return isinstance(other, Options) and self._values == other._values

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return 'Options(%s)' % ', '.join('%s=%s' % (name, '<hidden>' if name in self._secrets and value else repr(value))
                                         for name, value in sorted(self._values.items()))

    def as_dict(self):
        return dict(self._values)

    def replace(self, **changes):
        """A copy with ``changes`` (names the spec declares)."""
        unknown = sorted(set(changes) - set(self._values))
        if unknown:
            raise ValueError('unknown option%s %s' % ('s' if len(unknown) > 1 else '', ', '.join(unknown)))
        values = dict(self._values)
        values.update(changes)
        return Options(values, self._secrets)
