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

patch_dir="$here/govmomi-patch"

up_to_date() {
    [ -x "$out" ] && [ -z "$(find "$src" "$patch_dir" "$here/build.sh" -newer "$out" -print -quit)" ]
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
# govmomi's simulator panics on RDM disk backings (updateDiskLayouts): build it
# with govmomi-patch/rdm_layout.go added and that one assertion replaced
# (go build -overlay; the Debian source is not changed).
sim="$gopath_sys/src/github.com/vmware/govmomi/simulator"
overlay="$bindir/overlay"
mkdir -p "$overlay"
assertion='diskBacking := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)'
grep -qF "$assertion" "$sim/virtual_machine.go" || {
    echo "build.sh: $sim/virtual_machine.go is not the govmomi version the lab patches (no '$assertion')" >&2
    exit 1
}
sed 's/diskBacking := disk\.Backing\.(\*types\.VirtualDiskFlatVer2BackingInfo)/diskBacking := labLayoutBacking(disk.Backing)/' \
    "$sim/virtual_machine.go" > "$overlay/virtual_machine.go"
cat > "$overlay/overlay.json" <<JSON
{"Replace": {"$sim/virtual_machine.go": "$overlay/virtual_machine.go",
             "$sim/lab_rdm_layout.go": "$patch_dir/rdm_layout.go"}}
JSON
cd "$src"
echo "build.sh: building $out (first build takes ~30 s)" >&2
nice -n 10 go build -trimpath -overlay "$overlay/overlay.json" -o "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "build.sh: built $out" >&2
