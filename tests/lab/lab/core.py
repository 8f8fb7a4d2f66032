"""The migratekit test lab: vcsim-cbt + VMA receiver + one nbdkit per target.

    from lab import Lab
    lab = Lab.up("/tmp/mylab", vms=1, disks=2, disk_size=64 << 20)
    lab.info                      # the lab.json dict (docs/contracts.md)
    lab.write("VM0", 2000, offset=0, length=65536)
    lab.down()

Layout of DIR:
    lab.json, inventory.yml         (0600; the only files with the password)
    run/    pidfiles, ready files, control.json (control token, 0600), configs
    logs/   vcsim.log, vma.log, nbdkit-*.log
    datastores/  the simulator's datastore directories: VMDK descriptors, flat extents, snapshot deltas
    targets/     target images served by nbdkit
    nbd/         nbdkit unix sockets
    vma/updates.jsonl   every update the VMA receiver got
"""

import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

LAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/lab
REPO_ROOT = os.path.dirname(os.path.dirname(LAB_DIR))
BUILD_SH = os.path.join(LAB_DIR, "build.sh")
VCSIM_BIN = os.path.join(LAB_DIR, "bin", "vcsim-cbt")
VMA_RECEIVER = os.path.join(LAB_DIR, "vma_receiver.py")

USERNAME = "migratekit-lab"
MiB = 1 << 20
DEFAULT_DISK_SIZE = 64 * MiB
DEFAULT_BLOCK_SIZE = 64 * 1024  # CBT granularity of the simulator
DEFAULT_PAGE_SIZE = 64  # changedArea entries per QueryChangedDiskAreas answer
WRITE_BATCH_BYTES = 8 * MiB


class LabError(Exception):
    pass


def venv_python():
    p = os.path.join(REPO_ROOT, ".venv", "bin", "python")
    return p if os.path.exists(p) else sys.executable


