#!/usr/bin/env bash
# Test-only setup (`make test` runs it after `make setup`; `make demo` does not
# need it): headless Chromium for the browser test of the fleet report
# (tests/integration/test_cutover_planning.py). Idempotent.
set -euo pipefail
apt_packages=(chromium fonts-dejavu-core)
"$(dirname "$0")/apt-install.sh" setup-test "${apt_packages[@]}"
