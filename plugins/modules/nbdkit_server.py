#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: nbdkit_server
short_description: Serve a disk read-only over NBD on a private unix socket with nbdkit
version_added: 0.1.0
description:
  - Starts C(nbdkit) in the background on a unix socket, waits until the socket answers an NBD handshake and
    returns the NBD URI to copy from; or stops the server started on that socket and removes its socket,
    pidfile, log file and any password file.
  - C(transport=file) serves an image file (a datastore reachable as a directory, for example over NFS, and the lab).
  - C(transport=vddk) serves a VMware snapshot disk with nbdkit's vddk plugin (always read-only, C(-r)). The
    vCenter password is written to a 0600 file in the socket's private directory and passed as C(password=+FILE),
    never on the command line; nbdkit reads that file while parsing its parameters, before it listens, so the
    file is removed as soon as the socket answers (and on every failure).
  - The socket's directory must be private (mode 0700, owned by the user running the module); it is created
    that way when missing, and an existing directory others can enter (such as C(/tmp)) is refused.
  - A server already running on I(socket) with the same command line is left alone (changed=false); one with a
    different command line is restarted. Changing only the password is not detected.
author:
  - migratekit.migration contributors (@migratekit)
requirements:
  - nbdkit (with the file plugin, or the vddk plugin and VMware VDDK for I(transport=vddk))
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
      - C(file) serves I(path); C(vddk) serves a VMware disk through nbdkit's vddk plugin.
    type: str
    choices: [file, vddk]
    default: file
  path:
    description:
      - The image file to serve. Required with I(transport=file).
    type: path
  readonly:
    description:
      - Serve read-only (C(-r)). Only I(transport=file) may set it to false; vddk is always read-only.
    type: bool
    default: true
  vddk_libdir:
    description:
      - Directory of the VMware VDDK (C(libdir=)). nbdkit's compiled-in default when omitted.
    type: path
  server:
    description:
      - vCenter or ESXi host name for the vddk plugin (C(server=)).
    type: str
  port:
    description:
      - vCenter or ESXi port for the vddk plugin (C(port=)); the plugin's default (443) when omitted.
    type: int
  username:
    description:
      - vCenter user for the vddk plugin (C(user=)).
    type: str
  password:
    description:
      - vCenter password for the vddk plugin. Written to a 0600 temporary file passed as C(password=+FILE);
        never part of the command line or the result.
    type: str
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
  single_link:
    description:
      - Open the disk's single link only (C(single-link=true)), for snapshots.
    type: bool
    default: false
  filters:
    description:
      - nbdkit filters to stack in front of the plugin, in order, for example to inject errors, latency or a
        bandwidth limit in tests.
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
      - Number of nbdkit service threads (C(-t)); nbdkit's default when omitted.
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
notes:
  - The server runs in the background after the task; stop it with I(state=stopped) and the same I(socket),
    typically in an C(always) section.
seealso:
  - name: nbdkit-vddk-plugin(1)
    description: The vddk plugin's parameters.
    link: https://libguestfs.org/nbdkit-vddk-plugin.1.html
'''

EXAMPLES = r'''
- name: Serve a frozen disk image read-only
  migratekit.migration.nbdkit_server:
    socket: /run/migratekit/cycle-1/disk-2000.sock
    path: /mnt/datastore1/vm0/disk-2000.img
  register: source

- name: Serve a VMware snapshot disk through VDDK
  migratekit.migration.nbdkit_server:
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

- name: A flaky, slow source for a test
  migratekit.migration.nbdkit_server:
    socket: /run/migratekit/test/flaky.sock
    path: /var/tmp/disk.img
    filters:
      - name: error
        params: {error-rate: "1%", error: EIO}
      - name: delay
        params: {rdelay: 2ms}

- name: Stop it
  migratekit.migration.nbdkit_server:
    socket: /run/migratekit/cycle-1/disk-2000.sock
    state: stopped

- name: Stop every server in a directory
  migratekit.migration.nbdkit_server:
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
  description: nbdkit's log (its stderr), in the socket's directory; removed when the server stops.
  returned: with O(socket)
  type: str
argv:
  description: The server's command line (with I(transport=vddk) it holds C(password=+FILE), never the password).
  returned: when a server runs or would run
  type: list
  elements: str
size_bytes:
  description: The export's size as the server reports it.
  returned: when a server was started or found running, and libnbd is available
  type: int
  sample: 67108864
restarted:
  description: True when a running server with a different command line was replaced.
  returned: with I(state=started)
  type: bool
transport:
  description: The transport served.
  returned: with O(socket)
  type: str
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
    nbdkit_server_module,
)


def main():
    run_module('nbdkit_server', SERVER_SPEC, nbdkit_server_module, LIBRARIES)


if __name__ == '__main__':
    main()
