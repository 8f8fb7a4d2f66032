package simulator

// Added to Debian's govmomi 0.24 simulator at build time (go build -overlay,
// see tests/lab/build.sh): its updateDiskLayouts asserts that every disk
// backing is a VirtualDiskFlatVer2BackingInfo and panics on a raw disk
// mapping, which every later ReconfigVM and RefreshStorageInfo of the VM
// then runs into. The layout needs only the chain's file names:
// labLayoutBacking gives them for an RDM backing (and its parents, of the
// same type: VirtualDiskRawDiskMappingVer1BackingInfo.parent).

import "github.com/vmware/govmomi/vim25/types"

func labLayoutBacking(b types.BaseVirtualDeviceBackingInfo) *types.VirtualDiskFlatVer2BackingInfo {
	switch x := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return x
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		if x == nil {
			return nil
		}
		flat := &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: x.VirtualDeviceFileBackingInfo}
		if x.Parent != nil {
			flat.Parent = labLayoutBacking(x.Parent)
		}
		return flat
	}
	return &types.VirtualDiskFlatVer2BackingInfo{}
}
