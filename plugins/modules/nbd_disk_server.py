#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: nbd_disk_server
short_description: Serve a VM disk over NBD on a private unix socket (a VMDK chain with qemu-nbd, VDDK with nbdkit)
version_added: 0.2.0
description:
  - Starts an NBD server in the background on a unix socket, waits until the socket answers an NBD handshake and
    returns the NBD URI to copy from; or stops the server started on that socket and removes its socket,
    pidfile, log file and any password file. Formerly C(nbdkit_server), which redirects here.
  - C(transport=file) with C(format=vmdk) (the default) serves the snapshot's frozen VMDK chain from a datastore
    mounted as a directory (for example NFS, read-only) with C(qemu-nbd --read-only --format=vmdk --persistent
    --shared=N). I(path) is the snapshot disk's backing descriptor; qemu reads its extents and every parent
    of the chain (flat, sparse, vmfsSparse and seSparse extents). qemu-nbd answers C(base:allocation) block status
    and allows O(connections) connections at once (multi-conn).
  - Before anything starts the chain is checked; a descriptor that is missing, has a bad header, names a missing
    extent or parent, a file outside O(datastore_dir), or a raw device mapping fails, naming the disk, the file
    and what was expected.
  - C(transport=file) with C(format=raw) serves a raw image with nbdkit's file plugin (tests, raw images).
  - C(transport=vddk) serves a VMware snapshot disk with nbdkit's vddk plugin (always read-only, C(-r)). The
    vCenter password is written to a 0600 file in the socket's private directory and passed as C(password=+FILE),
    never on the command line; nbdkit reads that file while parsing its parameters, before it listens, so the
    file is removed as soon as the socket answers (and on every failure).
  - The socket's directory must be private (mode 0700, owned by the user running the module); it is created
    that way when missing, and an existing directory others can enter (such as C(/tmp)) is refused.
  - A server already running on I(socket) (found through its pidfile, and its process serving that socket) that
    was started with the same command line is left alone (changed=false); one started with a different command
    line is restarted. What a server was started with is recorded next to its pidfile, in C(SOCKET.server.json);
    its live command line may differ, since nbdkit's vddk plugin re-executes nbdkit with C(password=-FD) and
    C(reexeced_=) when C(LD_LIBRARY_PATH) lacks its libdir. Changing only the password is not detected.
author:
  - migratekit.migration contributors (@migratekit)
requirements:
  - qemu-nbd (Debian C(qemu-utils)) for I(transport=file) with I(format=vmdk)
  - nbdkit (with the file plugin for I(format=raw), or the vddk plugin and VMware VDDK for I(transport=vddk))
  - libnbd Python bindings (C(python3-libnbd)) to check the server's handshake and size; without them only the
    server's greeting is checked
