# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static checks of the roles and playbooks: argument specs, FQCNs, secrets, syntax."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import os
import re
import subprocess

import pytest
import yaml

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    ANSIBLE_DOC,
    REPO_ROOT,
    ansible_env,
    run_playbook,
)

ROLES = os.path.join(REPO_ROOT, 'roles')
PUBLIC = ('full_sync', 'incremental_sync', 'cutover')
CUTOVER_ONLY = {'migratekit_cutover_shutdown_timeout', 'migratekit_cutover_force', 'migratekit_cutover_mode',
                'migratekit_cutover_presync'}
FACTS = {'migratekit_sync_result', 'migratekit_cutover_result', 'migratekit_cycles',  # facts and set_stats data
         'migratekit_preflight_result'}
SECRETS = {'migratekit_vcenter_password', 'migratekit_vma_token'}
TASK_KEYWORDS = {
    'name', 'when', 'loop', 'loop_control', 'register', 'delegate_to', 'changed_when', 'failed_when',
    'ignore_errors', 'vars', 'block', 'rescue', 'always', 'module_defaults', 'no_log', 'tags', 'notify',
    'become', 'environment', 'until', 'retries', 'delay', 'run_once', 'check_mode', 'diff', 'args',
    'delegate_facts', 'any_errors_fatal', 'timeout', 'throttle', 'async', 'poll',
}


def load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def options(role):
    return load(os.path.join(ROLES, role, 'meta', 'argument_specs.yml'))['argument_specs']['main']['options']


def test_every_role_has_a_spec_with_type_and_description():
    for role in PUBLIC + ('sync_cycle',):
        opts = options(role)
        assert opts, role
        for name, spec in opts.items():
            assert spec.get('type'), (role, name)
            assert spec.get('description'), (role, name)
            assert name.startswith('migratekit_') or (role == 'sync_cycle' and name.startswith('__migratekit_')), name


def test_public_specs_are_the_cycle_spec():
    cycle = options('sync_cycle')
    public = dict((k, v) for k, v in cycle.items() if not k.startswith('__') and k not in CUTOVER_ONLY)
    assert options('full_sync') == public
    assert options('incremental_sync') == public
    cutover = dict(public)
    cutover.update((k, cycle[k]) for k in CUTOVER_ONLY)
    assert options('cutover') == cutover


def test_defaults_match_the_spec():
    cycle = options('sync_cycle')
    defaults = load(os.path.join(ROLES, 'sync_cycle', 'defaults', 'main.yml'))
    for name, value in defaults.items():
        assert name in cycle, name
        if 'default' in cycle[name]:
            assert cycle[name]['default'] == value, name
        else:
            assert isinstance(value, str) and '{{' in value, (name, 'templated defaults are documented in words')
    for name, spec in cycle.items():
        if not name.startswith('__') and not spec.get('required'):
            assert name in defaults, name


def test_secrets_are_no_log():
    for role in PUBLIC + ('sync_cycle',):
        opts = options(role)
        for name in SECRETS:
            assert opts[name].get('no_log') is True, (role, name)


def role_files():
    return sorted(glob.glob(os.path.join(ROLES, '*', '**', '*.yml'), recursive=True)
                  + glob.glob(os.path.join(ROLES, '*', 'templates', '*.j2')))


def test_every_variable_used_is_specified():
    cycle = options('sync_cycle')
    used = set()
    for path in role_files():
        with open(path) as handle:
            used.update(re.findall(r'(?<![\w.])(migratekit_\w+|__migratekit_\w+)', handle.read()))
    internal = set(n for n in used if n.startswith('__'))
    public = used - internal
    unknown = sorted(n for n in public if n not in cycle and n not in FACTS)
    assert unknown == []
    # internal names are set by the roles themselves (vars/, set_fact, register) or the spec
    assert all(n.startswith('__migratekit_') for n in internal)


def iter_tasks(tasks):
    for task in tasks or []:
        yield task
        for section in ('block', 'rescue', 'always'):
            yield from iter_tasks(task.get(section))


def test_tasks_use_fqcn_and_main_only_includes():
    for path in glob.glob(os.path.join(ROLES, '*', 'tasks', '*.yml')):
        for task in iter_tasks(load(path)):
            if 'block' in task:
                continue
            actions = [k for k in task if k not in TASK_KEYWORDS]
            assert len(actions) == 1, (path, task.get('name'), actions)
            assert actions[0].startswith(('ansible.builtin.', 'migratekit.migration.')), (path, actions[0])
            assert task.get('name'), (path, actions[0])
            if os.path.basename(path) == 'main.yml':
                assert actions[0] in ('ansible.builtin.import_tasks', 'ansible.builtin.include_tasks',
                                      'ansible.builtin.include_role', 'ansible.builtin.import_role'), path


def test_playbooks_syntax():
    for name in ('full_sync.yml', 'incremental_sync.yml', 'cutover.yml', 'report.yml', 'demo.yml'):
        path = os.path.join(REPO_ROOT, 'playbooks', name)
        if not os.path.exists(path):
            pytest.fail('missing playbook %s' % name)
        # the playbooks' group is not in this inventory: a warning (ansible-test units makes it an error)
        proc = run_playbook(['--syntax-check', '-i', 'localhost,', path], env={'ANSIBLE_HOST_PATTERN_MISMATCH': 'warning'})
        assert proc.returncode == 0, proc.stdout


def test_role_docs_render():
    for role in PUBLIC:
        proc = subprocess.run([ANSIBLE_DOC, '-t', 'role', 'migratekit.migration.' + role], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, env=ansible_env(), check=False)
        assert proc.returncode == 0 and 'migratekit_targets' in proc.stdout, proc.stdout[-2000:]
