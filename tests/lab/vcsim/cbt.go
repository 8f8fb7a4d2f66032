package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// extent is a half-open byte range [start, end).
type extent struct{ start, end int64 }

// journalEntry records a guest write: epoch is the sequence number of the
// first snapshot that contains it (current sequence + 1 at write time).
type journalEntry struct {
	epoch int64
	extent
}

// diskState is the CBT state of one live virtual disk.
type diskState struct {
	vm        types.ManagedObjectReference
	vmName    string
	key       int32
	label     string
	datastore string // datastore name, e.g. LocalDS_0
	relPath   string // the live top of the chain inside the datastore, e.g. VM0/VM0-000001.vmdk
	image     string // its local path
	chain     []link // the disk's delta chain: the base disk first, the live top last
	capacity  int64
	cbtUUID   string // "" while CBT is off
	seq       int64
	journal   []journalEntry
	// corrupt: the fault QueryChangedDiskAreas answers for any changeId but
	// "*" while the tracking file is damaged (labctl corrupt-cbt); gone with
	// the tracking file, when CBT is turned off and on again
	corrupt *qcdaError
}

func (d *diskState) backingFile() string { return fmt.Sprintf("[%s] %s", d.datastore, d.relPath) }

func (d *diskState) changeID() string {
	if d.cbtUUID == "" {
		return ""
	}
	return fmt.Sprintf("%s/%d", d.cbtUUID, d.seq)
}

// snapDisk is the frozen state of one disk in one snapshot.
type snapDisk struct {
	key      int32
	rel      string // the frozen link of the chain, e.g. VM0/VM0.vmdk
	frozen   string // its local path
	dsPath   string // "[LocalDS_0] VM0/VM0.vmdk"
	capacity int64
	cbtUUID  string // "" when CBT was off at snapshot time
	seq      int64
}

type snapState struct {
	vm         types.ManagedObjectReference
	disks      map[int32]*snapDisk
	extraFiles []string // the simulator's own snapshot files (.vmsn)
}

type vmInfo struct {
	ref          types.ManagedObjectReference
	name         string
	path         string
	uuid         string
	instanceUUID string
	datacenter   string
	cbt          bool
	disks        []*diskState
}

// lab holds all CBT state. Lock order: simulator VM lock -> lab.mu.
type lab struct {
	cfg          *config
	controlToken string
	self         types.ManagedObjectReference

	mu          sync.Mutex
	vms         map[types.ManagedObjectReference]*vmInfo
	vmByName    map[string]*vmInfo
	snaps       map[types.ManagedObjectReference]*snapState
	snapCounter int
	datastores  map[string]string
}

func newLab(cfg *config, token string) *lab {
	return &lab{
		cfg:          cfg,
		controlToken: token,
		self:         types.ManagedObjectReference{Type: "MigratekitLabCBT", Value: "migratekit-lab-cbt"},
		vms:          map[types.ManagedObjectReference]*vmInfo{},
		vmByName:     map[string]*vmInfo{},
		snaps:        map[types.ManagedObjectReference]*snapState{},
		datastores:   map[string]string{},
	}
}

func newCBTUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[0] = 0x52
	parts := make([]string, 16)
	for i := range b {
		parts[i] = fmt.Sprintf("%02x", b[i])
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

// ---------------------------------------------------------------- VMs

func (l *lab) createVMs(ctx context.Context, u *url.URL) error {
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()

	finder := find.NewFinder(c.Client, true)
	dc, err := finder.Datacenter(ctx, "DC0")
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	pool, err := finder.ResourcePool(ctx, "/DC0/host/DC0_C0/Resources")
	if err != nil {
		return err
	}
	dsObj, err := finder.Datastore(ctx, "LocalDS_0")
	if err != nil {
		return err
	}
	ds := simulator.Map.Get(dsObj.Reference()).(*simulator.Datastore)
	dsName := ds.Name
	dsDir := ds.Info.GetDatastoreInfo().Url
	l.mu.Lock()
	for _, obj := range simulator.Map.All("Datastore") {
		d := obj.(*simulator.Datastore)
		l.datastores[d.Name] = d.Info.GetDatastoreInfo().Url
	}
	l.mu.Unlock()

	for i := 0; i < l.cfg.VMs; i++ {
		name := fmt.Sprintf("VM%d", i)
		scsi := &types.ParaVirtualSCSIController{
			VirtualSCSIController: types.VirtualSCSIController{
				SharedBus: types.VirtualSCSISharingNoSharing,
				VirtualController: types.VirtualController{
					BusNumber:     0,
					VirtualDevice: types.VirtualDevice{Key: 1000},
				},
			},
		}
		spec := types.VirtualMachineConfigSpec{
			Name:         name,
			GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
			NumCPUs:      1,
			MemoryMB:     64,
			Uuid:         uuid.New().String(),
			InstanceUuid: uuid.New().String(),
			Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + dsName + "]"},
			DeviceChange: []types.BaseVirtualDeviceConfigSpec{
				&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: scsi},
			},
		}
		task, err := folders.VmFolder.CreateVM(ctx, spec, pool, nil)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return fmt.Errorf("CreateVM %s: %s", name, err)
		}
		ref := info.Result.(types.ManagedObjectReference)
		simVM := simulator.Map.Get(ref).(*simulator.VirtualMachine)

		var vmx object.DatastorePath
		vmx.FromString(simVM.Config.Files.VmPathName)
		vmDir := path.Dir(vmx.Path) // "VM0"

		vi := &vmInfo{
			ref:          ref,
			name:         name,
			path:         "/DC0/vm/" + name,
			uuid:         simVM.Config.Uuid,
			instanceUUID: simVM.Config.InstanceUuid,
			datacenter:   "DC0",
		}

		var changes []types.BaseVirtualDeviceConfigSpec
		unit := int32(0)
		for j := 0; j < l.cfg.Disks; j++ {
			if unit == 7 { // reserved for the SCSI controller itself
				unit++
			}
			key := int32(2000 + j)
			rel := path.Join(vmDir, diskName(name, j))
			image := filepath.Join(dsDir, rel)
			if _, err := os.Lstat(image); err == nil {
				return fmt.Errorf("%s exists already", image)
			}
			if err := createFlatDisk(image, l.cfg.DiskSize); err != nil {
				return err
			}
			u := unit
			label := fmt.Sprintf("Hard disk %d", j+1)
			disk := &types.VirtualDisk{
				VirtualDevice: types.VirtualDevice{
					Key:           key,
					ControllerKey: 1000,
					UnitNumber:    &u,
					DeviceInfo: &types.Description{
						Label:   label,
						Summary: fmt.Sprintf("%d KB", l.cfg.DiskSize/1024),
					},
					Backing: &types.VirtualDiskFlatVer2BackingInfo{
						VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
							FileName: fmt.Sprintf("[%s] %s", dsName, rel),
						},
						DiskMode:        string(types.VirtualDiskModePersistent),
						ThinProvisioned: types.NewBool(true),
					},
				},
				CapacityInKB:    l.cfg.DiskSize / 1024,
				CapacityInBytes: l.cfg.DiskSize,
			}
			// FileOperation "" attaches the existing image file.
			changes = append(changes, &types.VirtualDeviceConfigSpec{
				Operation: types.VirtualDeviceConfigSpecOperationAdd,
				Device:    disk,
			})
			vi.disks = append(vi.disks, &diskState{
				vm:        ref,
				vmName:    name,
				key:       key,
				label:     label,
				datastore: dsName,
				relPath:   rel,
				image:     image,
				chain:     []link{{rel: rel, abs: image}},
				capacity:  l.cfg.DiskSize,
			})
			unit++
		}

		l.mu.Lock()
		l.vms[ref] = vi
		l.vmByName[name] = vi
		l.mu.Unlock()

		vm := object.NewVirtualMachine(c.Client, ref)
		task, err = vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: changes})
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("adding disks to %s: %s", name, err)
		}
		task, err = vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("powering on %s: %s", name, err)
		}
	}
	return nil
}

func (l *lab) datastoreDirs() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for k, v := range l.datastores {
		out[k] = v
	}
	return out
}

func (l *lab) describeVMs() []map[string]interface{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	names := make([]string, 0, len(l.vmByName))
	for n := range l.vmByName {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimPrefix(names[i], "VM"))
		b, _ := strconv.Atoi(strings.TrimPrefix(names[j], "VM"))
		return a < b
	})
	var out []map[string]interface{}
	for _, n := range names {
		vi := l.vmByName[n]
		var disks []map[string]interface{}
		for _, d := range vi.disks {
			disks = append(disks, describeDisk(d))
		}
		out = append(out, map[string]interface{}{
			"name":          vi.name,
			"path":          vi.path,
			"uuid":          vi.uuid,
			"instance_uuid": vi.instanceUUID,
			"moid":          vi.ref.Value,
			"datacenter":    vi.datacenter,
			"cbt":           vi.cbt,
			"disks":         disks,
		})
	}
	return out
}