def build(force=False, quiet=True):
    """Build vcsim-cbt if needed (tests/lab/build.sh; no-op when up to date)."""
    args = [BUILD_SH] + (["--force"] if force else [])
    r = subprocess.run(args, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise LabError("building vcsim-cbt failed:\n" + r.stdout)
    if not quiet and r.stdout:
        sys.stderr.write(r.stdout)
    return VCSIM_BIN


# ---------------------------------------------------------------- small helpers

def _write_private(path, text):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_json(path, obj, private=False):
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    if private:
        _write_private(path, text)
    else:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _proc_state(pid):
    """'R', 'S', 'Z', ... or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # pid (comm) state ...; comm may contain spaces/parentheses
    return stat.rsplit(")", 1)[1].split()[0]


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid):
    """True when pid runs (zombies of ours are reaped and count as gone)."""
    st = _proc_state(pid)
    if st is None:
        return False
    if st in ("Z", "X"):
        _reap(pid)
        return False
    return True


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _wait_for(predicate, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        v = predicate()
        if v:
            return v
        if proc is not None and proc.poll() is not None and not predicate():
            tail = ""
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    tail = f.read()[-3000:]
            raise LabError("%s: process exited with %s\n%s" % (what, proc.returncode, tail))
        if time.monotonic() > deadline:
            tail = ""
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    tail = f.read()[-3000:]
            raise LabError("timed out waiting for %s\n%s" % (what, tail))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def _nbd_answers(sock_path):
    """True when an NBD server greets on the unix socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(sock_path)
        data = b""
        while len(data) < 8:
            chunk = s.recv(8 - len(data))
            if not chunk:
                break
            data += chunk
        return data == b"NBDMAGIC"
    except OSError:
        return False
    finally:
        s.close()


def _yaml_dump(obj):
    try:
        import yaml  # ansible-core brings PyYAML
    except ImportError:  # JSON is valid YAML
        return json.dumps(obj, indent=2) + "\n"
    return yaml.safe_dump(obj, default_flow_style=False, sort_keys=False)


# ---------------------------------------------------------------- VMDK chains

def chain_to_raw(descriptor, raw_path):
    """The disk a VMDK chain presents (its top descriptor), written to a raw file (qemu-img convert)."""
    r = subprocess.run(["qemu-img", "convert", "-U", "-f", "vmdk", "-O", "raw", descriptor, raw_path],
                       check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise LabError("qemu-img convert %s: %s" % (descriptor, r.stdout.strip()))
    return raw_path


def chain_read(descriptor, offset, length):
    """``length`` bytes at ``offset`` of the disk a VMDK chain presents."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="lab-chain-") as tmp:
        raw = chain_to_raw(descriptor, os.path.join(tmp, "disk.raw"))
        with open(raw, "rb") as f:
            f.seek(offset)
            return f.read(length)


def chain_sha256(descriptor):
    """SHA-256 of the disk a VMDK chain presents."""
    import hashlib
    import tempfile
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="lab-chain-") as tmp:
        raw = chain_to_raw(descriptor, os.path.join(tmp, "disk.raw"))
        with open(raw, "rb") as f:
            for chunk in iter(lambda: f.read(MiB), b""):
                h.update(chunk)
    return h.hexdigest()


def compare_chain(descriptor, target_raw):
    """True when a raw target holds exactly what a VMDK chain presents (qemu-img compare -f vmdk -F raw)."""
    r = subprocess.run(["qemu-img", "compare", "-U", "-f", "vmdk", "-F", "raw", descriptor, target_raw],
                       check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode not in (0, 1):
        raise LabError("qemu-img compare %s %s: %s" % (descriptor, target_raw, r.stdout.strip()))
    return r.returncode == 0


# ---------------------------------------------------------------- the lab

class Lab:
    """A running (or stopped) lab in a directory."""

    def __init__(self, dir):
        self.dir = os.path.abspath(dir)
        self.run_dir = os.path.join(self.dir, "run")
        self.log_dir = os.path.join(self.dir, "logs")
        self._procs = {}  # Popen objects of children started by this process

    # ------------------------------------------------------------ paths
    @property
    def lab_json(self):
        return os.path.join(self.dir, "lab.json")

    @property
    def inventory(self):
        return os.path.join(self.dir, "inventory.yml")

    @property
    def vma_log_path(self):
        return os.path.join(self.dir, "vma", "updates.jsonl")

    def _pidfile(self, name):
        return os.path.join(self.run_dir, name + ".pid")

    # ------------------------------------------------------------ info
    @property
    def info(self):
        """The lab.json content (re-read on each access)."""
        try:
            return _read_json(self.lab_json)
        except FileNotFoundError:
            raise LabError("no lab in %s (run: labctl up --dir %s)" % (self.dir, self.dir))

    @property
    def vcenter(self):
        return self.info["vcenter"]

    @property
    def vma_url(self):
        return self.info["vma_url"]

    @property
    def datastores(self):
        return self.info["datastores"]

    @property
    def vms(self):
        return self.info["vms"]

    def vm(self, name):
        for vm in self.vms:
            if vm["name"] == name:
                return vm
        raise LabError("no VM named %r in the lab (have: %s)" % (name, ", ".join(v["name"] for v in self.vms)))

    def disk(self, vm, key):
        v = self.vm(vm)
        for d in v["disks"]:
            if int(d["key"]) == int(key):
                return d
        raise LabError("VM %s has no disk with key %s (have: %s)" % (vm, key, ", ".join(str(d["key"]) for d in v["disks"])))

    def datastore_path(self, ds_path):
        """'[LocalDS_0] VM0/x.img' -> absolute local path."""
        if not ds_path.startswith("["):
            raise LabError("not a datastore path: %r" % ds_path)
        ds, rel = ds_path[1:].split("]", 1)
        try:
            root = self.datastores[ds]
        except KeyError:
            raise LabError("unknown datastore %r in %r" % (ds, ds_path))
        return os.path.join(root, rel.strip())

    def _control(self):
        try:
            return _read_json(os.path.join(self.run_dir, "control.json"))
        except FileNotFoundError:
            raise LabError("no running lab in %s" % self.dir)

    def _call(self, path, body=None, timeout=60):
        c = self._control()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(c["url"] + path, data=data,
                                     headers={"Authorization": "Bearer " + c["token"],
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                msg = json.load(e).get("error")
            except Exception:
                msg = str(e)
            raise LabError("vcsim-cbt %s: %s" % (path, msg))
        except urllib.error.URLError as e:
            raise LabError("vcsim-cbt control API unreachable (is the lab up?): %s" % e)

    def state(self):
        """CBT state of every disk and snapshot, from the simulator."""
        return self._call("/state")

    def live(self, vm, key):
        """The simulator's view of a disk now: ``image`` (local path of the live top descriptor),
        ``backing_file``, ``chain`` (datastore paths, the base disk first), CBT state."""
        for v in self.state()["vms"]:
            if v["name"] == vm:
                for d in v["disks"]:
                    if int(d["key"]) == int(key):
                        return d
        raise LabError("VM %s has no disk with key %s" % (vm, key))

    def pids(self):
        """{name: pid} of the lab's processes that are running."""
        out = {}
        if not os.path.isdir(self.run_dir):
            return out
        for fn in sorted(os.listdir(self.run_dir)):
            if fn.endswith(".pid"):
                name = fn[:-4]
                pid = self._read_pid(name)
                if pid and pid_alive(pid) and self._owned(name, pid):
                    out[name] = pid
        return out

    def _read_pid(self, name):
        try:
            with open(self._pidfile(name)) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _owned(self, name, pid):
        """The pid still is the process we started (guards against pid reuse)."""
        return self.dir in _cmdline(pid)

    # ------------------------------------------------------------ up
    @classmethod
    def up(cls, dir, vms=1, disks=1, disk_size=DEFAULT_DISK_SIZE, block_size=DEFAULT_BLOCK_SIZE,
           page_size=DEFAULT_PAGE_SIZE, vma_token=None, watch_pid=None, timeout=30):
        """Build if needed, start everything, write lab.json and inventory.yml."""
        if vms < 1 or disks < 1 or disks > 15:
            raise LabError("vms must be >= 1 and disks 1..15")
        if disk_size <= 0 or disk_size % 1024:
            raise LabError("disk_size must be a positive multiple of 1024, got %r" % disk_size)
        lab = cls(dir)
        if lab.pids():
            raise LabError("a lab is already running in %s (labctl down --dir %s)" % (lab.dir, lab.dir))
        for sub in ("run", "logs", "targets", "nbd", "vma"):
            p = os.path.join(lab.dir, sub)
            if sub in ("run", "nbd") and os.path.isdir(p):
                shutil.rmtree(p)
            os.makedirs(p, exist_ok=True)
        os.chmod(lab.dir, 0o700)
        ds_root = os.path.join(lab.dir, "datastores")
        if os.path.isdir(ds_root):
            shutil.rmtree(ds_root)
        os.makedirs(ds_root)
        for name in ("lab.json", "inventory.yml"):
            if os.path.exists(os.path.join(lab.dir, name)):
                os.remove(os.path.join(lab.dir, name))
        sock_probe = os.path.join(lab.dir, "nbd", "VM%d-%d.sock" % (vms - 1, 2000 + disks - 1))
        if len(sock_probe.encode()) > 107:
            raise LabError("lab directory path too long for unix sockets: %s" % sock_probe)

        build()
        try:
            lab._start(vms, disks, disk_size, block_size, page_size, vma_token, watch_pid, timeout)
        except BaseException:
            lab.down()
            raise
        return lab

    def _start(self, vms, disks, disk_size, block_size, page_size, vma_token, watch_pid, timeout):
        password = secrets.token_urlsafe(18)
        control_token = secrets.token_hex(16)
        run, logs = self.run_dir, self.log_dir

        # vcsim-cbt
        vcsim_ready = os.path.join(run, "vcsim.json")
        cfg_path = os.path.join(run, "vcsim-config.json")
        _write_json(cfg_path, {
            "listen": "127.0.0.1:0",
            "control_listen": "127.0.0.1:0",
            "datastore_root": os.path.join(self.dir, "datastores"),
            "vms": vms, "disks": disks, "disk_size": disk_size,
            "block_size": block_size, "page_size": page_size,
            "ready_file": vcsim_ready,
            "watch_pid": watch_pid or 0,
            "username": USERNAME,
        })
        env = dict(os.environ, VCSIM_CBT_PASSWORD=password, VCSIM_CBT_CONTROL_TOKEN=control_token)
        env.pop("VMA_RECEIVER_TOKEN", None)
        vcsim_log = os.path.join(logs, "vcsim.log")
        self._spawn("vcsim", [VCSIM_BIN, "-config", cfg_path], env, vcsim_log)

        # VMA receiver
        vma_ready = os.path.join(run, "vma.json")
        self._start_vma(port=0, token=vma_token, watch_pid=watch_pid)

        # targets + nbdkit, one per disk
        targets = []
        for i in range(vms):
            for j in range(disks):
                name = "VM%d-%d" % (i, 2000 + j)
                img = os.path.join(self.dir, "targets", name + ".img")
                with open(img, "wb") as f:
                    f.truncate(disk_size)
                sock = os.path.join(self.dir, "nbd", name + ".sock")
                self._start_nbdkit(name, sock, img, foreground=(watch_pid == os.getpid()))
                targets.append((name, sock, img))

        # wait for everything
        r = _wait_for(lambda: os.path.exists(vcsim_ready) and _read_json(vcsim_ready), timeout,
                      "vcsim-cbt to start", self._procs.get("vcsim"), vcsim_log)
        v = _wait_for(lambda: os.path.exists(vma_ready) and _read_json(vma_ready), timeout,
                      "the VMA receiver to start", self._procs.get("vma"), os.path.join(logs, "vma.log"))
        for name, sock, img in targets:
            _wait_for(lambda: _nbd_answers(sock), timeout, "nbdkit for %s" % name, self._procs.get("nbdkit-" + name),
                      os.path.join(logs, "nbdkit-%s.log" % name))
        for name in [t[0] for t in targets]:
            _wait_for(lambda: self._read_pid("nbdkit-" + name), timeout, "nbdkit pidfile for %s" % name)

        _write_json(os.path.join(run, "control.json"), {"url": r["control_url"], "token": control_token},
                    private=True)
        self._write_pidfile("vcsim", r["pid"])

        info = {
            "dir": self.dir,
            "vcenter": {"hostname": r["hostname"], "port": r["port"], "username": USERNAME,
                        "password": password, "validate_certs": False,
                        # the vCenter's self-signed certificate: trust it to verify the connection
                        "ca_file": r.get("ca_file")},
            "vma_url": v["url"],
            "datastores": r["datastores"],
            "vms": [],
        }
        if vma_token:
            info["vma_token"] = vma_token
        for vm in r["vms"]:
            out_vm = {k: vm[k] for k in ("name", "path", "uuid", "instance_uuid", "moid", "datacenter")}
            out_vm["disks"] = []
            for d in vm["disks"]:
                name = "%s-%d" % (vm["name"], d["key"])
                out_vm["disks"].append({
                    "key": d["key"], "label": d["label"], "capacity_bytes": d["capacity_bytes"],
                    "datastore": d["datastore"], "backing_file": d["backing_file"], "image": d["image"],
                    "target_image": os.path.join(self.dir, "targets", name + ".img"),
                    "target_uri": "nbd+unix:///?socket=" + os.path.join(self.dir, "nbd", name + ".sock"),
                })
            info["vms"].append(out_vm)
        self._save(info)

    def _save(self, info):
        _write_json(self.lab_json, info, private=True)
        _write_private(self.inventory, _yaml_dump(self._inventory(info)))

    def _inventory(self, info):
        hosts = {}
        for vm in info["vms"]:
            hosts[vm["name"]] = {
                "migratekit_vm_name": vm["name"],
                "migratekit_vm_uuid": vm["uuid"],
                "migratekit_vm_moid": vm["moid"],
                "migratekit_vm_path": vm["path"],
                "migratekit_datacenter": vm["datacenter"],
                "migratekit_targets": {str(d["key"]): d["target_uri"] for d in vm["disks"]},
            }
        vc = info["vcenter"]
        gvars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": venv_python(),
            "migratekit_vcenter_hostname": vc["hostname"],
            "migratekit_vcenter_port": vc["port"],
            "migratekit_vcenter_username": vc["username"],
            "migratekit_vcenter_password": vc["password"],
            "migratekit_vcenter_validate_certs": vc["validate_certs"],
            "migratekit_vma_url": info["vma_url"],
            "migratekit_datastore_paths": dict(info["datastores"]),
            "migratekit_lab_dir": info["dir"],
        }
        if info.get("vma_token"):
            gvars["migratekit_vma_token"] = info["vma_token"]
        return {"all": {"children": {"migratekit_vms": {"hosts": hosts, "vars": gvars}}}}

    def _write_pidfile(self, name, pid):
        with open(self._pidfile(name), "w") as f:
            f.write("%d\n" % pid)

    def _spawn(self, name, argv, env, log):
        logf = open(log, "ab")
        try:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 cwd=self.dir, start_new_session=True, close_fds=True)
        finally:
            logf.close()
        self._procs[name] = p
        self._write_pidfile(name, p.pid)
        return p

    def _start_vma(self, port=0, token=None, watch_pid=None):
        vma_ready = os.path.join(self.run_dir, "vma.json")
        if os.path.exists(vma_ready):
            os.remove(vma_ready)
        env = dict(os.environ)
        env.pop("VCSIM_CBT_PASSWORD", None)
        env.pop("VCSIM_CBT_CONTROL_TOKEN", None)
        if token:
            env["VMA_RECEIVER_TOKEN"] = token
        else:
            env.pop("VMA_RECEIVER_TOKEN", None)
        argv = [sys.executable, VMA_RECEIVER, "--port", str(port), "--log", self.vma_log_path,
                "--ready-file", vma_ready]
        if watch_pid:
            argv += ["--watch-pid", str(watch_pid)]
        _write_json(os.path.join(self.run_dir, "vma-args.json"), {"watch_pid": watch_pid or 0}, private=True)
        return self._spawn("vma", argv, env, os.path.join(self.log_dir, "vma.log"))

    def _start_nbdkit(self, name, sock, img, foreground=False):
        pidfile = self._pidfile("nbdkit-" + name)
        log = os.path.join(self.log_dir, "nbdkit-%s.log" % name)
        argv = ["nbdkit", "-U", sock, "-P", pidfile, "--log=stderr", "file", "file=" + img]
        if foreground:
            # Started by the process being watched (pytest): run as its child
            # and exit with it, so a killed test run leaves no nbdkit behind.
            argv[1:1] = ["-f", "--exit-with-parent"]
            logf = open(log, "ab")
            try:
                self._procs["nbdkit-" + name] = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir,
                    close_fds=True)
            finally:
                logf.close()
            return
        with open(log, "ab") as logf:
            # nbdkit daemonizes: the foreground process exits at once; the
            # daemon writes the pidfile when it is ready.
            r = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                               cwd=self.dir, start_new_session=True, close_fds=True)
        if r.returncode != 0:
            with open(log, errors="replace") as f:
                raise LabError("nbdkit for %s failed:\n%s" % (name, f.read()[-2000:]))

    # ------------------------------------------------------------ guest writes and disk operations
    def write(self, vm, key, offset=None, length=None, data=None, random_blocks=None,
              block_size=DEFAULT_BLOCK_SIZE, seed=None):
        """Write into the live top of a disk's chain and record it in its change journal.

        One of: offset+length (random data), offset+data (these bytes),
        random_blocks=N (N distinct aligned blocks of block_size, random data).
        Returns the written ranges [[offset, length], ...] sorted by offset.
        """
        d = self.disk(vm, key)
        cap = self._capacity(vm, key, d)
        rng = random.Random(seed)
        writes = []
        if random_blocks is not None:
            if offset is not None or length is not None or data is not None:
                raise LabError("random_blocks excludes offset/length/data")
            nblocks = cap // block_size
            if random_blocks > nblocks:
                raise LabError("cannot write %d blocks of %d bytes into a %d-byte disk" % (random_blocks, block_size, cap))
            for b in sorted(rng.sample(range(nblocks), random_blocks)):
                writes.append((b * block_size, rng.randbytes(block_size)))
        else:
            if offset is None:
                raise LabError("offset is required (or random_blocks)")
            if data is None:
                if length is None or length <= 0:
                    raise LabError("length must be > 0")
                data = rng.randbytes(length)
            if offset < 0 or offset + len(data) > cap:
                raise LabError("write [%d, +%d) is outside disk %s/%s (capacity %d)" % (offset, len(data), vm, key, cap))
            writes.append((offset, bytes(data)))
        done = []
        batch, size = [], 0
        for off, buf in writes + [(None, None)]:
            if off is None or (batch and size + len(buf) > WRITE_BATCH_BYTES):
                if batch:
                    res = self._call("/write", {"vm": vm, "key": int(key), "writes": batch})
                    done.extend(res["written"] or [])
                batch, size = [], 0
            if off is not None:
                batch.append({"offset": off, "data": base64.b64encode(buf).decode()})
                size += len(buf)
        return sorted([list(x) for x in done])

    def _capacity(self, vm, key, d=None):
        for v in self.state()["vms"]:
            if v["name"] == vm:
                for dd in v["disks"]:
                    if int(dd["key"]) == int(key):
                        return dd["capacity_bytes"]
        return (d or self.disk(vm, key))["capacity_bytes"]

    def reset_cbt(self, vm, key):
        """New CBT uuid for the disk, sequence restarts: old changeIds now fail."""
        self.disk(vm, key)
        return self._call("/reset-cbt", {"vm": vm, "key": int(key)})

    def corrupt_cbt(self, vm, key, fault="FileFault"):
        """Damage the disk's tracking file: QueryChangedDiskAreas then answers ``fault`` (FileFault or
        InvalidArgument on changeId) for every changeId but "*", until CBT is turned off and on again."""
        self.disk(vm, key)
        return self._call("/corrupt-cbt", {"vm": vm, "key": int(key), "fault": fault})

    def grow(self, vm, key, size, target=False):
        """Grow the disk (flat extent, descriptor and reported capacity; refused while it has snapshots, as in
        vSphere); target=True grows the target image too."""
        d = self.disk(vm, key)
        res = self._call("/grow", {"vm": vm, "key": int(key), "size": int(size)})
        if target:
            with open(d["target_image"], "r+b") as f:
                if os.fstat(f.fileno()).st_size < size:
                    f.truncate(size)
        info = self.info
        for v in info["vms"]:
            if v["name"] == vm:
                for dd in v["disks"]:
                    if int(dd["key"]) == int(key):
                        dd["capacity_bytes"] = res["capacity_bytes"]
        self._save(info)
        return res

    # ------------------------------------------------------------ VMA receiver
    def _vma_call(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.vma_url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.URLError as e:
            raise LabError("VMA receiver unreachable (is it down?): %s" % e)

    def vma_mode(self, mode, stall_seconds=None):
        """mode: ok | fail | stall | down | up."""
        if mode == "down":
            self.vma_stop()
            return {"mode": "down"}
        if mode == "up":
            self.vma_start()
            return self._vma_call("/_lab/mode")
        if mode not in ("ok", "fail", "stall"):
            raise LabError("unknown VMA mode %r" % mode)
        if "vma" not in self.pids():
            self.vma_start()
        body = {"mode": mode}
        if stall_seconds is not None:
            body["stall_seconds"] = stall_seconds
        return self._vma_call("/_lab/mode", body)

    def vma_stop(self):
        self._stop("vma")

    def vma_start(self):
        """(Re)start the receiver on the port of lab.json's vma_url."""
        if "vma" in self.pids():
            return
        port = int(self.vma_url.rsplit(":", 1)[1].split("/")[0])
        try:
            args = _read_json(os.path.join(self.run_dir, "vma-args.json"))
        except FileNotFoundError:
            args = {}
        token = self.info.get("vma_token")
        p = self._start_vma(port=port, token=token, watch_pid=args.get("watch_pid") or None)
        ready = os.path.join(self.run_dir, "vma.json")
        _wait_for(lambda: os.path.exists(ready), 10, "the VMA receiver to restart", p,
                  os.path.join(self.log_dir, "vma.log"))

    def vma_log(self):
        """Every update the receiver logged (list of dicts, oldest first)."""
        out = []
        try:
            with open(self.vma_log_path) as f:
                for line in f:
                    line = line.strip()
                    if line:
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def vma_reset(self):
        return self._vma_call("/_lab/reset", {})

    # ------------------------------------------------------------ pyvmomi convenience
    def connect(self):
        """A pyvmomi ServiceInstance logged in to the lab's vCenter (caller disconnects)."""
        from pyVim.connect import SmartConnect
        vc = self.vcenter
        return SmartConnect(host=vc["hostname"], port=vc["port"], user=vc["username"], pwd=vc["password"],
                            disableSslCertValidation=True)

    # ------------------------------------------------------------ a user's snapshots
    def user_snapshot(self, vm, name, description="a user's snapshot"):
        """Take a snapshot of ``vm`` as a user would (CreateSnapshot_Task through pyvmomi); returns its moid."""
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        si = self.connect()
        try:
            obj = si.content.searchIndex.FindByInventoryPath(self.vm(vm)["path"])
            task = obj.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=False)
            WaitForTask(task, si=si)
            return task.info.result._moId
        finally:
            Disconnect(si)

    def snapshot_names(self, vm):
        """Names of every snapshot of ``vm`` in its tree, depth first (pyvmomi)."""
        from pyVim.connect import Disconnect
        si = self.connect()
        try:
            obj = si.content.searchIndex.FindByInventoryPath(self.vm(vm)["path"])
            names = []

            def walk(trees):
                for t in trees:
                    names.append(t.name)
                    walk(t.childSnapshotList)
            walk(obj.snapshot.rootSnapshotList if obj.snapshot else [])
            return names
        finally:
            Disconnect(si)

    # ------------------------------------------------------------ disks a snapshot cannot freeze
    def _reconfigure_device(self, vm, key, change):
        """Edit device ``key`` of ``vm`` with ReconfigVM (pyvmomi), as a user would; ``change(device)`` edits it."""
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        from pyVmomi import vim
        si = self.connect()
        try:
            obj = si.content.searchIndex.FindByInventoryPath(self.vm(vm)["path"])
            devices = [d for d in obj.config.hardware.device if d.key == int(key)]
            if not devices:
                raise LabError("VM %s has no device with key %s" % (vm, key))
            device = devices[0]
            change(device)
            spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=device)])
            WaitForTask(obj.ReconfigVM_Task(spec=spec), si=si)
        finally:
            Disconnect(si)

    def disk_config(self, vm, key, disk_mode=None, rdm=None, sharing=None):
        """Make a disk independent (``disk_mode``), an RDM (``rdm``: physicalMode / virtualMode) or multi-writer
        (``sharing``: sharingMultiWriter), as vSphere models it (VirtualDiskMode, VirtualDiskRawDiskMappingVer1BackingInfo,
        VirtualDiskSharing), through ReconfigVM."""
        from pyVmomi import vim

        def change(disk):
            old = disk.backing
            if rdm:
                disk.backing = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
                    fileName=old.fileName, datastore=old.datastore, compatibilityMode=rdm,
                    diskMode=disk_mode or old.diskMode or "persistent", deviceName="/vmfs/devices/disks/naa.6000c29%05d" % disk.key,
                    lunUuid="0200000000600c29%016d" % disk.key, sharing=sharing or getattr(old, "sharing", None))
            else:
                if disk_mode:
                    disk.backing.diskMode = disk_mode
                if sharing:
                    disk.backing.sharing = sharing
        self._reconfigure_device(vm, key, change)

    def bus_sharing(self, vm, controller_key=1000, shared_bus="physicalSharing"):
        """Set a SCSI controller's bus sharing (VirtualSCSIController.sharedBus), through ReconfigVM."""
        def change(controller):
            controller.sharedBus = shared_bus
        self._reconfigure_device(vm, controller_key, change)

    # ------------------------------------------------------------ down
    def _stop(self, name, timeout=5.0):
        pid = self._read_pid(name)
        if not pid:
            return
        proc = self._procs.pop(name, None)
        if pid_alive(pid) and self._owned(name, pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc is not None:
                    proc.poll()
                if not pid_alive(pid):
                    break
                time.sleep(0.02)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + timeout
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.remove(self._pidfile(name))
        except FileNotFoundError:
            pass

    def down(self):
        """Stop exactly the processes this lab started (by pidfile). Idempotent."""
        if os.path.isdir(self.run_dir):
            names = [fn[:-4] for fn in os.listdir(self.run_dir) if fn.endswith(".pid")]
            # nbdkit first, then the receiver, the simulator last
            names.sort(key=lambda n: (0 if n.startswith("nbdkit-") else 1 if n == "vma" else 2, n))
            for name in names:
                self._stop(name)
        # Children started by this process that never got a pidfile.
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._procs.pop(name, None)
        nbd = os.path.join(self.dir, "nbd")
        if os.path.isdir(nbd):
            for fn in os.listdir(nbd):
                if fn.endswith(".sock"):
                    try:
                        os.remove(os.path.join(nbd, fn))
                    except FileNotFoundError:
                        pass
        for fn in ("control.json",):
            try:
                os.remove(os.path.join(self.run_dir, fn))
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()
        return False
