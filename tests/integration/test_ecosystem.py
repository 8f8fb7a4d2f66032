# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection as the ecosystem's tools see it: galaxy-importer on the built
artifact, ansible-lint's production profile, ansible-builder on the EE
definitions of docs/awx.md, bindep's profiles, requirement ranges.

The tools run from the test-only venv .venv-tools (scripts/tools-venv.sh, which
`make test` runs first), never from the project's .venv.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import os
import shutil
import subprocess
import tarfile

import pytest
from packaging.requirements import Requirement

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    REPO_ROOT,
    ansible_env,
)

TOOLS_BIN = os.path.join(REPO_ROOT, '.venv-tools', 'bin')
EE_DEFINITIONS = ('execution-environment.yml', 'execution-environment-appliance.yml')


def tool(name):
    path = os.path.join(TOOLS_BIN, name)
    if not os.path.exists(path):
        pytest.fail('%s is missing: run scripts/tools-venv.sh (make test does)' % path)
    return path


def run_tool(argv, cwd=REPO_ROOT, timeout=300):
    env = ansible_env({'PATH': TOOLS_BIN + os.pathsep + os.environ.get('PATH', '')})
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=timeout, check=False)


@pytest.fixture(scope='module')
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp('artifact')
    proc = run_tool([os.path.join(REPO_ROOT, '.venv', 'bin', 'ansible-galaxy'), 'collection', 'build',
                     '--output-path', str(out), REPO_ROOT])
    assert proc.returncode == 0, proc.stdout
    return glob.glob(str(out / 'migratekit-migration-*.tar.gz'))[0]


def test_the_artifact_has_role_readmes_and_no_demo(artifact):
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    roles = sorted(os.listdir(os.path.join(REPO_ROOT, 'roles')))
    assert 'sync_cycle' in roles
    for role in roles:
        assert 'roles/%s/README.md' % role in names, role
    assert 'playbooks/full_sync.yml' in names
    assert 'playbooks/demo.yml' not in names  # it needs the lab built from the repository


def test_galaxy_importer_accepts_the_artifact(artifact):
    proc = run_tool([tool('python'), '-m', 'galaxy_importer.main', artifact], cwd=os.path.dirname(artifact))
    lines = proc.stdout.splitlines()
    findings = [line for line in lines if line.startswith(('WARNING', 'ERROR'))]
    assert proc.returncode == 0 and not findings, proc.stdout[-6000:]
    assert lines[-1] == 'Importer processing completed successfully', proc.stdout[-6000:]
    assert 'Loading role sync_cycle' in proc.stdout and 'Linting collection via ansible-lint' in proc.stdout


def test_ansible_lint_production_profile():
    proc = run_tool([tool('ansible-lint'), '--nocolor'])
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout


@pytest.mark.parametrize('definition', EE_DEFINITIONS)
def test_ansible_builder_creates_the_documented_ee(tmp_path, artifact, definition):
    source = os.path.join(REPO_ROOT, 'docs', 'awx', definition)
    with open(source) as handle:
        text = handle.read()
    with open(os.path.join(REPO_ROOT, 'docs', 'awx.md')) as handle:
        assert text.split('---\n', 1)[1] in handle.read(), 'docs/awx.md shows %s as it is' % definition
    shutil.copy(source, str(tmp_path))
    shutil.copy(artifact, str(tmp_path / 'migratekit-migration-0.1.0.tar.gz'))
    proc = run_tool([tool('ansible-builder'), 'create', '-f', definition, '--context', 'context',
                     '--output-filename', 'Containerfile'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout
    containerfile = (tmp_path / 'context' / 'Containerfile').read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream10"' in containerfile
    assert (tmp_path / 'context' / '_build' / 'collections' / 'migratekit-migration-0.1.0.tar.gz').exists()
    final = containerfile.split('FROM base AS final', 1)[1]
    if definition == 'execution-environment.yml':
        # the unprivileged EE user's directories, before USER 1000
        assert final.index('ENV MIGRATEKIT_STATE_DIR=/var/lib/migratekit/state MIGRATEKIT_RUN_DIR=/tmp/migratekit') \
            < final.index('USER 1000')
    else:
        excluded = (tmp_path / 'context' / '_build' / 'exclude-collections.txt').read_text().split()
        assert excluded == ['migratekit.migration']


def test_bindep_runtime_and_test_profiles():
    def packages(*profiles):
        proc = run_tool([tool('bindep'), '-f', os.path.join(REPO_ROOT, 'bindep.txt'), '-l', 'newline'] + list(profiles))
        assert proc.returncode in (0, 1), proc.stdout
        return set(proc.stdout.split())
    runtime = packages()
    assert {'nbdkit', 'python3-libnbd', 'qemu-utils'} <= runtime
    assert 'libnbd-bin' not in runtime
    assert packages('test') == runtime | {'libnbd-bin'}


def _requirements(path):
    with open(os.path.join(REPO_ROOT, path)) as handle:
        return [Requirement(line.split('#')[0].strip()) for line in handle if line.split('#')[0].strip()]


def test_requirements_are_ranges_pinned_for_the_tests():
    ranges = {req.name.lower(): req for req in _requirements('requirements.txt')}
    pins = {req.name.lower(): req for req in _requirements('tests/unit/constraints.txt')}
    assert set(ranges) == {'pyvmomi', 'requests'}
    for name, req in ranges.items():
        assert not any(spec.operator in ('==', '===') for spec in req.specifier), req
        assert any(spec.operator == '<' for spec in req.specifier), req  # an upper bound
        (pin,) = pins[name].specifier
        assert pin.operator == '==' and req.specifier.contains(pin.version), (req, pin)
    assert {req.name.lower(): str(req.specifier) for req in _requirements('tests/unit/requirements.txt')} \
        == {name: str(req.specifier) for name, req in ranges.items()}