func describeDisk(d *diskState) map[string]interface{} {
	return map[string]interface{}{
		"key":            d.key,
		"label":          d.label,
		"capacity_bytes": d.capacity,
		"datastore":      d.datastore,
		"backing_file":   d.backingFile(),
		"image":          d.image,
		"chain":          d.chainPaths(len(d.chain) - 1),
		"cbt_uuid":       d.cbtUUID,
		"seq":            d.seq,
		"change_id":      d.changeID(),
		"journal_len":    len(d.journal),
		"corrupt":        d.corrupt != nil,
	}
}

// ---------------------------------------------------------------- registry hooks

func (l *lab) Reference() types.ManagedObjectReference { return l.self }

// PutObject freezes every disk of a new snapshot.
func (l *lab) PutObject(obj mo.Reference) {
	if task, ok := obj.(*simulator.Task); ok {
		fixSnapshotTaskEntity(task)
		return
	}
	snap, ok := obj.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	vi := l.vms[snap.Vm]
	if vi == nil {
		return
	}
	st := &snapState{vm: snap.Vm, disks: map[int32]*snapDisk{}}
	l.snapCounter++
	n := l.snapCounter

	// snapshot.Config is a shallow copy of the VM's config: copy the device
	// list and every disk before changing backings.
	devs := make([]types.BaseVirtualDevice, len(snap.Config.Hardware.Device))
	copy(devs, snap.Config.Hardware.Device)
	vi.eachLabDisk(devs, func(i int, disk *types.VirtualDisk, ds *diskState) {
		if !snapshotFreezes(disk) {
			return // independent: "not affected by snapshots" (odddisks.go)
		}
		// A disk's own switch takes effect at a stun, as the VM's does: off,
		// its tracking file goes; back on, it starts a new one.
		if vi.cbt {
			off := ctkDisabled(snap.Config.ExtraConfig, devs, disk)
			if off && ds.cbtUUID != "" {
				ds.cbtUUID, ds.seq, ds.journal, ds.corrupt = "", 0, nil, nil
			} else if !off && ds.cbtUUID == "" {
				ds.cbtUUID, ds.seq, ds.journal, ds.corrupt = newCBTUUID(), 0, nil, nil
			}
		}
		if vi.cbt && ds.cbtUUID != "" {
			ds.seq++
		}
		// vSphere API reference, VirtualMachineSnapshot.config: "The
		// datastore paths for the virtual machine disks point to the head of
		// the disk chain that represents the disk at this given snapshot".
		// VirtualDiskFlatVer2BackingInfo.parent: "A delta disk backing is a
		// way to preserve a virtual disk backing at some point in time ...
		// After a delta disk backing is added, all writes go to the delta
		// disk backing." So the snapshot keeps the current top (frozen from
		// now on) and the VM's live backing becomes a new delta child of it.
		top := len(ds.chain) - 1
		frozen := ds.chain[top]
		dsDir := l.datastores[ds.datastore]
		childRel := nextDeltaName(dsDir, ds.chain[0].rel)
		child := link{rel: childRel, abs: filepath.Join(dsDir, childRel)}
		if err := createDelta(frozen.abs, child.abs); err != nil {
			log.Printf("snapshot %d of %s: %s", n, vi.name, err)
		} else {
			ds.chain = append(ds.chain, child)
			ds.relPath, ds.image = child.rel, child.abs
		}
		sd := &snapDisk{
			key:      ds.key,
			rel:      frozen.rel,
			frozen:   frozen.abs,
			dsPath:   fmt.Sprintf("[%s] %s", ds.datastore, frozen.rel),
			capacity: ds.capacity,
		}
		if vi.cbt && ds.cbtUUID != "" {
			sd.cbtUUID = ds.cbtUUID
			sd.seq = ds.seq
		}
		st.disks[ds.key] = sd

		nd := *disk
		nb := copyBacking(disk.Backing)
		changeID := ""
		if sd.cbtUUID != "" {
			changeID = fmt.Sprintf("%s/%d", sd.cbtUUID, sd.seq)
		}
		ds.linkBacking(nb, top, sd.dsPath, &changeID)
		nd.Backing = nb
		nd.CapacityInBytes = sd.capacity
		nd.CapacityInKB = sd.capacity / 1024
		devs[i] = &nd
	})
	snap.Config.Hardware.Device = devs
	l.snaps[snap.Self] = st

	// The live disks now report the new sequence.
	if simVM, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine); ok {
		l.applyLiveLocked(vi, &simVM.VirtualMachine)
	}
}

