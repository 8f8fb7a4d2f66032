#!/usr/bin/env bash
# `make setup`: everything a fresh Debian 12 machine (as root) needs to run the
# tests, the demo and the benchmarks. Idempotent and quick when nothing changed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

# System packages: the NBD stack (nbdkit, libnbd's Python bindings; its tools are bindep's test profile),
# qemu-img for image checks, Go and govmomi's source for the lab's vSphere
# simulator, venv support, shellcheck for ansible-test sanity.
apt_packages=(
  nbdkit python3-libnbd libnbd-bin qemu-utils
  golang-go golang-github-vmware-govmomi-dev
  python3-venv shellcheck git
)
scripts/apt-install.sh setup "${apt_packages[@]}"

# The virtualenv: Debian's python with system site packages, so that `import nbd`
# (python3-libnbd, not on PyPI) works next to the PyPI requirements, installed
# at the exact versions of tests/unit/constraints.txt.
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt tests/unit/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt -c tests/unit/constraints.txt
  echo "$wanted" > "$stamp"
fi
.venv/bin/python -c 'import nbd, pyVmomi, requests, ansible' \
  || { echo "setup: the virtualenv cannot import nbd, pyVmomi, requests and ansible" >&2; exit 1; }

# The lab's vSphere simulator (skips the build when up to date).
if [ -x tests/lab/build.sh ]; then
  tests/lab/build.sh
fi
