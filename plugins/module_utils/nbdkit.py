# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""NBD servers for the copy: the ``nbd_disk_server`` module's options and entry point.

The file transport serves the snapshot's frozen VMDK chain with qemu-nbd
(``format: vmdk``) or a raw image with nbdkit's file plugin (``format: raw``);
the vddk transport serves through nbdkit's vddk plugin.

The parts live in ``_nbd_server`` (``config``: validation and argv;
``process``: files, pidfiles and probes; ``server``: start and stop); this
module keeps the names other code imports.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible_collections.migratekit.migration.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.config import (
    COMPRESSIONS,
    FORMATS,
    PASSWORD_MARK,
    TRANSPORTS,
    NbdkitConfigError,
    NbdkitError,
    NbdkitStartError,
    NbdkitStopError,
    build_argv,
    build_qemu_nbd_argv,
    comparable_argv,
    default_logfile,
    default_pidfile,
    normalize_filters,
    normalize_moref,
    server_program,
    socket_uri,
    validate,
)
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.process import (
    ensure_private_dir,
    is_our_server,
    password_files,
    probe,
    process_alive,
    process_cmdline,
    read_log,
    read_pidfile,
    remove_file,
    sockets_in,
    write_password_file,
)
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.server import NbdkitServer, stop_all
from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.vmdk import check_chain

# The names other code uses from here, the parts in _nbd_server included.
__all__ = [
    'COMPRESSIONS', 'FORMATS', 'LIBRARIES', 'PASSWORD_MARK', 'SERVER_SPEC', 'TRANSPORTS', 'NbdkitConfigError',
    'NbdkitError', 'NbdkitServer', 'NbdkitStartError', 'NbdkitStopError', 'build_argv', 'build_qemu_nbd_argv',
    'check_chain', 'comparable_argv', 'default_logfile', 'default_pidfile', 'ensure_private_dir', 'is_our_server',
    'nbd_disk_server_module', 'normalize_filters', 'server_program',
    'normalize_moref', 'password_files', 'probe', 'process_alive', 'process_cmdline', 'read_log', 'read_pidfile',
    'remove_file', 'socket_uri', 'sockets_in', 'stop_all', 'validate', 'write_password_file',
]

# Nothing beyond Ansible (libnbd is used for probes when present).
LIBRARIES = ()

# The options of the nbd_disk_server module.
# Declared only so that the vmware action group's module_defaults apply: VDDK checks the vCenter
# certificate against the thumbprint whatever validate_certs says, and makes its own connections
# (no pyVmomi request to time out or retry).
MODULE_DEFAULTS_ONLY = ('validate_certs', 'request_timeout', 'connection_retries')

SERVER_SPEC = ArgumentSpec(dict(
    state=dict(type='str', choices=['started', 'stopped'], default='started'),
    socket=dict(type='path'),
    socket_dir=dict(type='path'),
    pidfile=dict(type='path'),
    transport=dict(type='str', choices=list(TRANSPORTS), default='file'),
    path=dict(type='path'),
    format=dict(type='str', choices=list(FORMATS), default='vmdk'),
    datastore_dir=dict(type='path'),
    disk=dict(type='str'),
    readonly=dict(type='bool', default=True),
    connections=dict(type='int', default=4),
    read_bps_limit=dict(type='int'),
    aio=dict(type='str', choices=['auto', 'io_uring', 'threads'], default='threads'),
    qemu_nbd_path=dict(type='path', default='qemu-nbd'),
    vddk_libdir=dict(type='path'),
    # vCenter options: community.vmware's names as aliases, so that the vmware action group's
    # module_defaults (hostname, username, password, port, validate_certs, proxy_*) apply.
    server=dict(type='str', aliases=['hostname']),
    port=dict(type='int'),
    username=dict(type='str', aliases=['user', 'admin']),
    password=dict(type='str', no_log=True, aliases=['pass', 'pwd']),
    validate_certs=dict(type='bool', default=True),
    request_timeout=dict(type='int'),
    connection_retries=dict(type='int'),
    proxy_host=dict(type='str'),
    proxy_port=dict(type='int'),
    thumbprint=dict(type='str'),
    vm_moref=dict(type='str'),
    snapshot_moref=dict(type='str'),
    backing_file=dict(type='str'),
    transports=dict(type='str', default='nbdssl:nbd'),
    compression=dict(type='str', choices=list(COMPRESSIONS)),
    config=dict(type='path'),
    filters=dict(type='list', elements='dict', default=[], options=dict(
        name=dict(type='str', required=True),
        params=dict(type='dict', default={}),
    )),
    threads=dict(type='int'),
    nbdkit_path=dict(type='path', default='nbdkit'),
    timeout=dict(type='float', default=60.0),
), required_if=[
    ('transport', 'vddk', ('server', 'username', 'password', 'thumbprint', 'vm_moref', 'backing_file')),
], required_one_of=[('socket', 'socket_dir')], mutually_exclusive=[('socket', 'socket_dir')])


def nbd_disk_server_module(options, check_mode=False):
    """The whole nbd_disk_server module: start or stop one server, or stop every server in ``socket_dir``.

    Returns the result (with ``changed`` and a ``diff`` the module drops
    outside diff mode); raises NbdkitError naming the server(s) it concerned.
    """
    try:
        return _server_module(options, check_mode)
    except NbdkitError as exc:
        if options.socket_dir:
            raise exc.located(subject='the servers in %s' % options.socket_dir)
        raise exc.located(subject='the server on %s' % (exc.obj or options.socket))


def _server_module(options, check_mode):
    state = options.state
    if options.socket_dir:
        if state != 'stopped':
            raise NbdkitConfigError('socket_dir is only for state=stopped; give socket to start a server',
                                    obj=options.socket_dir)
        changed, stopped = stop_all(options.socket_dir, timeout=options.timeout, check_mode=check_mode)
        return dict(changed=changed, state=state, stopped=stopped)
    server = NbdkitServer(validate(options), timeout=options.timeout)
    before_pid, before_argv = server.running()
    if state == 'started':
        changed, result = server.ensure_started(check_mode=check_mode)
    else:
        changed, result = server.ensure_stopped(check_mode=check_mode)
    result.update(changed=changed, state=state)
    result['diff'] = {
        'before': {'state': 'started' if before_pid else 'stopped',
                   'argv': comparable_argv(before_argv) if before_argv else None},
        'after': {'state': state,
                  'argv': comparable_argv(result['argv']) if state == 'started' and result['argv'] else None},
    }
    return result
