#!/usr/bin/env bash
# Build the lab's vSphere simulator (tests/lab/bin/vcsim-cbt) from
# tests/lab/vcsim with Debian's Go and govmomi source, offline.
# Idempotent: does nothing when the binary is newer than every source.
# Needs: golang-go, golang-github-vmware-govmomi-dev (GOPATH /usr/share/gocode).
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
src="$here/vcsim"
bindir="$here/bin"
out="$bindir/vcsim-cbt"

up_to_date() {
    [ -x "$out" ] && [ -z "$(find "$src" "$here/build.sh" -newer "$out" -print -quit)" ]
}

if [ "${1:-}" != "--force" ] && up_to_date; then
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' not found (apt-get install golang-go)" >&2; exit 1; }
gopath_sys=/usr/share/gocode
[ -d "$gopath_sys/src/github.com/vmware/govmomi/simulator" ] || {
    echo "build.sh: govmomi source not found under $gopath_sys (apt-get install golang-github-vmware-govmomi-dev)" >&2
    exit 1
}

mkdir -p "$bindir"
exec 9>"$bindir/.build.lock"
flock 9
# Another build may have finished while we waited for the lock.
if [ "${1:-}" != "--force" ] && up_to_date; then
    exit 0
fi

export GO111MODULE=off
export GOPATH="$gopath_sys${GOPATH:+:$GOPATH}"
export GOCACHE="${LAB_GOCACHE:-$bindir/gocache}"
export GOFLAGS=
export CGO_ENABLED=0
cd "$src"
echo "build.sh: building $out (first build takes ~30 s)" >&2
nice -n 10 go build -trimpath -o "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "build.sh: built $out" >&2
