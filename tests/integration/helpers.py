# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the integration tests (and benchmarks/copy_bench.py).

Import them as ``ansible_collections.migratekit.migration.tests.integration.helpers``
(tests/conftest.py makes the checkout importable under that name; pytest's
importlib mode gives conftest.py no importable name). Fixtures built on them
are in tests/integration/conftest.py.

- Ansible as users run it: :func:`run_module` (ad hoc ``ansible localhost -m``),
  :func:`run_playbook`, :func:`ansible_env`.
- Processes: :func:`live_processes`, :func:`processes_mentioning`.
- nbdkit servers owned by the test process: :class:`NbdkitProcess`.
- Disk images: :func:`write_image`, :func:`patterned_chunks`, :func:`garbage`,
  :func:`compare`, :func:`digest`.
- The lab's VMA receiver: :func:`received`; what the appliance's poller makes of a job: :func:`oma_poll`.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(REPO_ROOT, '.venv', 'bin')
PYTHON = os.path.join(VENV_BIN, 'python')
if not os.path.exists(PYTHON):
    PYTHON = sys.executable
ANSIBLE = os.path.join(os.path.dirname(PYTHON), 'ansible')
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(PYTHON), 'ansible-playbook')
ANSIBLE_DOC = os.path.join(os.path.dirname(PYTHON), 'ansible-doc')
JOB_ID_ENV = 'MIGRATEKIT_PROGRESS_JOB_ID'
MiB = 1 << 20


# ---------------------------------------------------------------- Ansible

def ansible_env(extra=None):
    """The environment for ansible commands: plain output, no retry files, no job id from the caller.

    The collection path and the interpreter come from tests/conftest.py
    (``ANSIBLE_COLLECTIONS_PATH``, ``ANSIBLE_PYTHON_INTERPRETER``); ``extra``
    is added last.
    """
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_DEPRECATION_WARNINGS='0',
               ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_HOST_KEY_CHECKING='0', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0', PATH=VENV_BIN + os.pathsep + os.environ.get('PATH', ''))
    env.pop(JOB_ID_ENV, None)
    env.update(extra or {})
    return env


class ModuleRun(object):
    """What an ad hoc module run printed: ``failed``, ``result`` (the module's JSON), ``stdout``, ``stderr``."""

    def __init__(self, failed, result, stdout, stderr):
        self.failed, self.result, self.stdout, self.stderr = failed, result, stdout, stderr

    @property
    def output(self):
        return self.stdout + self.stderr

    @property
    def warnings(self):
        """stderr (where the warnings are) on one line."""
        return ' '.join(self.stderr.split())


def run_module(module, args, check=False, diff=False, env=None, timeout=120):
    """Run ``migratekit.migration.<module>`` with ``ansible localhost -m``; return a :class:`ModuleRun`."""
    cmd = [ANSIBLE, 'localhost', '-e', 'ansible_python_interpreter=' + PYTHON,
           '-m', 'migratekit.migration.' + module, '-a', json.dumps(args)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    run_env = ansible_env(dict({'ANSIBLE_STDOUT_CALLBACK': 'minimal'}, **(env or {})))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, timeout=timeout,
                          universal_newlines=True, check=False)
    # "localhost | CHANGED => {json}" (or SUCCESS, FAILED!)
    head, _sep, body = proc.stdout.partition(' => ')
    if not body:
        raise AssertionError('ansible printed no result: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:]))
    return ModuleRun('FAILED' in head, json.loads(body), proc.stdout, proc.stderr)


def run_playbook(args, env=None, timeout=300):
    """Run ``ansible-playbook *args``; return the CompletedProcess (stdout and stderr together, as text)."""
    return subprocess.run([ANSIBLE_PLAYBOOK] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=ansible_env(env), timeout=timeout, universal_newlines=True, check=False)


# ---------------------------------------------------------------- processes

def live_processes():
    """Yield ``(pid, process group, argv)`` of every live (not zombie) process; argv items are bytes."""
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as handle:
                fields = handle.read().rsplit(')', 1)[1].split()
            with open('/proc/%s/cmdline' % name, 'rb') as handle:
                cmdline = handle.read()
        except (IOError, OSError):
            continue
        if fields[0] in ('Z', 'X'):
            continue
        yield int(name), int(fields[2]), cmdline.split(b'\0')


def processes_mentioning(text, program=None):
    """Live processes with ``text`` in their command line (and ``program`` in argv[0], if given)."""
    return [pid for pid, _pgid, argv in live_processes()
            if text.encode() in b'\0'.join(argv) and (program is None or program.encode() in argv[0])]


# ---------------------------------------------------------------- nbdkit

class NbdkitProcess(object):
    """One nbdkit serving on a unix socket in ``directory``, a child of this process (--exit-with-parent).

    ``NbdkitProcess(directory, 'src', 'file', path, read_only=True, filters=['delay'], options=['--tls=require'])``;
    :meth:`stop` ends it.
    """

    def __init__(self, directory, name, plugin, *args, **kwargs):
        filters = kwargs.pop('filters', ())
        read_only = kwargs.pop('read_only', False)
        options = kwargs.pop('options', ())   # server options such as --tls=require, before the plugin
        timeout = kwargs.pop('timeout', 20)
        if kwargs:
            raise TypeError('unexpected arguments: %s' % ', '.join(sorted(kwargs)))
        self.socket = os.path.join(str(directory), name + '.sock')
        self.pidfile = os.path.join(str(directory), name + '.pid')
        for path in (self.socket, self.pidfile):
            if os.path.exists(path):
                os.unlink(path)
        argv = ['nbdkit', '--exit-with-parent', '-f', '-U', self.socket, '-P', self.pidfile]
        if read_only:
            argv.append('-r')
        argv.extend(options)
        for filter_name in filters:
            argv.append('--filter=' + filter_name)
        argv.append(plugin)
        argv.extend(args)
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.pidfile) and os.path.exists(self.socket)):
            if self.proc.poll() is not None:
                raise RuntimeError('nbdkit exited with %s: %s' % (self.proc.returncode, ' '.join(argv)))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('nbdkit did not start: %s' % ' '.join(argv))
            time.sleep(0.01)

    @property
    def uri(self):
        return 'nbd+unix:///?socket=' + self.socket

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- images

