#!/usr/bin/env bash
# `make demo`: playbooks/demo.yml on the embedded lab (it brings the lab up and
# down itself): full sync, guest writes, incremental sync, verification of
# every target against its disk's VMDK chain, cutover, a summary per disk; VM1
# carries a user's snapshot from before the first sync to the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/collection-path.sh
. "$repo/scripts/collection-path.sh"
cd "$repo"
export ANSIBLE_STDOUT_CALLBACK=${ANSIBLE_STDOUT_CALLBACK:-default}
export ANSIBLE_DISPLAY_SKIPPED_HOSTS=${ANSIBLE_DISPLAY_SKIPPED_HOSTS:-false}
exec ansible-playbook -i localhost, playbooks/demo.yml "$@"
