"""labctl command line."""

import argparse
import json
import sys

from .core import DEFAULT_BLOCK_SIZE, DEFAULT_DISK_SIZE, Lab, LabError, build


def _size(text):
    """Bytes, with optional K/M/G/T suffix (binary)."""
    t = text.strip().upper().rstrip("B").rstrip("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        return int(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError("not a size: %r" % text)


def _print(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


def main(argv=None):
    p = argparse.ArgumentParser(prog="labctl", description="The migratekit test lab: vSphere simulator with CBT, "
                                "nbdkit targets and a VMA receiver.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, help):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--dir", required=True, help="the lab directory")
        return sp

    sp = add("up", "start a lab in DIR and write DIR/lab.json and DIR/inventory.yml")
    sp.add_argument("--vms", type=int, default=1)
    sp.add_argument("--disks", type=int, default=1)
    sp.add_argument("--disk-size", type=_size, default=DEFAULT_DISK_SIZE, help="bytes (K/M/G suffix allowed)")
    sp.add_argument("--vma-token-env", metavar="VAR",
                    help="require this bearer token (read from environment variable VAR) at the VMA receiver")

    add("down", "stop every process of the lab in DIR (idempotent)")
    add("status", "show the lab's processes and CBT state")

    sp = add("write", "write random data into a VM disk's live image (recorded in its change journal)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)
    sp.add_argument("--offset", type=_size)
    sp.add_argument("--length", type=_size)
    sp.add_argument("--random-blocks", type=int)
    sp.add_argument("--block-size", type=_size, default=DEFAULT_BLOCK_SIZE)
    sp.add_argument("--seed", type=int)

    sp = add("reset-cbt", "give a disk a new CBT uuid (old changeIds then fail with FileFault)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)

    sp = add("corrupt-cbt", "damage a disk's tracking file (QueryChangedDiskAreas faults until a CBT reset)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)
    sp.add_argument("--fault", choices=["FileFault", "InvalidArgument"], default="FileFault")

    sp = add("grow", "grow a disk")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)
    sp.add_argument("--size", type=_size, required=True)
    sp.add_argument("--target", action="store_true", help="grow the target image too")

    sp = add("snapshot", "take a snapshot of a VM as a user would (CreateSnapshot through the vSphere API)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--name", required=True)

    sp = add("snapshots", "list the names of a VM's snapshots (JSON)")
    sp.add_argument("--vm", required=True)

    sp = add("disk-config", "make a disk independent, an RDM or multi-writer (ReconfigVM through the vSphere API)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)
    sp.add_argument("--disk-mode", choices=["persistent", "independent_persistent", "independent_nonpersistent"])
    sp.add_argument("--rdm", choices=["physicalMode", "virtualMode"])
    sp.add_argument("--sharing", choices=["sharingNone", "sharingMultiWriter"])

    sp = add("bus-sharing", "set a SCSI controller's bus sharing (ReconfigVM through the vSphere API)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--controller-key", type=int, default=1000)
    sp.add_argument("--shared-bus", required=True, choices=["noSharing", "virtualSharing", "physicalSharing"])

    sp = add("chain", "print the live top descriptor of a disk's VMDK chain (local path)")
    sp.add_argument("--vm", required=True)
    sp.add_argument("--disk-key", type=int, required=True)

    sp = add("vma", "set the VMA receiver's mode")
    g = sp.add_mutually_exclusive_group(required=True)
    for m in ("ok", "fail", "stall", "down", "up"):
        g.add_argument("--" + m, dest="mode", action="store_const", const=m)
    sp.add_argument("--stall-seconds", type=float)

    add("vma-log", "print every update the VMA receiver got (JSON lines)")

    sub.add_parser("build", help="build vcsim-cbt if needed")

    args = p.parse_args(argv)
    try:
        if args.cmd == "build":
            print(build(quiet=False))
            return 0
        if args.cmd == "up":
            token = None
            if args.vma_token_env:
                import os
                token = os.environ.get(args.vma_token_env)
                if not token:
                    raise LabError("environment variable %s is empty" % args.vma_token_env)
            lab = Lab.up(args.dir, vms=args.vms, disks=args.disks, disk_size=args.disk_size, vma_token=token)
            info = lab.info
            _print({
                "dir": lab.dir,
                "lab_json": lab.lab_json,
                "inventory": lab.inventory,
                "vcenter": "https://%s:%d/sdk" % (info["vcenter"]["hostname"], info["vcenter"]["port"]),
                "vma_url": info["vma_url"],
                "vms": [v["name"] for v in info["vms"]],
                "pids": lab.pids(),
            })
            return 0
        lab = Lab(args.dir)
        if args.cmd == "down":
            lab.down()
            return 0
        if args.cmd == "status":
            out = {"dir": lab.dir, "pids": lab.pids()}
            if out["pids"].get("vcsim"):
                out["cbt"] = lab.state()
            _print(out)
            return 0
        if args.cmd == "write":
            if args.random_blocks is not None:
                if args.offset is not None or args.length is not None:
                    raise LabError("--random-blocks excludes --offset/--length")
                res = lab.write(args.vm, args.disk_key, random_blocks=args.random_blocks,
                                block_size=args.block_size, seed=args.seed)
            else:
                if args.offset is None or args.length is None:
                    raise LabError("give --offset and --length, or --random-blocks")
                res = lab.write(args.vm, args.disk_key, offset=args.offset, length=args.length, seed=args.seed)
            print(json.dumps(res))
            return 0
        if args.cmd == "reset-cbt":
            _print(lab.reset_cbt(args.vm, args.disk_key))
            return 0
        if args.cmd == "corrupt-cbt":
            _print(lab.corrupt_cbt(args.vm, args.disk_key, args.fault))
            return 0
        if args.cmd == "grow":
            _print(lab.grow(args.vm, args.disk_key, args.size, target=args.target))
            return 0
        if args.cmd == "snapshot":
            print(json.dumps({"moid": lab.user_snapshot(args.vm, args.name)}))
            return 0
        if args.cmd == "snapshots":
            print(json.dumps(lab.snapshot_names(args.vm)))
            return 0
        if args.cmd == "disk-config":
            lab.disk_config(args.vm, args.disk_key, disk_mode=args.disk_mode, rdm=args.rdm, sharing=args.sharing)
            return 0
        if args.cmd == "bus-sharing":
            lab.bus_sharing(args.vm, args.controller_key, args.shared_bus)
            return 0
        if args.cmd == "chain":
            print(lab.live(args.vm, args.disk_key)["image"])
            return 0
        if args.cmd == "vma":
            _print(lab.vma_mode(args.mode, stall_seconds=args.stall_seconds))
            return 0
        if args.cmd == "vma-log":
            for entry in lab.vma_log():
                print(json.dumps(entry, sort_keys=True))
            return 0
    except LabError as e:
        print("labctl: %s" % e, file=sys.stderr)
        return 1
    return 2