// fixSnapshotTaskEntity: the simulator makes the snapshot itself the
// entity of RemoveSnapshot_Task/RevertToSnapshot_Task, but TaskInfo.entity
// is a ManagedEntity (vCenter puts the VM there) and pyvmomi refuses to
// deserialize such a TaskInfo. Point it at the snapshot's VM.
func fixSnapshotTaskEntity(task *simulator.Task) {
	e := task.Info.Entity
	if e == nil || e.Type != "VirtualMachineSnapshot" {
		return
	}
	snap, ok := simulator.Map.Get(*e).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vmRef := snap.Vm
	task.Info.Entity = &vmRef
	if vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine); ok {
		task.Info.EntityName = vm.Name
	}
}

// UpdateObject follows VM reconfigurations: CBT on/off and disk growth.
func (l *lab) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	vm, ok := obj.(*mo.VirtualMachine)
	if !ok {
		return
	}
	devices, snapshots := false, false
	for _, c := range changes {
		if c.Name == "config.hardware.device" {
			devices = true
		}
		if strings.HasPrefix(c.Name, "snapshot") {
			snapshots = true
		}
	}
	if !devices && !snapshots {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	vi := l.vms[vm.Self]
	if vi == nil || vm.Config == nil {
		return
	}
	if snapshots {
		l.syncSnapshotsLocked(vm)
	}
	if !devices {
		return
	}
	enabled := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	if enabled != vi.cbt {
		for _, d := range vi.disks {
			d.journal = nil
			d.seq = 0
			d.cbtUUID = ""
			d.corrupt = nil
			if enabled {
				d.cbtUUID = newCBTUUID()
			}
		}
		vi.cbt = enabled
		log.Printf("%s: change tracking %v", vi.name, enabled)
	}
	// Disk growth through ReconfigVM (edit of capacityInKB/capacityInBytes).
	vi.eachLabDisk(vm.Config.Hardware.Device, func(_ int, disk *types.VirtualDisk, d *diskState) {
		want := disk.CapacityInKB * 1024
		if disk.CapacityInBytes > want && disk.CapacityInBytes != d.capacity {
			want = disk.CapacityInBytes
		}
		if want > d.capacity {
			if err := d.growLocked(want); err != nil {
				log.Printf("growing %s: %s", d.image, err)
			}
		}
	})
	l.applyLiveLocked(vi, vm)
}

// RemoveObject deletes a removed snapshot's frozen images.
func (l *lab) RemoveObject(ref types.ManagedObjectReference) {
	if ref.Type != "VirtualMachineSnapshot" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.snaps[ref]
	if st == nil {
		return
	}
	l.dropSnapshotLocked(ref)
	if vi := l.vms[st.vm]; vi != nil {
		if simVM, ok := simulator.Map.Get(st.vm).(*simulator.VirtualMachine); ok {
			l.consolidateLocked(vi, &simVM.VirtualMachine)
		}
	}
}

// dropSnapshotLocked forgets a removed snapshot and deletes its own files
// (.vmsn); its disk links are merged by consolidateLocked.
func (l *lab) dropSnapshotLocked(ref types.ManagedObjectReference) {
	st := l.snaps[ref]
	if st == nil {
		return
	}
	delete(l.snaps, ref)
	for _, f := range st.extraFiles {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			log.Printf("removing %s: %s", f, err)
		}
	}
}

func snapshotTreeRefs(tree []types.VirtualMachineSnapshotTree, out map[types.ManagedObjectReference]bool) {
	for _, t := range tree {
		out[t.Snapshot] = true
		snapshotTreeRefs(t.ChildSnapshotList, out)
	}
}

