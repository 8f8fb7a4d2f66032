#!/usr/bin/env bash
# `make test`: sanity, then unit and integration tests in one pytest run (so the
# last line is pytest's summary). Every part runs; any failure fails the whole.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
status=0
echo "== ansible-test sanity"
if ! scripts/sanity.sh; then
  echo "== ansible-test sanity FAILED"
  status=1
fi
echo "== pytest: unit and integration tests"
.venv/bin/python -m pytest -p no:cacheprovider -ra tests/unit tests/integration "$@" || status=1
exit $status
