#!/usr/bin/env bash
# The test-only tools of the publishing checks, outside the project's .venv and
# outside anything users install: .venv-tools/ with ansible-lint, galaxy-importer
# and ansible-builder (tests/tools/requirements.txt at the versions of
# tests/tools/constraints.txt), and .venv-tools/collections/ holding
# community.vmware (and vmware.vmware, which it needs) taken from PyPI's `ansible`
# package, for the dynamic inventory recipe's test. Idempotent and quick when
# nothing changed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tools=.venv-tools
stamp=$tools/.requirements.sha256
wanted=$(cat tests/tools/requirements.txt tests/tools/constraints.txt scripts/tools-venv.sh | sha256sum | cut -d' ' -f1)
if [ -x $tools/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
echo "tools-venv: creating $tools"
rm -rf "$tools"
/usr/bin/python3 -m venv "$tools"
$tools/bin/python -m pip install -q --disable-pip-version-check \
  -r tests/tools/requirements.txt -c tests/tools/constraints.txt
downloads=$(mktemp -d "${TMPDIR:-/tmp}/migratekit-tools.XXXXXX")
trap 'rm -rf "$downloads"' EXIT
$tools/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$downloads" \
  -c tests/tools/constraints.txt ansible
$tools/bin/python - "$downloads"/ansible-*.whl "$tools/collections" <<'PY'
import sys
import zipfile
wheel, dest = sys.argv[1:]
wanted = ('ansible_collections/community/vmware/', 'ansible_collections/vmware/vmware/')
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if name.startswith(wanted)]
    archive.extractall(dest, members)
print('tools-venv: %d files of community.vmware and vmware.vmware in %s' % (len(members), dest))
PY
echo "$wanted" > "$stamp"
