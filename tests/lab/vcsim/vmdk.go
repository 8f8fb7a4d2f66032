package main

// VMDK disks on the lab's datastores, made and changed with qemu's tools
// (Debian qemu-utils), laid out as vSphere lays them out:
//
//   - a disk is a descriptor plus a flat extent: "VM0/VM0.vmdk" (text,
//     "# Disk DescriptorFile", createType monolithicFlat) naming
//     "VM0-flat.vmdk", a sparse file (a thin disk on NFS). The second disk
//     of a VM is "VM0_1.vmdk", and so on (the names govmomi's own
//     genVmdkPath gives, as vCenter does).
//   - a snapshot gives every disk a new delta, child of the disk's current
//     top: "VM0-000001.vmdk", whose parent is named by parentFileNameHint
//     (relative to the delta's directory, as ESXi writes it). Broadcom KB
//     420124 (snapshot delta disk naming with workingDir): delta disks are
//     "<base name>-00000N.vmdk" with sequence numbers unique per base name.
//     qemu writes a monolithicSparse delta; ESXi writes vmfsSparse
//     ("-delta.vmdk") or seSparse ("-sesparse.vmdk") ones. qemu's vmdk
//     driver reads all three, so the chain mechanics are the same.
//
// Guest writes go to the top of the chain through qemu-io (qemu 7.2's
// "write -s FILE OFF LEN" takes the bytes from FILE): qemu's vmdk driver
// allocates the delta's grains and copies the rest of a grain up from the
// parent, as ESXi does. A writable qemu-nbd would hold a write lock on the
// top between writes, which blocks "qemu-img create -b" and "qemu-img
// commit" at snapshot time; one short qemu-io per batch of writes, run
// under the lab lock, keeps writes atomic with respect to snapshots.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// link is one file of a disk's chain: a descriptor on a datastore.
type link struct {
	rel string // path inside the datastore, e.g. VM0/VM0-000001.vmdk
	abs string // local path
}

func runQemu(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %s: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// createFlatDisk makes descriptor + sparse flat extent of size bytes.
func createFlatDisk(abs string, size int64) error {
	if err := runQemu("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", abs,
		strconv.FormatInt(size, 10)); err != nil {
		return err
	}
	// qemu allocates the first block of a new raw file (file-posix
	// allocate_first_block) to probe alignment; a new thin disk has no
	// allocated block at all: punch it out again.
	extent, err := flatExtent(abs)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(extent, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const punchHole, keepSize = 0x02, 0x01
	_ = syscall.Fallocate(int(f.Fd()), punchHole|keepSize, 0, 1<<20)
	return nil
}

var flatExtentRE = regexp.MustCompile(`^(RW|RDONLY)\s+(\d+)\s+FLAT\s+"([^"]+)"\s+(\d+)\s*$`)

// flatExtent is the local path of the (single) FLAT extent a descriptor names.
func flatExtent(descriptor string) (string, error) {
	b, err := ioutil.ReadFile(descriptor)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if m := flatExtentRE.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			return filepath.Join(filepath.Dir(descriptor), m[3]), nil
		}
	}
	return "", fmt.Errorf("%s names no FLAT extent", descriptor)
}

// growFlatDisk extends a flat disk to size bytes: the extent line of the
// descriptor gets the new sector count and the extent file is extended
// (sparse), as vmkfstools -X does for a thin disk.
func growFlatDisk(descriptor string, size int64) error {
	b, err := ioutil.ReadFile(descriptor)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	found := ""
	for i, line := range lines {
		if m := flatExtentRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			lines[i] = fmt.Sprintf("%s %d FLAT \"%s\" %s", m[1], size/512, m[3], m[4])
			found = filepath.Join(filepath.Dir(descriptor), m[3])
			break
		}
	}
	if found == "" {
		return fmt.Errorf("%s names no FLAT extent", descriptor)
	}
	if err := os.Truncate(found, size); err != nil {
		return err
	}
	tmp := descriptor + ".tmp"
	if err := ioutil.WriteFile(tmp, []byte(strings.Join(lines, "\n")), 0644); err != nil {
		return err
	}
	return os.Rename(tmp, descriptor)
}

