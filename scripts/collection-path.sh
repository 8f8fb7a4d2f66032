# shellcheck shell=bash
# Sourced by scripts: make this checkout findable as the collection
# migratekit.migration (Ansible looks below ansible_collections/<ns>/<name>).
# The same link tests/conftest.py makes; build/ is git-ignored.
repo=${repo:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
mkdir -p "$repo/build/collections/ansible_collections/migratekit"
[ -L "$repo/build/collections/ansible_collections/migratekit/migration" ] \
  || ln -sfn "$repo" "$repo/build/collections/ansible_collections/migratekit/migration"
export ANSIBLE_COLLECTIONS_PATH="$repo/build/collections"
export ANSIBLE_PYTHON_INTERPRETER="$repo/.venv/bin/python"
export PATH="$repo/.venv/bin:$PATH"
