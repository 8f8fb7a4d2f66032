#!/usr/bin/env bash
# Run an ansible-test command (sanity, units) offline on a copy of the
# collection placed where ansible-test wants it
# (.../ansible_collections/migratekit/migration): `scripts/ansible-test.sh units --venv ...`.
# For units, fails when no unit test ran (ansible-test itself exits 0 then).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
command=${1:?usage: ansible-test.sh COMMAND [ARGS...]}
shift
python_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test bootstraps pip in its venvs with a script it downloads from a
# host these machines cannot reach, unless a cached copy exists: cache our
# offline stand-in under every pip version this ansible-test may ask for.
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
requirements_py=$(echo "$venv"/lib/python*/site-packages/ansible_test/_internal/python_requirements.py)
grep -o "pip='[0-9.]*'" "$requirements_py" | cut -d"'" -f2 | sort -u | while read -r version; do
  install -m 0644 "$repo/scripts/get_pip_offline.py" "$cache/get_pip_${version//./_}.py"
done

# Outside the checkout: inside it, ansible-test would list files with the
# checkout's git, which ignores build/, and find nothing to test.
root=$(mktemp -d "${TMPDIR:-/tmp}/migratekit-$command.XXXXXX")
trap 'rm -rf "$root"' EXIT
work="$root/ansible_collections/migratekit/migration"
mkdir -p "$work"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work")
cd "$work"
if [ "$command" != units ]; then
  "$venv/bin/ansible-test" "$command" --venv --python "$python_version" --color no "$@"
  exit
fi
# The unit tests run ansible-playbook/ansible-doc of the project's venv (tests/integration/helpers.py).
ln -s "$venv" .venv
# ansible-test's unit venv sees Debian's python3-libnbd (not on PyPI); the rest
# comes from tests/unit/requirements.txt with the pins of tests/unit/constraints.txt.
"$venv/bin/ansible-test" units --venv --venv-system-site-packages --python "$python_version" --color no "$@"
"$venv/bin/python" - tests/output/junit/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET
counts = dict(tests=0, failures=0, errors=0, skipped=0)
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == 'testsuite' else root.iter('testsuite')):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
print('ansible-test units: %(tests)d tests, %(failures)d failures, %(errors)d errors, %(skipped)d skipped' % counts)
if counts['tests'] - counts['skipped'] <= 0:
    sys.exit('ansible-test units ran no test (see tests/unit and tests/conftest.py)')
PY