def write_image(path, size, chunks=(), fill=None):
    """A sparse raw image: ``chunks`` are ``(offset, bytes)`` written into it."""
    with open(path, 'wb') as handle:
        if fill is not None:
            block = fill(MiB)
            for offset in range(0, size, MiB):
                handle.write(block[:min(MiB, size - offset)])
        handle.truncate(size)
        for offset, data in chunks:
            handle.seek(offset)
            handle.write(data)
    return path


def patterned_chunks(size, seed, count=40):
    rng = random.Random(seed)
    chunks = []
    for _index in range(count):
        length = rng.choice((4096, 65536, 300000, 2 * MiB + 17))
        offset = rng.randrange(0, size - length)
        chunks.append((offset, bytes(rng.getrandbits(8) for _byte in range(256)) * (length // 256) +
                       b'\x5a' * (length % 256)))
    # allocated zeros in the middle of data: must become zero requests
    chunks.append((10 * MiB, b'\0' * (3 * MiB)))
    return chunks


def garbage(length):
    return bytes(random.Random(7).getrandbits(8) for _byte in range(4096)) * (length // 4096)


def compare(a, b):
    out = subprocess.run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', str(a), str(b)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert out.returncode == 0, out.stdout.decode()


def digest(path):
    with open(str(path), 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# ---------------------------------------------------------------- VMA receiver

def received(receiver, status_code=None):
    """The updates the lab's VMA receiver got so far (those answered ``status_code``, if given)."""
    with receiver.state.lock:
        updates = list(receiver.state.updates)
    return [u for u in updates if status_code is None or u['status_code'] == status_code]


# What the seed's OMA poller makes of one GET answer of the appliance
# (DRDAVIDBANNER/sendense 8b7d59b, source/current/oma/services/): the status it
# records from the phase (vma_progress_client.go MapVMAPhaseToStatus), then
# updateJobWithVMAData (vma_progress_poller.go:337-390) and the rule that stops
# polling (vma_progress_poller.go:278). Its comparisons are case-sensitive.
OMA_PHASE_STATUS = {'Initializing': 'initializing', 'Snapshot Creation': 'snapshotting',
                    'Copying Data': 'replicating', 'Cleanup': 'finalizing', 'Completed': 'completed',
                    'Error': 'failed'}


def oma_poll(answer):
    """The OMA's record of a job from ``answer`` (the VMA's GET body): status, percent, bytes, error, finished."""
    phase, status, errors = answer.get('phase'), answer.get('status'), answer.get('errors') or []
    record = {'status': OMA_PHASE_STATUS.get(phase, 'replicating'), 'progress_percent': answer.get('percentage'),
              'current_operation': answer.get('current_operation'),
              'bytes_transferred': answer.get('bytes_transferred'), 'total_bytes': answer.get('total_bytes'),
              'vma_sync_type': answer.get('sync_type'), 'error_message': None,
              'finished': phase == 'completed' or status in ('completed', 'failed')}
    if status == 'completed' or phase == 'completed':
        record.update(status='completed', progress_percent=100.0, current_operation='Completed')
    if errors or status == 'failed':
        record['error_message'] = json.dumps(errors, separators=(',', ':')) if errors else 'Job failed'
        if status == 'failed':
            record.update(status='failed', current_operation='Failed')
    return record
