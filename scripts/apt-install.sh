#!/usr/bin/env bash
# `scripts/apt-install.sh WHO PACKAGE...`: install the Debian packages not yet installed
# (apt-get update first, only when something is missing). Used by setup.sh and setup-test.sh.
set -euo pipefail
who=$1
shift
missing=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$who: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