// syncSnapshotsLocked runs on every change of a VM's snapshot tree.
//
// 1. The simulator's removeSnapshotFiles deletes the files whose
// LayoutEx key equals the snapshot layout's DataKey, but RefreshStorageInfo
// (run after each removal) renumbers every LayoutEx file: a later removal
// then deletes whatever file got that key, e.g. a live disk image. So we
// take the snapshot's own files (.vmsn) over: remember their paths, point
// DataKey at no file, and delete them ourselves with the frozen images.
//
// 2. Snapshots no longer in the tree (RemoveSnapshot, RemoveAllSnapshots,
// removeChildren) are forgotten and their disks consolidated.
func (l *lab) syncSnapshotsLocked(vm *mo.VirtualMachine) {
	if vm.LayoutEx != nil {
		for i := range vm.LayoutEx.Snapshot {
			sl := &vm.LayoutEx.Snapshot[i]
			if sl.DataKey < 0 {
				continue
			}
			st := l.snaps[sl.Key]
			for _, f := range vm.LayoutEx.File {
				if f.Key == sl.DataKey && st != nil {
					if p, err := l.localPath(f.Name); err == nil {
						st.extraFiles = append(st.extraFiles, p)
					}
				}
			}
			sl.DataKey = -2
		}
	}
	inTree := map[types.ManagedObjectReference]bool{}
	if vm.Snapshot != nil {
		snapshotTreeRefs(vm.Snapshot.RootSnapshotList, inTree)
	}
	for ref, st := range l.snaps {
		if st.vm == vm.Self && !inTree[ref] {
			l.dropSnapshotLocked(ref)
		}
	}
	if vi := l.vms[vm.Self]; vi != nil {
		l.consolidateLocked(vi, vm)
	}
}

// localPath maps "[ds] rel/path" to a local path.
func (l *lab) localPath(dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("not a datastore path: %q", dsPath)
	}
	root, ok := l.datastores[p.Datastore]
	if !ok {
		return "", fmt.Errorf("unknown datastore in %q", dsPath)
	}
	return filepath.Join(root, p.Path), nil
}

func (vi *vmInfo) diskByKey(key int32) *diskState {
	for _, d := range vi.disks {
		if d.key == key {
			return d
		}
	}
	return nil
}

// eachLabDisk calls fn for every virtual disk in devs that is one of this
// VM's lab disks, with its index in devs.
func (vi *vmInfo) eachLabDisk(devs []types.BaseVirtualDevice, fn func(i int, disk *types.VirtualDisk, d *diskState)) {
	for i, dev := range devs {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		if d := vi.diskByKey(disk.Key); d != nil {
			fn(i, disk, d)
		}
	}
}

// applyLiveLocked sets changeId and capacity on the live VM's disk
// devices (in place). Caller holds l.mu (and the VM lock, or is in a hook
// called under it).
func (l *lab) applyLiveLocked(vi *vmInfo, vm *mo.VirtualMachine) {
	if vm.Config == nil {
		return
	}
	vi.eachLabDisk(vm.Config.Hardware.Device, func(_ int, disk *types.VirtualDisk, d *diskState) {
		disk.CapacityInBytes = d.capacity
		disk.CapacityInKB = d.capacity / 1024
		changeID := ""
		if vi.cbt {
			changeID = d.changeID()
		}
		d.linkBacking(disk.Backing, len(d.chain)-1, d.backingFile(), &changeID)
	})
}

// ---------------------------------------------------------------- guest writes and control operations

func (l *lab) findDisk(vmName string, key int32) (*vmInfo, *diskState, error) {
	vi := l.vmByName[vmName]
	if vi == nil {
		return nil, nil, fmt.Errorf("no VM named %q", vmName)
	}
	d := vi.diskByKey(key)
	if d == nil {
		return nil, nil, fmt.Errorf("VM %s has no disk with key %d", vmName, key)
	}
	return vi, d, nil
}

type guestWrite struct {
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"` // base64 in JSON
}

// write writes guest data into the live image and records it in the
// change journal, atomically with respect to snapshots.
func (l *lab) write(vmName string, key int32, writes []guestWrite) ([][2]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	vi, d, err := l.findDisk(vmName, key)
	if err != nil {
		return nil, err
	}
	for _, w := range writes {
		if w.Offset < 0 || w.Offset+int64(len(w.Data)) > d.capacity {
			return nil, fmt.Errorf("write [%d, +%d) is outside the disk (capacity %d)", w.Offset, len(w.Data), d.capacity)
		}
	}
	// Guest writes go to the live top of the chain (see vmdk.go).
	if err := writeTop(d.image, l.cfg.DatastoreRoot, writes); err != nil {
		return nil, err
	}
	var out [][2]int64
	for _, w := range writes {
		if len(w.Data) == 0 {
			continue
		}
		out = append(out, [2]int64{w.Offset, int64(len(w.Data))})
		if vi.cbt && d.cbtUUID != "" {
			bs := l.cfg.BlockSize
			start := w.Offset / bs * bs
			end := (w.Offset + int64(len(w.Data)) + bs - 1) / bs * bs
			if end > d.capacity {
				end = d.capacity
			}
			d.journal = append(d.journal, journalEntry{epoch: d.seq + 1, extent: extent{start, end}})
		}
	}
	return out, nil
}

