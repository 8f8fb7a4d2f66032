package main

// Disks a snapshot cannot freeze, as vSphere models them: a test makes a lab
// disk independent, a raw disk mapping (RDM), multi-writer or puts its
// controller in bus sharing with ReconfigVM (an edit of the device), and
// CreateSnapshot treats them as the vSphere API reference says.

import (
	"fmt"
	"log"
	"net/http"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

const physicalMode = string(types.VirtualDiskCompatibilityModePhysicalMode)

func diskModeOf(disk *types.VirtualDisk) string {
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return b.DiskMode
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		return b.DiskMode
	}
	return ""
}

// snapshotFreezes: whether a snapshot gives this disk a delta and freezes
// its current link. vSphere API reference, VirtualDiskMode:
// "independent_persistent: Same as persistent, but not affected by
// snapshots"; "independent_nonpersistent: Same as nonpersistent, but not
// affected by snapshots". A virtual-mode RDM is snapshotted like a flat disk
// (VirtualDiskRawDiskMappingVer1BackingInfo has changeId, "The change ID of
// the virtual disk for the corresponding snapshot", and a parent of the same
// type, deltaDiskFormat); a physical-mode one is refused (see
// snapshotIncompatibleDevice) unless independent.
func snapshotFreezes(disk *types.VirtualDisk) bool {
	if strings.HasPrefix(diskModeOf(disk), "independent") {
		return false
	}
	switch b := disk.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return true
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		return b.CompatibilityMode != physicalMode
	}
	return false
}

func deviceLabel(d *types.VirtualDevice) string {
	if d.DeviceInfo != nil && d.DeviceInfo.GetDescription().Label != "" {
		return d.DeviceInfo.GetDescription().Label
	}
	return fmt.Sprintf("device %d", d.Key)
}

// snapshotIncompatibleDevice: vSphere API reference,
// SnapshotIncompatibleDeviceInVm: "Thrown if a snapshot operation cannot be
// performed on account of an incompatible device. This fault can be thrown
// for instance if a virtual machine uses a raw disk or a shared bus
// controller"; its fault "is typically a subclass of
// VirtualHardwareCompatibilityIssue, such as RawDiskNotSupported, or
// SharedBusControllerNotSupported". The messages are vCenter's.
func snapshotIncompatibleDevice(devices []types.BaseVirtualDevice) (types.BaseMethodFault, string) {
	for _, dev := range devices {
		c, ok := dev.(types.BaseVirtualSCSIController)
		if !ok {
			continue
		}
		sc := c.GetVirtualSCSIController()
		if sc.SharedBus != "" && sc.SharedBus != types.VirtualSCSISharingNoSharing {
			label := deviceLabel(dev.GetVirtualDevice())
			return &types.SharedBusControllerNotSupported{DeviceNotSupported: types.DeviceNotSupported{Device: label}},
				fmt.Sprintf("Virtual machine is configured to use a device that prevents the snapshot operation: "+
					"Device '%s' is a SCSI controller engaged in bus-sharing.", label)
		}
	}
	for _, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
		if ok && b.CompatibilityMode == physicalMode && !strings.HasPrefix(b.DiskMode, "independent") {
			label := deviceLabel(dev.GetVirtualDevice())
			return &types.RawDiskNotSupported{DeviceNotSupported: types.DeviceNotSupported{Device: label}},
				fmt.Sprintf("Virtual machine is configured to use a device that prevents the snapshot operation: "+
					"Device '%s' is a raw disk in physical compatibility mode, which does not support snapshots.", label)
		}
	}
	return nil, ""
}

// serveIncompatibleSnapshot answers CreateSnapshot_Task of a VM with such a
// device with a task that fails with SnapshotIncompatibleDeviceInVm; false
// (nothing written) for any other VM.
func (l *lab) serveIncompatibleSnapshot(w http.ResponseWriter, r *http.Request, inner http.Handler, vmRef types.ManagedObjectReference) bool {
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok || !authenticated(r, inner) {
		return false
	}
	var fault types.BaseMethodFault
	var msg string
	simulator.Map.WithLock(vm, func() {
		if vm.Config != nil {
			fault, msg = snapshotIncompatibleDevice(vm.Config.Hardware.Device)
		}
	})
	if fault == nil {
		return false
	}
	log.Printf("CreateSnapshot of %s refused: %s", vm.Name, msg)
	refused := &types.SnapshotIncompatibleDeviceInVm{Fault: types.LocalizedMethodFault{Fault: fault, LocalizedMessage: msg}}
	task := simulator.CreateTask(vm, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, refused
	})
	task.Run()
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.error", Val: types.LocalizedMethodFault{Fault: refused, LocalizedMessage: msg}},
	})
	writeTaskResponse(w, "CreateSnapshot_Task", task.Self)
	return true
}

// copyBacking is a copy of a disk backing the lab changes (flat or RDM).
func copyBacking(b types.BaseVirtualDeviceBackingInfo) types.BaseVirtualDeviceBackingInfo {
	switch x := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		c := *x
		return &c
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		c := *x
		return &c
	}
	return b
}

// linkBacking points a flat or virtual-mode RDM backing at link i of the
// disk's chain (fileName, parent, deltaDiskFormat) and, unless changeID is
// nil, sets its changeId; false for any other backing (left alone).
func (d *diskState) linkBacking(b types.BaseVirtualDeviceBackingInfo, i int, fileName string, changeID *string) bool {
	switch x := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		x.FileName = fileName
		x.Parent = d.parentBacking(i, x)
		x.DeltaDiskFormat = deltaFormat(i)
		if changeID != nil {
			x.ChangeId = *changeID
		}
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		if x.CompatibilityMode == physicalMode {
			return false
		}
		x.FileName = fileName
		x.Parent = d.rdmParentBacking(i, x)
		x.DeltaDiskFormat = deltaFormat(i)
		if changeID != nil {
			x.ChangeId = *changeID
		}
	default:
		return false
	}
	return true
}

// rdmParentBacking is parentBacking for a virtual-mode RDM: "parent" is a
// VirtualDiskRawDiskMappingVer1BackingInfo too.
func (d *diskState) rdmParentBacking(i int, tmpl *types.VirtualDiskRawDiskMappingVer1BackingInfo) *types.VirtualDiskRawDiskMappingVer1BackingInfo {
	if i <= 0 || i > len(d.chain)-1 {
		return nil
	}
	p := &types.VirtualDiskRawDiskMappingVer1BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: d.dsPathOf(i - 1), Datastore: tmpl.Datastore},
		LunUuid:                      tmpl.LunUuid,
		DeviceName:                   tmpl.DeviceName,
		CompatibilityMode:            tmpl.CompatibilityMode,
		DiskMode:                     tmpl.DiskMode,
	}
	p.DeltaDiskFormat = deltaFormat(i - 1)
	p.Parent = d.rdmParentBacking(i-1, tmpl)
	return p
}