// createDelta makes child, a delta of parent; parentFileNameHint is
// parent's name relative to child's directory.
func createDelta(parent, child string) error {
	hint, err := filepath.Rel(filepath.Dir(child), parent)
	if err != nil {
		return err
	}
	return runQemu("qemu-img", "create", "-q", "-f", "vmdk", "-b", hint, "-F", "vmdk", child)
}

// The descriptor of a VMDK: the whole file for a text descriptor, the
// embedded one of a sparse extent (VMware's SparseExtentHeader: "KDMV",
// descriptorOffset and descriptorSize in sectors at bytes 28 and 36).
type descriptorArea struct {
	text   string
	offset int64 // where the text lives in the file
	size   int64 // room for it (0: a text file, any size)
}

func readDescriptor(name string) (*descriptorArea, error) {
	b, err := ioutil.ReadFile(name)
	if err != nil {
		return nil, err
	}
	if len(b) >= 44 && string(b[:4]) == "KDMV" {
		off := int64(binary.LittleEndian.Uint64(b[28:36])) * 512
		size := int64(binary.LittleEndian.Uint64(b[36:44])) * 512
		if off <= 0 || size <= 0 || off+size > int64(len(b)) {
			return nil, fmt.Errorf("%s: sparse extent without an embedded descriptor", name)
		}
		text := string(bytes.TrimRight(b[off:off+size], "\x00"))
		return &descriptorArea{text: text, offset: off, size: size}, nil
	}
	if !bytes.HasPrefix(b, []byte("# Disk DescriptorFile")) {
		return nil, fmt.Errorf("%s is not a VMDK descriptor", name)
	}
	return &descriptorArea{text: string(b)}, nil
}

func (a *descriptorArea) get(key string) string {
	for _, line := range strings.Split(a.text, "\n") {
		k := strings.SplitN(strings.TrimSpace(line), "=", 2)
		if len(k) == 2 && strings.TrimSpace(k[0]) == key {
			return strings.Trim(strings.TrimSpace(k[1]), `"`)
		}
	}
	return ""
}

func (a *descriptorArea) set(key, value string) {
	lines := strings.Split(a.text, "\n")
	for i, line := range lines {
		k := strings.SplitN(strings.TrimSpace(line), "=", 2)
		if len(k) == 2 && strings.TrimSpace(k[0]) == key {
			lines[i] = key + "=" + value
		}
	}
	a.text = strings.Join(lines, "\n")
}

func (a *descriptorArea) write(name string) error {
	if a.size == 0 {
		tmp := name + ".tmp"
		if err := ioutil.WriteFile(tmp, []byte(a.text), 0644); err != nil {
			return err
		}
		return os.Rename(tmp, name)
	}
	if int64(len(a.text)) > a.size {
		return fmt.Errorf("%s: the new descriptor does not fit in %d bytes", name, a.size)
	}
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, a.size)
	copy(buf, a.text)
	if _, err := f.WriteAt(buf, a.offset); err != nil {
		return err
	}
	return f.Sync()
}

// relinkDelta points child at newParent, whose content is the old
// parent's: parentFileNameHint names it (relative, as ESXi writes it) and
// parentCID takes its CID, the content id a child must agree with (VDDK
// and ESXi refuse a chain whose parent "has been modified since the child
// was created", VMware KB 1007849). qemu-img rebase cannot change a vmdk's
// backing file, so the descriptor is rewritten in place.
func relinkDelta(child, newParent string) error {
	hint, err := filepath.Rel(filepath.Dir(child), newParent)
	if err != nil {
		return err
	}
	p, err := readDescriptor(newParent)
	if err != nil {
		return err
	}
	c, err := readDescriptor(child)
	if err != nil {
		return err
	}
	c.set("parentCID", p.get("CID"))
	c.set("parentFileNameHint", `"`+hint+`"`)
	return c.write(child)
}