func (l *lab) withVM(vmName string, f func(vi *vmInfo, vm *simulator.VirtualMachine) error) error {
	l.mu.Lock()
	vi := l.vmByName[vmName]
	l.mu.Unlock()
	if vi == nil {
		return fmt.Errorf("no VM named %q", vmName)
	}
	simVM, ok := simulator.Map.Get(vi.ref).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("VM %s is gone", vmName)
	}
	var err error
	simulator.Map.WithLock(simVM, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		err = f(vi, simVM)
	})
	return err
}

func (l *lab) resetCBT(vmName string, key int32) (map[string]interface{}, error) {
	var out map[string]interface{}
	err := l.withVM(vmName, func(vi *vmInfo, vm *simulator.VirtualMachine) error {
		d := vi.diskByKey(key)
		if d == nil {
			return fmt.Errorf("VM %s has no disk with key %d", vmName, key)
		}
		if !vi.cbt {
			return fmt.Errorf("change tracking is not enabled on VM %s", vmName)
		}
		d.cbtUUID = newCBTUUID()
		d.seq = 0
		d.journal = nil
		l.applyLiveLocked(vi, &vm.VirtualMachine)
		out = describeDisk(d)
		return nil
	})
	return out, err
}

// corruptCBT damages a disk's tracking file: from now on QueryChangedDiskAreas
// answers its fault for every changeId but "*". The VDDK programming guide
// and the vSphere API reference name what vSphere answers then: a FileFault
// (reasons such as cbt.noTrack, noEpoch, cannotGetChanges) or an
// InvalidArgument on changeId; the remedy is a CBT reset (disable, stun,
// enable: VMware KB 2139574), which gives the disk a new tracking file.
func (l *lab) corruptCBT(vmName string, key int32, fault string) (map[string]interface{}, error) {
	var out map[string]interface{}
	err := l.withVM(vmName, func(vi *vmInfo, vm *simulator.VirtualMachine) error {
		d := vi.diskByKey(key)
		if d == nil {
			return fmt.Errorf("VM %s has no disk with key %d", vmName, key)
		}
		if d.cbtUUID == "" {
			return fmt.Errorf("change tracking is not active on disk %d of VM %s", key, vmName)
		}
		switch fault {
		case "FileFault":
			d.corrupt = &qcdaError{fault: "FileFault", msg: fmt.Sprintf("Error caused by file %s: cbt.noEpoch: the change tracking information is invalid", d.backingFile()), file: d.backingFile()}
		case "InvalidArgument":
			d.corrupt = &qcdaError{fault: "InvalidArgument", msg: "A specified parameter was not correct: changeId", prop: "changeId"}
		default:
			return fmt.Errorf("fault must be FileFault or InvalidArgument, got %q", fault)
		}
		out = describeDisk(d)
		return nil
	})
	return out, err
}

func (l *lab) grow(vmName string, key int32, size int64) (map[string]interface{}, error) {
	var out map[string]interface{}
	err := l.withVM(vmName, func(vi *vmInfo, vm *simulator.VirtualMachine) error {
		d := vi.diskByKey(key)
		if d == nil {
			return fmt.Errorf("VM %s has no disk with key %d", vmName, key)
		}
		if size%1024 != 0 {
			return fmt.Errorf("size %d is not a multiple of 1024", size)
		}
		if size < d.capacity {
			return fmt.Errorf("size %d is smaller than the current capacity %d (disks only grow)", size, d.capacity)
		}
		if err := d.growLocked(size); err != nil {
			return err
		}
		l.applyLiveLocked(vi, &vm.VirtualMachine)
		out = describeDisk(d)
		return nil
	})
	return out, err
}

// ---------------------------------------------------------------- extents

