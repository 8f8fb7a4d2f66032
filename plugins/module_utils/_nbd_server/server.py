# -*- coding: utf-8 -*-
# Copyright (c) 2026, migratekit.migration contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start and stop NBD servers (qemu-nbd, nbdkit) on private unix sockets.

A server serves one disk: the snapshot's frozen VMDK chain on a datastore
mounted as a directory (qemu-nbd, read-only), a raw image (nbdkit's file
plugin) or a VMware snapshot disk through nbdkit's vddk plugin. Either kind
is identified by its socket and pidfile (both write one: ``-P``,
``--pid-file``), never by its argv alone: what it serves is recorded next to
its pidfile when it starts (``SOCKET.server.json``, see
:func:`.config.server_record`), since nbdkit's vddk plugin re-executes
nbdkit with another command line. The command
line is built by the pure function :func:`build_argv`; the password of the
vddk plugin never appears in it: it goes into a 0600 file in the socket's
private directory and nbdkit gets ``password=+FILE``.

nbdkit reads ``password=+FILE`` while it parses its parameters (the plugin's
``config`` callback calls ``nbdkit_read_password``, which opens and reads the
file at once; a missing file makes nbdkit exit 1 before it serves anything).
Parameters are parsed before nbdkit binds its socket, forks into the
background and writes its pidfile, so once the socket answers, the file has
been read and is removed. It is also removed on every failure path and, should
one be left over from a killed run, when the server is stopped.
"""


from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import signal
import stat
import subprocess
import time

from ansible_collections.migratekit.migration.plugins.module_utils._nbd_server.config import (
    NbdkitConfigError,
    NbdkitError,
    NbdkitStartError,
    NbdkitStopError,
    build_argv,
    comparable_argv,
    server_program,
    default_logfile,
    default_pidfile,
    default_recordfile,
    reexec_comparable,
    server_record,
    socket_uri,
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
    read_record,
    remove_file,
    sockets_in,
    write_password_file,
    write_record,
)


def stop_all(directory, timeout=60.0, check_mode=False):
    """Stop every server whose socket or pidfile is in ``directory``; return ``(changed, [results])``."""
    changed = False
    results = []
    for sock in sockets_in(directory):
        server = NbdkitServer({'socket': sock, 'pidfile': default_pidfile(sock), 'transport': None},
                              timeout=timeout)
        one_changed, result = server.ensure_stopped(check_mode=check_mode)
        changed = changed or one_changed
        if one_changed:
            results.append(result)
    return changed, results


class NbdkitServer(object):
    """One NBD server (qemu-nbd or nbdkit), identified by its socket (and pidfile)."""

    def __init__(self, config, timeout=60.0, sleep=time.sleep, clock=time.monotonic):
        self.config = config
        self.socket = config['socket']
        self.pidfile = config['pidfile']
        self.logfile = default_logfile(self.socket)
        self.recordfile = default_recordfile(self.socket)
        self.directory = os.path.dirname(self.socket)
        self.timeout = timeout
        self.program = server_program(config)
        self._sleep = sleep
        self._clock = clock

    # ---------------------------------------------------------- inspection

    def running(self):
        """``(pid, cmdline)`` of our live server on this socket, or ``(None, None)``."""
        pid = read_pidfile(self.pidfile)
        if pid is None:
            return None, None
        cmdline = process_cmdline(pid)
        if cmdline is None or not is_our_server(cmdline, self.socket):
            return None, None
        return pid, cmdline

    def serves_config(self, pid, cmdline):
        """True when our live server ``pid`` serves what ``self.config`` asks for.

        Decided by the record written when it started (same pid, same
        command line as built), not by its live argv (see
        :func:`.config.server_record`). A server started without a record
        (by an older version) is compared by argv, leaving out what the vddk
        plugin's re-exec changes.
        """
        desired = server_record(self.config)
        record = read_record(self.recordfile)
        if record is not None:
            return record.get('pid') == pid and record.get('argv') == desired['argv']
        return reexec_comparable(comparable_argv(cmdline)) == reexec_comparable(desired['argv'])

    def result(self, pid=None, argv=None, size=None):
        return {
            'socket': self.socket,
            'uri': socket_uri(self.socket),
            'pidfile': self.pidfile,
            'log_file': self.logfile,
            'pid': pid,
            'argv': argv,
            'size_bytes': size,
            'transport': self.config.get('transport'),
            'server': self.program if self.config.get('transport') else None,
            'chain': self.config.get('chain'),
        }

    # -------------------------------------------------------------- start

    def ensure_started(self, check_mode=False):
        """Start the server unless the same one already runs; return ``(changed, result)``."""
        ensure_private_dir(self.directory, create=not check_mode)
        pid, cmdline = self.running()
        restarted = False
        if pid is not None:
            if self.serves_config(pid, cmdline):
                try:
                    size = probe(self.socket)
                except Exception:  # a live process whose socket is gone: restart it
                    size = False
                if size is not False:
                    result = self.result(pid, cmdline, size)
                    result['restarted'] = False
                    return False, result
            if check_mode:
                result = self.result(pid, cmdline)
                result['restarted'] = True
                return True, result
            self._stop_pid(pid)
            restarted = True
        elif os.path.exists(self.socket):
            st = os.lstat(self.socket)
            if not stat.S_ISSOCK(st.st_mode):
                raise NbdkitConfigError('socket %s exists and is not a socket' % self.socket, obj=self.socket)
            try:
                probe(self.socket)
                answering = True
            except Exception:
                answering = False
            if answering:
                raise NbdkitStartError('socket %s is served by a process this module did not start (no live server '
                                       'of ours in pidfile %s): stop it or choose another socket'
                                       % (self.socket, self.pidfile), self.socket)
        if check_mode:
            result = self.result(None, comparable_argv(build_argv(self.config, password_file='*')))
            result['restarted'] = restarted
            return True, result
        self._cleanup_files()
        pid, argv, size = self._start()
        result = self.result(pid, argv, size)
        result['restarted'] = restarted
        return True, result

    def _start(self):
        password_file = None
        try:
            if self.config['transport'] == 'vddk':
                password_file = write_password_file(self.directory, self.socket, self.config['password'])
            argv = build_argv(self.config, password_file)
            log_fd = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with open(os.devnull, 'rb') as devnull_in, open(os.devnull, 'wb') as devnull_out:
                    try:
                        proc = subprocess.Popen(argv, stdin=devnull_in, stdout=devnull_out, stderr=log_fd,
                                                close_fds=True, cwd='/')
                    except OSError as exc:
                        raise NbdkitStartError('cannot run %s: %s' % (argv[0], exc), self.socket)
            finally:
                os.close(log_fd)
            size = self._wait_ready(proc)
            pid = read_pidfile(self.pidfile)
            record = server_record(self.config)
            record['pid'] = pid
            write_record(self.recordfile, record)
            return pid, argv, size
        except Exception:
            self._kill_leftover()
            raise
        finally:
            # Safe as soon as nbdkit answered (see the module docstring), and on every failure.
            if password_file:
                remove_file(password_file)

    def _wait_ready(self, proc):
        deadline = self._clock() + self.timeout
        last_error = None
        parent_rc = None
        while True:
            if parent_rc is None:
                parent_rc = proc.poll()
                if parent_rc is not None and parent_rc != 0:
                    raise NbdkitStartError('%s exited with status %d: %s'
                                           % (self.program, parent_rc, read_log(self.logfile) or 'no message'), self.socket)
            if parent_rc == 0:
                pid = read_pidfile(self.pidfile)
                if pid is not None:
                    if not process_alive(pid):
                        raise NbdkitStartError('%s (pid %d) exited right after starting: %s'
                                               % (self.program, pid, read_log(self.logfile) or 'no message'), self.socket)
                    try:
                        return probe(self.socket)
                    except Exception as exc:  # not answering yet
                        last_error = exc
            if self._clock() > deadline:
                if parent_rc is None:
                    proc.kill()
                    proc.wait()
                raise NbdkitStartError('%s did not answer on %s within %ss (%s): %s'
                                       % (self.program, self.socket, self.timeout, last_error or 'no pidfile',
                                          read_log(self.logfile) or 'no message'), self.socket)
            self._sleep(0.05)

    def _kill_leftover(self):
        pid = read_pidfile(self.pidfile)
        if pid is not None and is_our_server(process_cmdline(pid), self.socket):
            try:
                self._stop_pid(pid)
            except NbdkitError:
                pass
        self._cleanup_files(keep_log=True)

    # --------------------------------------------------------------- stop

    def ensure_stopped(self, check_mode=False):
        """Stop the server and remove its files; return ``(changed, result)``."""
        pid, cmdline = self.running()
        leftovers = [path for path in [self.socket, self.pidfile, self.recordfile] + password_files(self.socket)
                     if os.path.lexists(path)]
        changed = pid is not None or bool(leftovers)
        if check_mode:
            return changed, self.result(pid, cmdline)
        if pid is not None:
            self._stop_pid(pid)
        self._cleanup_files()
        return changed, self.result(pid, cmdline)

    def _stop_pid(self, pid):
        for sig, wait in ((signal.SIGTERM, self.timeout), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    return
                raise NbdkitStopError('cannot signal server pid %d: %s' % (pid, exc), self.socket)
            deadline = self._clock() + wait
            while self._clock() < deadline:
                if not process_alive(pid):
                    return
                self._sleep(0.05)
        if process_alive(pid):
            raise NbdkitStopError('server pid %d did not exit after SIGKILL' % pid, self.socket)

    def _cleanup_files(self, keep_log=False):
        paths = [self.socket, self.pidfile, self.recordfile] + password_files(self.socket)
        if not keep_log:
            paths.append(self.logfile)
        for path in paths:
            try:
                remove_file(path)
            except OSError as exc:
                raise NbdkitError('cannot remove %s: %s' % (path, exc), 'clean up', self.socket)