// writeTop writes guest data into the top of a chain with qemu-io.
func writeTop(top, tmpDir string, writes []guestWrite) error {
	dir, err := ioutil.TempDir(tmpDir, ".guest-write-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := []string{"-f", "vmdk"}
	for i, w := range writes {
		if len(w.Data) == 0 {
			continue
		}
		src := filepath.Join(dir, strconv.Itoa(i))
		if err := ioutil.WriteFile(src, w.Data, 0600); err != nil {
			return err
		}
		args = append(args, "-c", fmt.Sprintf("write -q -s %s %d %d", src, w.Offset, len(w.Data)))
	}
	if len(args) == 2 {
		return nil
	}
	args = append(args, top)
	// qemu-io reports a failed command on stdout and still exits 0: check.
	cmd := exec.Command("qemu-io", args...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("qemu-io on %s: %v: %s", top, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// chainAllocated lists the allocated areas of the disk a chain's top
// presents (qemu-img map: what a link of the chain holds, down to the flat
// extent's filesystem holes), clipped to size.
func chainAllocated(top string, size int64) ([]extent, error) {
	out, err := exec.Command("qemu-img", "map", "-U", "--output=json", "-f", "vmdk", top).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("qemu-img map %s: %s", top, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, err
	}
	var entries []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
		Zero   bool  `json:"zero"`
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		return nil, fmt.Errorf("qemu-img map %s: %s", top, err)
	}
	var exts []extent
	for _, e := range entries {
		if !e.Data || e.Zero {
			continue
		}
		end := e.Start + e.Length
		if end > size {
			end = size
		}
		if e.Start < end {
			exts = append(exts, extent{e.Start, end})
		}
	}
	return mergeExtents(exts), nil
}

// diskName is the descriptor name vSphere gives the j-th disk of a VM.
func diskName(vmName string, j int) string {
	if j == 0 {
		return vmName + ".vmdk"
	}
	return fmt.Sprintf("%s_%d.vmdk", vmName, j)
}

// nextDeltaName is the first "<base>-00000N.vmdk" not in use in dir.
func nextDeltaName(dsDir, baseRel string) string {
	dir := path.Dir(baseRel)
	stem := strings.TrimSuffix(path.Base(baseRel), ".vmdk")
	for n := 1; ; n++ {
		rel := path.Join(dir, fmt.Sprintf("%s-%06d.vmdk", stem, n))
		if _, err := os.Lstat(filepath.Join(dsDir, rel)); os.IsNotExist(err) {
			return rel
		}
	}
}

// ---------------------------------------------------------------- chains and backings

func (d *diskState) dsPathOf(i int) string {
	return fmt.Sprintf("[%s] %s", d.datastore, d.chain[i].rel)
}

// chainPaths lists the datastore paths of chain[0..i], the base first.
func (d *diskState) chainPaths(i int) []string {
	out := []string{}
	for j := 0; j <= i && j < len(d.chain); j++ {
		out = append(out, d.dsPathOf(j))
	}
	return out
}

// parentBacking is the backing info of chain[i-1] and its own parents (nil
// for the base): VirtualDiskFlatVer2BackingInfo.parent, "the parent of this
// virtual disk file, if this is a delta disk backing. This will be unset if
// this is not a delta disk backing" (vSphere API reference).
func (d *diskState) parentBacking(i int, tmpl *types.VirtualDiskFlatVer2BackingInfo) *types.VirtualDiskFlatVer2BackingInfo {
	if i <= 0 || i > len(d.chain)-1 {
		return nil
	}
	p := &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
			FileName:  d.dsPathOf(i - 1),
			Datastore: tmpl.Datastore,
		},
		DiskMode:        tmpl.DiskMode,
		ThinProvisioned: tmpl.ThinProvisioned,
	}
	p.DeltaDiskFormat = deltaFormat(i - 1)
	p.Parent = d.parentBacking(i-1, tmpl)
	return p
}

// deltaFormat is the deltaDiskFormat of link i: unset for the base disk, a
// hosted-style sparse redo log (qemu's monolithicSparse) for a delta.
func deltaFormat(i int) string {
	if i == 0 {
		return ""
	}
	return string(types.VirtualDiskDeltaDiskFormatRedoLogFormat)
}

func (d *diskState) indexOf(rel string) int {
	for i, ln := range d.chain {
		if ln.rel == rel {
			return i
		}
	}
	return -1
}

// growLocked extends the disk. vSphere cannot extend a virtual disk that has
// snapshots (VMware KB 1004047, "Increasing the size of a virtual disk": the
// virtual machine must not have snapshots), so a disk with a delta chain is
// refused, naming it.
func (d *diskState) growLocked(size int64) error {
	if len(d.chain) > 1 {
		return fmt.Errorf("disk %d of %s (%s) has snapshots (its backing is the delta %s): vSphere cannot "+
			"extend a virtual disk with snapshots; remove them first", d.key, d.vmName, d.dsPathOf(0), d.backingFile())
	}
	if err := growFlatDisk(d.chain[0].abs, size); err != nil {
		return err
	}
	d.capacity = size
	return nil
}

// consolidateLocked merges every link of every disk's chain that no
// snapshot references any more with its child, and relinks what named the
// child. vSphere API reference, VirtualMachineSnapshot.RemoveSnapshot_Task:
// "consolidate: If set to true, the virtual disk associated with this
// snapshot will be merged with other disk if possible. Defaults to true";
// RemoveAllSnapshots_Task: "the virtual disks of the deleted snapshot will be
// merged with other disk if possible". Removing the newest snapshot merges
// the live delta into the snapshot's link (which becomes the live backing);
// removing one in the middle merges the next delta into its link and the
// later deltas and snapshots are relinked onto it; removing all of them
// merges the whole chain into the base disk. The lab always consolidates
// (the default). A merge that fails (for example a reader holding the
// parent open) leaves the chain as it is and sets
// runtime.consolidationNeeded, as vSphere does when a merge fails.
func (l *lab) consolidateLocked(vi *vmInfo, vm *mo.VirtualMachine) {
	failed := false
	for _, d := range vi.disks {
		refs := map[string]bool{}
		for _, st := range l.snaps {
			if st.vm != vi.ref {
				continue
			}
			if sd := st.disks[d.key]; sd != nil {
				refs[sd.rel] = true
			}
		}
		for i := 0; i < len(d.chain)-1; {
			if refs[d.chain[i].rel] {
				i++
				continue
			}
			parent, child := d.chain[i], d.chain[i+1]
			if err := runQemu("qemu-img", "commit", "-q", "-d", "-f", "vmdk", child.abs); err != nil {
				log.Printf("consolidating %s into %s: %s", child.rel, parent.rel, err)
				failed = true
				break
			}
			if i+2 < len(d.chain) {
				if err := relinkDelta(d.chain[i+2].abs, parent.abs); err != nil {
					log.Printf("relinking %s onto %s: %s", d.chain[i+2].rel, parent.rel, err)
					failed = true
					break
				}
			}
			if err := os.Remove(child.abs); err != nil {
				log.Printf("removing %s: %s", child.abs, err)
			}
			d.chain = append(d.chain[:i+1], d.chain[i+2:]...)
			if refs[child.rel] {
				delete(refs, child.rel)
				refs[parent.rel] = true
			}
			for _, st := range l.snaps {
				if sd := st.disks[d.key]; st.vm == vi.ref && sd != nil && sd.rel == child.rel {
					sd.rel, sd.frozen, sd.dsPath = parent.rel, parent.abs, fmt.Sprintf("[%s] %s", d.datastore, parent.rel)
				}
			}
		}
		top := d.chain[len(d.chain)-1]
		d.relPath, d.image = top.rel, top.abs
		// Every remaining snapshot's disk backing names its link and the links below.
		for ref, st := range l.snaps {
			sd := st.disks[d.key]
			if st.vm != vi.ref || sd == nil {
				continue
			}
			snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
			if !ok {
				continue
			}
			for _, dev := range snap.Config.Hardware.Device {
				disk, ok := dev.(*types.VirtualDisk)
				if !ok || disk.Key != d.key {
					continue
				}
				d.linkBacking(disk.Backing, d.indexOf(sd.rel), sd.dsPath, nil)
			}
		}
	}
	if vm != nil {
		vm.Runtime.ConsolidationNeeded = types.NewBool(failed)
		l.applyLiveLocked(vi, vm)
	}
}