func mergeExtents(in []extent) []extent {
	if len(in) == 0 {
		return nil
	}
	sort.Slice(in, func(i, j int) bool { return in[i].start < in[j].start })
	out := []extent{in[0]}
	for _, e := range in[1:] {
		last := &out[len(out)-1]
		if e.start <= last.end {
			if e.end > last.end {
				last.end = e.end
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// ---------------------------------------------------------------- QueryChangedDiskAreas

type qcdaError struct {
	fault string // vim fault type: FileFault, InvalidArgument, NotFound, ManagedObjectNotFound
	msg   string
	file  string
	obj   *types.ManagedObjectReference
	prop  string
}

func (e *qcdaError) Error() string { return e.msg }

// changedAreas computes the full (unpaged) answer.
func (l *lab) changedAreas(vmRef types.ManagedObjectReference, snapRef *types.ManagedObjectReference, key int32, changeID string) ([]extent, int64, error) {
	l.mu.Lock()
	vi := l.vms[vmRef]
	if vi == nil {
		l.mu.Unlock()
		return nil, 0, &qcdaError{fault: "ManagedObjectNotFound", msg: fmt.Sprintf("managed object not found: %s", vmRef), obj: &vmRef}
	}
	d := vi.diskByKey(key)
	if d == nil {
		l.mu.Unlock()
		return nil, 0, &qcdaError{fault: "InvalidArgument", msg: fmt.Sprintf("VM %s has no virtual disk with device key %d", vi.name, key), prop: "deviceKey"}
	}
	var (
		capacity  int64
		image     string
		uuidAt    string
		seqAt     int64
		liveQuery bool
	)
	if snapRef != nil {
		st := l.snaps[*snapRef]
		if st == nil {
			l.mu.Unlock()
			return nil, 0, &qcdaError{fault: "ManagedObjectNotFound", msg: fmt.Sprintf("managed object not found: %s", *snapRef), obj: snapRef}
		}
		if st.vm != vmRef {
			l.mu.Unlock()
			return nil, 0, &qcdaError{fault: "InvalidArgument", msg: fmt.Sprintf("snapshot %s does not belong to %s", snapRef.Value, vmRef.Value), prop: "snapshot"}
		}
		sd := st.disks[key]
		if sd == nil {
			l.mu.Unlock()
			return nil, 0, &qcdaError{fault: "InvalidArgument", msg: fmt.Sprintf("snapshot %s has no disk with device key %d", snapRef.Value, key), prop: "deviceKey"}
		}
		capacity, image, uuidAt, seqAt = sd.capacity, sd.frozen, sd.cbtUUID, sd.seq
	} else {
		simVM, _ := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
		if simVM != nil && simVM.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
			l.mu.Unlock()
			return nil, 0, &qcdaError{fault: "FileFault", msg: "a snapshot is required to query changed areas of a powered-on virtual machine", file: d.backingFile()}
		}
		capacity, image, uuidAt, seqAt = d.capacity, d.image, d.cbtUUID, d.seq
		if !vi.cbt {
			uuidAt = ""
		}
		liveQuery = true
	}
	if uuidAt == "" {
		l.mu.Unlock()
		return nil, 0, &qcdaError{fault: "FileFault", msg: fmt.Sprintf("change tracking is not active for disk %d of %s (at that snapshot)", key, vi.name), file: d.backingFile()}
	}

	if changeID == "*" {
		l.mu.Unlock()
		exts, err := chainAllocated(image, capacity)
		if err != nil {
			return nil, 0, &qcdaError{fault: "FileFault", msg: err.Error(), file: image}
		}
		return exts, capacity, nil
	}

	if d.corrupt != nil {
		e := *d.corrupt
		l.mu.Unlock()
		return nil, 0, &e
	}
	bad := &qcdaError{fault: "FileFault", msg: fmt.Sprintf("invalid changeId %q for disk %d of %s: change tracking was reset or the changeId is unknown", changeID, key, vi.name), file: d.backingFile()}
	i := strings.LastIndex(changeID, "/")
	since, err := int64(0), error(nil)
	if i > 0 {
		since, err = strconv.ParseInt(changeID[i+1:], 10, 64)
	}
	if i <= 0 || err != nil || since < 0 {
		// not of the form "<uuid>/<sequence>": vSphere refuses the argument
		// itself (InvalidArgument, invalidProperty changeId)
		l.mu.Unlock()
		return nil, 0, &qcdaError{fault: "InvalidArgument", msg: fmt.Sprintf("A specified parameter was not correct: changeId %q", changeID), prop: "changeId"}
	}
	if changeID[:i] != d.cbtUUID || uuidAt != d.cbtUUID || since > seqAt {
		l.mu.Unlock()
		return nil, 0, bad
	}
	var exts []extent
	for _, j := range d.journal {
		if j.epoch > since && (liveQuery || j.epoch <= seqAt) {
			e := j.extent
			if e.end > capacity {
				e.end = capacity
			}
			if e.start < e.end {
				exts = append(exts, e)
			}
		}
	}
	l.mu.Unlock()
	return mergeExtents(exts), capacity, nil
}

// page returns the DiskChangeInfo for one answer starting at startOffset.
func page(all []extent, capacity, startOffset int64, pageSize int) (int64, []extent) {
	var out []extent
	for _, e := range all {
		if e.end <= startOffset {
			continue
		}
		if e.start < startOffset {
			e.start = startOffset
		}
		if len(out) == pageSize {
			// More areas remain: this page ends where its last area ends.
			return out[len(out)-1].end - startOffset, out
		}
		out = append(out, e)
	}
	return capacity - startOffset, out
}

// ctkDisabled: a disk's own CBT switch, "<controller><bus>:<unit>.ctkEnabled"
// in extraConfig, next to the VM's "ctkEnabled" (VMware KB 1031873,
// "Enabling Changed Block Tracking (CBT) on virtual machines"). The
// simulator appends a reconfigured extraConfig key instead of replacing it,
// so the last entry of a key is its value.
func ctkDisabled(extra []types.BaseOptionValue, devs []types.BaseVirtualDevice, disk *types.VirtualDisk) bool {
	key := ctkKey(devs, disk)
	if key == "" {
		return false
	}
	value := ""
	for _, o := range extra {
		ov := o.GetOptionValue()
		if ov.Key == key {
			value = fmt.Sprint(ov.Value)
		}
	}
	return strings.EqualFold(strings.TrimSpace(value), "false")
}

func ctkKey(devs []types.BaseVirtualDevice, disk *types.VirtualDisk) string {
	if disk.UnitNumber == nil {
		return ""
	}
	for _, dev := range devs {
		if dev.GetVirtualDevice().Key != disk.ControllerKey {
			continue
		}
		prefix := ""
		switch dev.(type) {
		case types.BaseVirtualSCSIController:
			prefix = "scsi"
		case types.BaseVirtualSATAController:
			prefix = "sata"
		case *types.VirtualNVMEController:
			prefix = "nvme"
		case *types.VirtualIDEController:
			prefix = "ide"
		default:
			return ""
		}
		ctl, ok := dev.(types.BaseVirtualController)
		if !ok {
			return ""
		}
		return fmt.Sprintf("%s%d:%d.ctkEnabled", prefix, ctl.GetVirtualController().BusNumber, *disk.UnitNumber)
	}
	return ""
}

// revertLocked puts every disk of the VM back to what snapshot ref froze (see
// serveRevert): the links after the snapshot's go, a new delta of it becomes
// the live top, and CBT counts from the snapshot's sequence again.
func (l *lab) revertLocked(ref types.ManagedObjectReference, simVM *simulator.VirtualMachine) types.BaseMethodFault {
	st := l.snaps[ref]
	vi := l.vms[simVM.Self]
	if st == nil || vi == nil {
		return &types.NotFound{}
	}
	for _, d := range vi.disks {
		sd := st.disks[d.key]
		if sd == nil {
			continue
		}
		i := d.indexOf(sd.rel)
		if i < 0 {
			return &types.NotSupported{}
		}
		for other, ost := range l.snaps {
			if osd := ost.disks[d.key]; other != ref && ost.vm == vi.ref && osd != nil && d.indexOf(osd.rel) > i {
				return &types.NotSupported{} // a later snapshot on the chain: the lab has no branches
			}
		}
	}
	for _, d := range vi.disks {
		sd := st.disks[d.key]
		if sd == nil {
			continue
		}
		i := d.indexOf(sd.rel)
		for _, ln := range d.chain[i+1:] {
			if err := os.Remove(ln.abs); err != nil && !os.IsNotExist(err) {
				log.Printf("revert: removing %s: %s", ln.abs, err)
			}
		}
		d.chain = d.chain[:i+1]
		dsDir := l.datastores[d.datastore]
		childRel := nextDeltaName(dsDir, d.chain[0].rel)
		child := link{rel: childRel, abs: filepath.Join(dsDir, childRel)}
		if err := createDelta(d.chain[i].abs, child.abs); err != nil {
			log.Printf("revert of %s: %s", vi.name, err)
			return &types.FileFault{File: child.abs}
		}
		d.chain = append(d.chain, child)
		d.relPath, d.image = child.rel, child.abs
		if sd.cbtUUID != "" && sd.cbtUUID == d.cbtUUID {
			d.seq = sd.seq
			kept := d.journal[:0]
			for _, j := range d.journal {
				if j.epoch <= sd.seq {
					kept = append(kept, j)
				}
			}
			d.journal = kept
		} else if vi.cbt && d.cbtUUID != "" {
			// tracking restarted after the snapshot: nothing to go back to
			d.cbtUUID, d.seq, d.journal = newCBTUUID(), 0, nil
		}
	}
	l.applyLiveLocked(vi, &simVM.VirtualMachine)
	return nil
}
