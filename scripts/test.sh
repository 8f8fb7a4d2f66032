#!/usr/bin/env bash
# `make test`: sanity, the unit tests under ansible-test (which fails when it
# ran none), then the integration tests in one pytest run (so the last line is
# pytest's summary); they include the publishing checks (galaxy-importer,
# ansible-lint, ansible-builder) from the test-only tools venv. Every part
# runs; any failure fails the whole.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
status=0
echo "== ansible-test sanity"
if ! scripts/sanity.sh; then
  echo "== ansible-test sanity FAILED"
  status=1
fi
echo "== ansible-test units"
if ! scripts/ansible-test.sh units; then
  echo "== ansible-test units FAILED"
  status=1
fi
echo "== test-only tools venv"
scripts/tools-venv.sh || status=1
echo "== pytest: integration tests"
.venv/bin/python -m pytest -p no:cacheprovider -ra tests/integration "$@" || status=1
exit $status
