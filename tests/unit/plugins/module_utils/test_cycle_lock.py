# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cycle lock with real processes: one holder at a time, released by its token or when its cycle dies."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import signal
import subprocess
import time

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import cycle_lock


def options(path, **over):
    values = dict(path=str(path), owner={'vm': 'VM0', 'cycle': 'incremental_sync', 'job_id': 'VM0'})
    values.update(over)
    return cycle_lock.LOCK_SPEC.options(**values)


@pytest.fixture
def cycle():
    """A stand-in for the process running a cycle (ansible-playbook): ``(pid, start time, argv)``."""
    proc = subprocess.Popen(['sleep', '60'])
    born = open('/proc/%d/stat' % proc.pid).read().rsplit(')', 1)[1].split()[19]
    yield proc, (proc.pid, born, ['ansible-playbook', 'playbooks/incremental_sync.yml'])
    proc.kill()
    proc.wait()


def wait_until(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_second_cycle_fails_naming_the_first_and_changes_nothing(tmp_path, cycle):
    path = tmp_path / 'state' / 'VM0.cycle.lock'
    first = cycle_lock.lock(options(path), watch=cycle[1])
    assert first['changed'] and first['token'] and cycle_lock.process_alive(first['holder_pid'])
    assert oct(os.stat(str(path)).st_mode & 0o777) == '0o600'
    before = path.read_text()
    with pytest.raises(cycle_lock.CycleLockError) as info:
        cycle_lock.lock(options(path, owner={'vm': 'VM0', 'cycle': 'cutover'}), watch=cycle[1])
    message = str(info.value)
    assert message.startswith('take the cycle lock of VM VM0 failed: another cycle holds %s: incremental_sync, '
                              'pid %d (ansible-playbook playbooks/incremental_sync.yml), job VM0, since '
                              % (path, cycle[0].pid)), message
    assert 'This cycle changed nothing' in message and info.value.details['holder']['token'] == first['token']
    assert path.read_text() == before
    cycle_lock.unlock(options(path, state='unlocked', token=first['token']))


def test_the_token_releases_the_lock_and_another_token_leaves_it_alone(tmp_path, cycle):
    path = tmp_path / 'VM0.cycle.lock'
    first = cycle_lock.lock(options(path), watch=cycle[1])
    again = cycle_lock.lock(options(path, token=first['token']), watch=cycle[1])
    assert again['changed'] is False and again['holder_pid'] == first['holder_pid']
    other = cycle_lock.unlock(options(path, state='unlocked', token='not-mine'))
    assert other['changed'] is False and 'held by another cycle' in other['warnings'][0]
    assert cycle_lock.process_alive(first['holder_pid'])
    released = cycle_lock.unlock(options(path, state='unlocked', token=first['token']))
    assert released['changed'] is True and not cycle_lock.process_alive(first['holder_pid'])
    assert cycle_lock.unlock(options(path, state='unlocked', token=first['token']))['changed'] is False
    second = cycle_lock.lock(options(path), watch=cycle[1])
    assert second['changed'] and second['token'] != first['token'] and second['previous'] == 'released'
    cycle_lock.unlock(options(path, state='unlocked', token=second['token']))
    assert first['previous'] == 'none' and again['previous'] == 'held'


def test_a_lock_whose_cycle_died_is_taken_over(tmp_path, cycle):
    path = tmp_path / 'VM0.cycle.lock'
    first = cycle_lock.lock(options(path), watch=cycle[1])
    cycle[0].send_signal(signal.SIGKILL)  # kill -9 of ansible-playbook
    cycle[0].wait()
    with subprocess.Popen(['sleep', '60']) as other:
        born = open('/proc/%d/stat' % other.pid).read().rsplit(')', 1)[1].split()[19]
        second = cycle_lock.lock(options(path), watch=(other.pid, born, ['ansible-playbook', 'again.yml']))
        assert second['changed'] and second['watch_argv'] == ['ansible-playbook', 'again.yml']
        assert second['previous'] == 'interrupted', 'its cycle never released it: leftovers to clean up'
        assert not cycle_lock.process_alive(first['holder_pid'])
        cycle_lock.unlock(options(path, state='unlocked', token=second['token']))
        other.kill()


def test_a_killed_holder_frees_the_lock(tmp_path, cycle):
    path = tmp_path / 'VM0.cycle.lock'
    first = cycle_lock.lock(options(path), watch=cycle[1])
    os.kill(first['holder_pid'], signal.SIGKILL)
    assert wait_until(lambda: not cycle_lock.process_alive(first['holder_pid']))
    second = cycle_lock.lock(options(path), watch=cycle[1])
    assert second['changed']
    cycle_lock.unlock(options(path, state='unlocked', token=second['token']))


def test_check_mode_tries_and_keeps_nothing(tmp_path, cycle):
    path = tmp_path / 'VM0.cycle.lock'
    planned = cycle_lock.lock(options(path), check_mode=True, watch=cycle[1])
    assert planned['changed'] and planned['token'] is None
    first = cycle_lock.lock(options(path), watch=cycle[1])  # nothing was kept: free
    with pytest.raises(cycle_lock.CycleLockError, match='another cycle holds'):
        cycle_lock.lock(options(path), check_mode=True, watch=cycle[1])
    cycle_lock.unlock(options(path, state='unlocked', token=first['token']))


def test_without_a_cycle_process_the_lock_expires(tmp_path):
    path = tmp_path / 'VM0.cycle.lock'
    first = cycle_lock.lock(options(path, max_hold=1), watch=(None, None, []))
    assert first['watch_pid'] is None
    assert wait_until(lambda: not cycle_lock.process_alive(first['holder_pid']), seconds=5)


def test_the_holder_lets_go_by_itself_when_its_cycle_dies(tmp_path, cycle):
    first = cycle_lock.lock(options(tmp_path / 'VM0.cycle.lock'), watch=cycle[1])
    cycle[0].kill()
    cycle[0].wait()
    assert wait_until(lambda: not cycle_lock.process_alive(first['holder_pid'])), 'the holder outlived its cycle'
