#!/usr/bin/env bash
# Run `ansible-test sanity` offline on a copy of the collection placed where
# ansible-test wants it (.../ansible_collections/migratekit/migration).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
python_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ansible-test bootstraps pip in its sanity venvs with a script it downloads
# from a host these machines cannot reach, unless a cached copy exists: cache
# our offline stand-in under every pip version this ansible-test may ask for.
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
requirements_py=$(echo "$venv"/lib/python*/site-packages/ansible_test/_internal/python_requirements.py)
grep -o "pip='[0-9.]*'" "$requirements_py" | cut -d"'" -f2 | sort -u | while read -r version; do
  install -m 0644 "$repo/scripts/get_pip_offline.py" "$cache/get_pip_${version//./_}.py"
done

# Outside the checkout: inside it, ansible-test would list files with the
# checkout's git, which ignores build/, and find nothing to test.
sanity_root=$(mktemp -d "${TMPDIR:-/tmp}/migratekit-sanity.XXXXXX")
trap 'rm -rf "$sanity_root"' EXIT
work="$sanity_root/ansible_collections/migratekit/migration"
mkdir -p "$work"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work")
cd "$work"
"$venv/bin/ansible-test" sanity --venv --python "$python_version" --color no "$@"