options:
  state:
    description:
      - C(started) starts the server (or keeps the one running), C(stopped) stops it and removes its files.
    type: str
    choices: [started, stopped]
    default: started
  socket:
    description:
      - Absolute path of the unix socket to serve on (at most 107 bytes). Its directory must be private (0700).
      - Exactly one of O(socket) and O(socket_dir) is required.
    type: path
  socket_dir:
    description:
      - With O(state=stopped) only, instead of O(socket), stop every server of this module whose socket or
        pidfile is in this directory (for example the leftovers of an interrupted run) and remove their files.
        A missing directory is fine.
    type: path
  pidfile:
    description:
      - Where nbdkit writes its process id. Defaults to I(socket) with C(.pid) appended.
    type: path
  transport:
    description:
      - C(file) serves I(path) from a mounted datastore (or a raw image); C(vddk) serves a VMware disk through
        nbdkit's vddk plugin.
    type: str
    choices: [file, vddk]
    default: file
  path:
    description:
      - Required with I(transport=file). With I(format=vmdk), the snapshot disk's backing descriptor on the
        datastore mount (such as C(/mnt/datastore1/vm0/vm0.vmdk)); with I(format=raw), a raw image.
    type: path
  format:
    description:
      - With I(transport=file), what I(path) is. C(vmdk) is served read-only by qemu-nbd, the whole chain of
        parents included; C(raw) by nbdkit's file plugin.
    type: str
    choices: [vmdk, raw]
    default: vmdk
  datastore_dir:
    description:
      - The directory where the datastore is mounted. With I(format=vmdk), every descriptor, extent and parent of
        the chain must be inside it (symbolic links resolved), or the module fails before starting anything.
    type: path
  disk:
    description:
      - What the disk is, for messages, such as C(VM0 Hard disk 1 (key 2000)); a refusal names it with the file.
    type: str
  readonly:
    description:
      - Serve read-only. Only I(format=raw) may set it to false; VMDK chains and vddk are always read-only.
    type: bool
    default: true
  connections:
    description:
      - With I(format=vmdk), how many clients qemu-nbd serves at once (C(--shared)); the copy opens one connection
        per worker.
    type: int
    default: 4
  read_bps_limit:
    description:
      - With I(format=vmdk), a read limit in bytes per second (a qemu throttle group), to spare a busy datastore.
    type: int
  aio:
    description:
      - With I(format=vmdk), how qemu-nbd does its I/O (C(--aio)). C(threads), qemu's thread pool, works
        everywhere. C(io_uring) reads sparse delta links markedly faster, but on some kernels and sandboxes
        qemu-nbd hangs at start-up with it even where the kernel accepts an io_uring; choose it after trying it
        on the appliance. C(auto) takes C(io_uring) when this kernel allows it (not disabled by sysctl or a
        container's seccomp profile) and C(threads) otherwise.
    type: str
    choices: [auto, io_uring, threads]
    default: threads
  qemu_nbd_path:
    description:
      - The qemu-nbd program to run.
    type: path
    default: qemu-nbd
  vddk_libdir:
    description:
      - Directory of the VMware VDDK (C(libdir=)). nbdkit's compiled-in default when omitted.
    type: path
  server:
    description:
      - vCenter or ESXi host name for the vddk plugin (C(server=)).
      - The alias O(hostname) is the name the other modules of the C(vmware) action group give it,
        so C(module_defaults) for C(group/migratekit.migration.vmware) reach this module too.
    type: str
    aliases: [hostname]
  port:
    description:
      - vCenter or ESXi port for the vddk plugin (C(port=)); the plugin's default (443) when omitted.
    type: int
  username:
    description:
      - vCenter user for the vddk plugin (C(user=)).
    type: str
    aliases: [user, admin]
  password:
    description:
      - vCenter password for the vddk plugin. Written to a 0600 temporary file passed as C(password=+FILE);
        never part of the command line or the result.
    type: str
    aliases: [pass, pwd]
  validate_certs:
    description:
      - Accepted so that the C(vmware) action group's C(module_defaults) apply; not used. VDDK checks the vCenter
        certificate against O(thumbprint), whatever this says.
    type: bool
    default: true
  request_timeout:
    description:
      - Accepted so that the C(vmware) action group's C(module_defaults) apply; not used. VDDK makes its own
        connections to vCenter and the hosts; no pyVmomi request is sent here.
    type: int
  connection_retries:
    description:
      - Accepted so that the C(vmware) action group's C(module_defaults) apply; not used (see O(request_timeout)).
    type: int
  proxy_host:
    description:
      - Accepted so that the C(vmware) action group's C(module_defaults) apply; not used. VDDK has no HTTP proxy
        setting and connects to vCenter and the ESXi hosts directly.
    type: str
  proxy_port:
    description:
      - Accepted with O(proxy_host); not used.
    type: int
  thumbprint:
    description:
      - SHA-1 fingerprint of the vCenter certificate, hex pairs separated by colons (C(thumbprint=)).
    type: str
  vm_moref:
    description:
      - Managed object reference of the VM, such as C(vm-42) (passed as C(vm=moref=vm-42)).
    type: str
  snapshot_moref:
    description:
      - Managed object reference of the snapshot to read, such as C(snapshot-7) (C(snapshot=)).
    type: str
  backing_file:
    description:
      - The disk's backing file as a datastore path, such as C([datastore1] vm/vm.vmdk) (C(file=)).
    type: str
  transports:
    description:
      - VDDK transport modes to try, in order, separated by colons (C(transports=)).
    type: str
    default: nbdssl:nbd
  compression:
    description:
      - NBD transport compression for the vddk plugin (C(compression=)).
    type: str
    choices: [none, zlib, fastlz, skipz]
  config:
    description:
      - A VDDK configuration file (C(config=)).
    type: path
  filters:
    description:
      - nbdkit filters to stack in front of the plugin, in order, for example to inject errors, latency or a
        bandwidth limit in tests. Not with I(format=vmdk) (qemu-nbd).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - The filter name, such as C(error), C(delay) or C(rate).
        type: str
        required: true
      params:
        description:
          - The filter's parameters, as a dict of names and values.
        type: dict
        default: {}
  threads:
    description:
      - Number of nbdkit service threads (C(-t)); nbdkit's default when omitted. Not with I(format=vmdk).
    type: int
  nbdkit_path:
    description:
      - The nbdkit program to run.
    type: path
    default: nbdkit
  timeout:
    description:
      - Seconds to wait for the server to answer after starting, and for it to exit when stopping.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    description: Reports whether the server would be started, restarted or stopped, and starts or stops nothing.
  diff_mode:
    support: full
    description: Shows the server's state and command line before and after.
  idempotent:
    support: full
    description: A running server with the same command line is kept; stopping a stopped server changes nothing.
  action_group:
    support: full
    description: Use C(group/migratekit.migration.vmware) in C(module_defaults) to set the vCenter options.
    membership:
      - migratekit.migration.vmware
notes:
  - The server runs in the background after the task; stop it with I(state=stopped) and the same I(socket),
    typically in an C(always) section.
  - qemu takes a shared read lock on the chain's files while it serves them; stop the server before the snapshot
    is removed.
seealso:
  - name: qemu-nbd(8)
    description: The options of qemu-nbd.
    link: https://www.qemu.org/docs/master/tools/qemu-nbd.html
  - name: nbdkit-vddk-plugin(1)
    description: The vddk plugin's parameters.
    link: https://libguestfs.org/nbdkit-vddk-plugin.1.html
'''

EXAMPLES = r'''
- name: Serve a snapshot's frozen VMDK chain from an NFS datastore mounted read-only
  migratekit.migration.nbd_disk_server:
    socket: /run/migratekit/cycle-1/disk-2000.sock
    path: /mnt/datastore1/vm0/vm0.vmdk
    datastore_dir: /mnt/datastore1
  register: source

- name: Serve a VMware snapshot disk through VDDK
  migratekit.migration.nbd_disk_server:
    socket: /run/migratekit/cycle-1/disk-2000.sock
    transport: vddk
    vddk_libdir: /opt/vmware-vix-disklib-distrib
    server: vcenter.example.com
    username: migration@vsphere.local
    password: "{{ vcenter_password }}"
    thumbprint: "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01"
    vm_moref: vm-42
    snapshot_moref: snapshot-7
    backing_file: "[datastore1] vm0/vm0.vmdk"

- name: A flaky, slow raw source for a test
  migratekit.migration.nbd_disk_server:
    socket: /run/migratekit/test/flaky.sock
    path: /var/tmp/disk.img
    format: raw
    filters:
      - name: error
        params: {error-rate: "1%", error: EIO}
      - name: delay
        params: {rdelay: 2ms}

- name: Stop it
  migratekit.migration.nbd_disk_server:
    socket: /run/migratekit/cycle-1/disk-2000.sock
    state: stopped

- name: Stop every server in a directory
  migratekit.migration.nbd_disk_server:
    socket_dir: /run/migratekit/cycle-1
    state: stopped
'''

RETURN = r'''
socket:
  description: The unix socket.
  returned: with O(socket)
  type: str
  sample: /run/migratekit/cycle-1/disk-2000.sock
uri:
  description: The NBD URI of the export, for libnbd (C(nbd+unix:///?socket=...)).
  returned: with O(socket)
  type: str
  sample: nbd+unix:///?socket=/run/migratekit/cycle-1/disk-2000.sock
pid:
  description: Process id of the server (of the stopped one with I(state=stopped)); null when none ran.
  returned: with O(socket)
  type: int
  sample: 12345
pidfile:
  description: The pidfile.
  returned: with O(socket)
  type: str
log_file:
  description: The server's log (its stderr), in the socket's directory; removed when the server stops.
  returned: with O(socket)
  type: str
argv:
  description:
    - The server's command line (with I(transport=vddk) it holds C(password=+FILE), never the password).
    - For a server found running, its live command line (after a vddk re-exec, C(password=-FD) and C(reexeced_=)).
  returned: when a server runs or would run
  type: list
  elements: str
size_bytes:
  description: The export's size as the server reports it.
  returned: when a server was started or found running, and libnbd is available
  type: int
  sample: 67108864
restarted:
  description: True when a running server started with a different command line was replaced.
  returned: with I(state=started)
  type: bool
transport:
  description: The transport served.
  returned: with O(socket)
  type: str
server:
  description: The server program, C(qemu-nbd) or C(nbdkit).
  returned: with O(socket) and I(state=started)
  type: str
  sample: qemu-nbd
chain:
  description: With I(format=vmdk), the files of the chain checked before serving, the top descriptor first.
  returned: with I(format=vmdk) and I(state=started)
  type: list
  elements: str
stopped:
  description: With O(socket_dir), the servers that were (or would be) stopped, each with RV(socket), RV(pid) and
    RV(pidfile).
  returned: with O(socket_dir)
  type: list
  elements: dict
'''

from ansible_collections.migratekit.migration.plugins.module_utils._runner import run_module
from ansible_collections.migratekit.migration.plugins.module_utils.nbdkit import (
    LIBRARIES,
    SERVER_SPEC,
    nbd_disk_server_module,
)


def main():
    run_module('nbd_disk_server', SERVER_SPEC, nbd_disk_server_module, LIBRARIES)


if __name__ == '__main__':
    main()
