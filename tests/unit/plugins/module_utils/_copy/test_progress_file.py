# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
import json
import os
import subprocess
import threading
import time

from ansible_collections.migratekit.migration.plugins.module_utils._copy import progress_file


def read(path):
    with open(path) as handle:
        return json.load(handle)


def test_progress_is_published_while_copying_and_at_the_end(tmp_path):
    path = str(tmp_path / 'p.json')
    now = [100.0]
    reporter = progress_file.ProgressFile(path, 'disk-2000', 'full', 1000, interval=0.1, clock=lambda: now[0])
    reporter.start()
    first = read(path)
    assert (first['state'], first['bytes_done'], first['percent'], first['disk']) == ('running', 0, 0.0, 'disk-2000')
    now[0] = 104.0
    reporter.update(400, 300)
    deadline = time.monotonic() + 5
    while read(path)['bytes_done'] != 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    running = read(path)
    assert running['percent'] == 40.0 and running['bytes_moved'] == 300
    assert running['rate_bps'] == 100.0 and running['eta_seconds'] == 6.0 and running['elapsed'] == 4.0
    reporter.finish(ok=True)
    done = read(path)
    assert (done['state'], done['percent'], done['eta_seconds']) == ('done', 100.0, 0)
    assert [n for n in os.listdir(str(tmp_path)) if n != 'p.json'] == []


def test_a_failed_copy_says_so(tmp_path):
    path = str(tmp_path / 'p.json')
    reporter = progress_file.ProgressFile(path, 'disk-2000', 'incremental', 10, interval=1)
    reporter.start()
    reporter.finish(ok=False, message='target went away')
    assert (read(path)['state'], read(path)['message']) == ('failed', 'target went away')


def test_an_unwritable_file_is_a_warning_not_a_failure(tmp_path):
    reporter = progress_file.ProgressFile(str(tmp_path / 'missing' / 'p.json'), 'd', 'full', 10, interval=0.1)
    reporter.start()
    reporter.update(5, 5)
    reporter.finish(ok=True)
    assert len(reporter.warnings) == 1 and 'cannot write the progress file' in reporter.warnings[0]


def test_the_watchdog_ends_the_copy_when_the_process_running_the_cycle_is_gone():
    watched = subprocess.Popen(['sleep', '30'])
    stopped = threading.Event()
    watchdog = progress_file.Watchdog(watched.pid, period=0.05, terminate=stopped.set).start()
    time.sleep(0.3)
    assert not stopped.is_set()
    watched.kill()
    watched.wait()
    assert stopped.wait(5)
    watchdog.stop()


def test_fanout_feeds_every_reporter(tmp_path):
    a = progress_file.ProgressFile(str(tmp_path / 'a.json'), 'd', 'full', 10, interval=1)
    b = progress_file.ProgressFile(str(tmp_path / 'missing' / 'b.json'), 'd', 'full', 10, interval=1)
    both = progress_file.Fanout([a, None, b])
    both.start()
    both.update(10, 10)
    both.finish(ok=True)
    assert read(str(tmp_path / 'a.json'))['bytes_done'] == 10 and len(both.warnings) == 1


def test_a_copy_refused_before_reporting_ends_its_progress_file(tmp_path):
    from ansible_collections.migratekit.migration.plugins.module_utils import nbd_copy
    path = str(tmp_path / 'p.json')
    options = nbd_copy.COPY_SPEC.options(source='nbd+unix:///?socket=%s' % (tmp_path / 'none.sock'),
                                         target='nbd+unix:///?socket=%s' % (tmp_path / 'none2.sock'),
                                         sync_type='full', progress_file=path, retries=0)
    try:
        nbd_copy.copy_module(options)
    except Exception:  # pylint: disable=broad-except
        pass
    else:
        raise AssertionError('the copy should fail')
    assert read(path)['state'] == 'failed' and read(path)['message']
