# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):

    # The vSphere connection options, shared by every module of the vmware action group.
    # The argument spec is plugins/module_utils/vsphere.py:vsphere_argument_spec().
    DOCUMENTATION = r'''
options:
  hostname:
    description:
      - The vCenter Server or ESXi host to connect to.
      - If not set, the value of the E(VMWARE_HOST) environment variable is used.
      - Required, from the option or the environment.
    type: str
  username:
    description:
      - The user name to log in with.
      - If not set, the value of the E(VMWARE_USER) environment variable is used.
      - Required, from the option or the environment.
    type: str
    aliases: [user, admin]
  password:
    description:
      - The password of O(username).
      - If not set, the value of the E(VMWARE_PASSWORD) environment variable is used.
      - Required, from the option or the environment. Never logged nor returned.
    type: str
    aliases: [pass, pwd]
  port:
    description:
      - The HTTPS port of the vSphere API.
      - If not set, the value of the E(VMWARE_PORT) environment variable is used.
    type: int
    default: 443
  validate_certs:
    description:
      - Whether to verify the TLS certificate of O(hostname), including for C(localhost).
      - Set to V(false) only for test labs or self-signed certificates you trust.
      - If not set, the value of the E(VMWARE_VALIDATE_CERTS) environment variable is used.
    type: bool
    default: true
  request_timeout:
    description:
      - Seconds to wait for an answer to each vSphere API request (the HTTP timeout of every call, the login
        included). A vCenter that does not answer in time fails the task with a message naming the call; it never
        hangs it.
    type: int
    default: 300
    version_added: 0.2.0
  connection_retries:
    description:
      - How many times a call that failed on a transient connection error is sent again, each time after a new
        login (waiting 1, 2, 4, ... seconds). Retried are a refused connection or an expired session (C(NotAuthenticated)) for
        any call, a connection broken in the middle of a call only for calls that read (a call that changes the VM
        may have run). A timeout is not retried. V(0) retries nothing.
    type: int
    default: 3
    version_added: 0.2.0
  proxy_host:
    description:
      - Host name or address of an HTTP proxy to reach O(hostname) through (an HTTPS tunnel, C(CONNECT)).
      - If not set, the value of the E(VMWARE_PROXY_HOST) environment variable is used; without either, no proxy.
    type: str
    version_added: 0.2.0
  proxy_port:
    description:
      - Port of O(proxy_host).
      - If not set, the value of the E(VMWARE_PROXY_PORT) environment variable is used, and V(80) without it.
    type: int
    version_added: 0.2.0
notes:
  - All options of this fragment can be set once for many tasks with
    C(module_defaults) and the action group C(group/migratekit.migration.vmware).
  - The options and their aliases are those of C(community.vmware) (O(username) alias O(user) or O(admin),
    O(password) alias O(pass) or O(pwd), the same E(VMWARE_*) environment variables).
requirements:
  - pyVmomi
'''

    # The options that select one VM (migratekit.migration.vsphere.vm), for the
    # modules that work on one VM. The argument spec is
    # plugins/module_utils/vsphere.py:vm_argument_spec() with VM_SELECTOR_OPTIONS
    # mutually exclusive and one of them required.
    VM = r'''
options:
  name:
    description:
      - Name of the VM. Fails, listing the matches, when several VMs have this name (narrow with O(datacenter) or
        use O(path), O(uuid) or O(moid)).
      - Exactly one of O(name), O(path), O(uuid) or O(moid) is required.
    type: str
  path:
    description:
      - Inventory path of the VM, such as C(/DC0/vm/VM0) or C(/DC0/vm/folder/VM0).
    type: str
  folder:
    description:
      - Inventory path of the folder that holds the VM named O(name), such as C(/DC0/vm/prod) (the name
        C(community.vmware) modules give it); the VM is then C(<folder>/<name>), as with O(path).
      - Requires O(name).
    type: str
    version_added: 0.2.0
  uuid:
    description:
      - BIOS uuid or instance uuid of the VM.
    type: str
  moid:
    description:
      - Managed object id of the VM, such as C(vm-42).
    type: str
  datacenter:
    description:
      - Datacenter name (or inventory path) in which O(name) or O(uuid) is looked up.
    type: str
'''
