# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cutover planning as users run it: the sync history each cycle appends, the change rate and the
predicted downtime that follow the guests' write rates, the budget gate that refuses a cutover with
the VM still on, and a cutover (presync, shutdown, final cycle) whose measured downtime goes into
the history next to its prediction.

One lab of 2 VMs x 1 disk (16 MiB). VM1's guest writes 8x as much as VM0's between cycles.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import shutil
import subprocess
import tempfile
import time

from html import parser as html_parser

import pytest

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    REPO_ROOT,
    MiB,
    run_module,
    run_playbook,
)

pytest.importorskip('nbd')
pytest.importorskip('pyVmomi')

from lab import Lab, compare_chain  # noqa: E402  (tests/integration/conftest.py puts tests/lab on sys.path)

pytestmark = pytest.mark.skipif(shutil.which('nbdkit') is None, reason='nbdkit is not installed')

VMS = ['VM0', 'VM1']
KEY = 2000
BLOCK = 64 * 1024
WRITES = {'VM0': 2 * BLOCK, 'VM1': 16 * BLOCK}  # per interval: VM1 writes 8x more
INTERVAL = 4.0
ROUNDS = 3
PLAYBOOKS = os.path.join(REPO_ROOT, 'playbooks')


class Planning(object):
    def __init__(self, lab, base):
        self.lab = lab
        self.base = base
        self.state_dir = os.path.join(base, 'state')
        self.runs = 0

    def playbook(self, name, extra=None, limit=None, env=None):
        self.runs += 1
        extra_vars = {'migratekit_state_dir': self.state_dir, 'migratekit_run_dir': os.path.join(self.base, 'r')}
        extra_vars.update(extra or {})
        args = ['-i', self.lab.inventory, '-f', str(len(VMS)), '-e', json.dumps(extra_vars),
                os.path.join(PLAYBOOKS, name)]
        if limit:
            args += ['-l', limit]
        proc = run_playbook(args, timeout=600, env=env)
        with open(os.path.join(self.base, 'run-%d-%s.log' % (self.runs, name)), 'w') as handle:
            handle.write(proc.stdout)
        return proc

    def history(self, vm):
        path = os.path.join(self.state_dir, vm + '.history.json')
        with open(path) as handle:
            return json.load(handle)['cycles']

    def info(self, vm, **args):
        run = run_module('sync_state_info', dict(state_file=os.path.join(self.state_dir, vm + '.json'), **args),
                         check=True)
        assert not run.failed, run.output
        return run.result

    def power_on(self, vm):
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        si = self.lab.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [], True)
            found = [obj for obj in view.view if obj._wsdlName == 'VirtualMachine' and obj.name == vm]
            WaitForTask(found[0].PowerOnVM_Task())
            view.Destroy()
        finally:
            Disconnect(si)

    def power_state(self, vm):
        si = self.lab.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder, [], True)
            found = dict((obj.name, (str(obj.runtime.powerState), obj.snapshot is not None))
                         for obj in view.view if obj._wsdlName == 'VirtualMachine')
            view.Destroy()
            return found[vm]
        finally:
            from pyVim.connect import Disconnect
            Disconnect(si)


@pytest.fixture(scope='module')
def planning(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('planning'))
    lab = Lab.up(os.path.join(base, 'lab'), vms=len(VMS), disks=1, disk_size=16 * MiB, watch_pid=os.getpid())
    try:
        yield Planning(lab, base)
    finally:
        lab.down()


def test_each_cycle_appends_its_record_to_the_history(planning):
    for i, vm in enumerate(VMS):
        planning.lab.write(vm, KEY, offset=0, length=4 * MiB, seed=i)
    proc = planning.playbook('full_sync.yml', env={'ANSIBLE_SHOW_CUSTOM_STATS': '1'})
    assert proc.returncode == 0, proc.stdout[-3000:]
    for vm in VMS:
        cycles = planning.history(vm)
        assert [c['cycle'] for c in cycles] == ['full_sync']
        disk = cycles[0]['disks'][0]
        state = json.load(open(os.path.join(planning.state_dir, vm + '.json')))
        assert disk['change_id'] == state['disks'][str(KEY)]['change_id']
        assert disk['sync_type'] == 'full' and disk['copied'] and disk['bytes_moved'] >= 4 * MiB
        assert disk['duration'] > 0 and disk['throughput_bps'] > 0 and disk['resumed'] is False
        assert cycles[0]['started'] < cycles[0]['snapshot_at'] < cycles[0]['finished']
        assert disk['started'] >= cycles[0]['started'] and disk['finished'] <= cycles[0]['finished']
    # the per-VM summary line and the set_stats data
    assert 'VM VM0: full_sync ok, 1 disk(s), 4.0 MiB moved in ' in proc.stdout
    stats = proc.stdout[proc.stdout.index('CUSTOM STATS'):]
    assert '"migratekit_cycles"' in stats and '"VM0"' in stats and '"VM1"' in stats, stats
    assert '"bytes_moved": %d' % (4 * MiB) in stats and '"predicted_cutover_seconds"' in stats, stats


def test_change_rates_follow_the_write_rates(planning):
    for round_ in range(ROUNDS):
        for vm in VMS:
            planning.lab.write(vm, KEY, offset=(round_ % 2) * 8 * MiB, length=WRITES[vm], seed=10 * round_)
        time.sleep(INTERVAL)
        proc = planning.playbook('incremental_sync.yml')
        assert proc.returncode == 0, proc.stdout[-3000:]
    rates = {}
    for vm in VMS:
        cycles = planning.history(vm)
        assert [c['cycle'] for c in cycles] == ['full_sync'] + ['incremental_sync'] * ROUNDS
        # every incremental cycle found exactly what the guest wrote
        assert [c['disks'][0]['changed_bytes'] for c in cycles[1:]] == [WRITES[vm]] * ROUNDS
        info = planning.info(vm)
        series = info['series'][str(KEY)]
        for point in series[1:]:
            assert point['change_rate_bps'] == pytest.approx(WRITES[vm] / point['interval'], rel=0.01)
        rates[vm] = info['change_rate_bps']
    ratio = rates['VM1'] / rates['VM0']
    print('\nchange rates (B/s): %s, ratio %.2f' % (rates, ratio))
    assert 6.5 <= ratio <= 9.5, rates


def test_prediction_grows_with_the_change_rate(planning):
    a, b = planning.info('VM0'), planning.info('VM1')
    for info in (a, b):
        prediction = info['prediction']
        assert prediction['overhead_source'] == 'measured' and prediction['shutdown_source'] == 'default'
        assert info['predicted_cutover_seconds'] == pytest.approx(
            prediction['shutdown_seconds'] + prediction['overhead_seconds'] + prediction['final_delta_seconds'], abs=0.01)
    # both were synced in the same run: the final delta follows the rate
    assert b['prediction']['final_delta_bytes'] > 5 * a['prediction']['final_delta_bytes'] > 0


def test_gate_refuses_over_the_budget_with_the_vm_still_on(planning):
    before = len(planning.history('VM1'))
    proc = planning.playbook('cutover.yml', limit='VM1', extra={'migratekit_cutover_max_downtime': 1})
    assert proc.returncode != 0
    assert 'VM VM1: cutover refused, the VM was not touched (still powered on, no snapshot of ours)' in proc.stdout
    assert 'predicted downtime' in proc.stdout and 'guest shutdown 60 s (default)' in proc.stdout
    assert 'over the budget migratekit_cutover_max_downtime 1 s' in proc.stdout
    assert planning.power_state('VM1') == ('poweredOn', False)
    assert len(planning.history('VM1')) == before  # no cycle ran


def test_cutover_records_its_measured_downtime_next_to_the_prediction(planning):
    planning.lab.write('VM0', KEY, offset=2 * MiB, length=WRITES['VM0'], seed=77)
    proc = planning.playbook('cutover.yml', limit='VM0', extra={'migratekit_cutover_max_downtime': 3600,
                                                                'migratekit_cutover_shutdown_timeout': 30})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert planning.power_state('VM0') == ('poweredOff', False)
    cycles = planning.history('VM0')
    presync, cutover = cycles[-2], cycles[-1]
    assert (presync['cycle'], cutover['cycle']) == ('presync', 'cutover')
    # the presync copied what the guest wrote with the VM on; the final cycle copied a quiet disk
    assert presync['disks'][0]['changed_bytes'] == WRITES['VM0']
    assert presync['prediction']['max_downtime'] == 3600 and presync['prediction']['ready'] is True
    assert cutover['prediction']['predicted_cutover_seconds'] > 0
    assert cutover['shutdown_seconds'] is not None and cutover['downtime_seconds'] > 0
    assert cutover['power_off_at'] < cutover['committed_at'] <= cutover['finished']
    assert compare_chain(planning.lab.live('VM0', KEY)['image'], planning.lab.disk('VM0', KEY)['target_image'])
    print('\ncutover VM0: predicted %.1f s (at the gate: %.1f s), measured %.1f s (shutdown %.1f s)'
          % (cutover['prediction']['predicted_cutover_seconds'], presync['prediction']['predicted_cutover_seconds'],
             cutover['downtime_seconds'], cutover['shutdown_seconds']))
    # the next prediction uses the measured shutdown
    assert planning.info('VM0')['prediction']['shutdown_source'] == 'measured'


def test_a_rehearsal_cutover_is_predicted_from_the_measured_cycles(planning):
    """A second cutover of VM0 (powered on again, as after a rehearsal): every part is measured now."""
    planning.power_on('VM0')
    planning.lab.write('VM0', KEY, offset=4 * MiB, length=WRITES['VM0'], seed=78)
    proc = planning.playbook('cutover.yml', limit='VM0', extra={'migratekit_cutover_max_downtime': 3600})
    assert proc.returncode == 0, proc.stdout[-3000:]
    cutover = planning.history('VM0')[-1]
    prediction = cutover['prediction']
    assert cutover['cycle'] == 'cutover'
    assert (prediction['shutdown_source'], prediction['overhead_source']) == ('measured', 'measured')
    predicted, measured = prediction['predicted_cutover_seconds'], cutover['downtime_seconds']
    print('\nrehearsal cutover VM0: predicted %.1f s (shutdown %.1f + overhead %.1f + final delta %.1f), '
          'measured %.1f s' % (predicted, prediction['shutdown_seconds'], prediction['overhead_seconds'],
                               prediction['final_delta_seconds'], measured))
    # the prediction counts a whole cycle's overhead (lock to cleanup), the downtime ends at the last commit
    assert measured <= predicted <= measured + 30


# ---------------------------------------------------------------- the fleet report

BUDGET = 30


@pytest.fixture(scope='module')
def report(planning):
    """The report playbook over the lab (VM0 cut over with every part measured, VM1 still on the defaults)."""
    out = os.path.join(planning.base, 'report')
    proc = planning.playbook('report.yml', extra={'migratekit_report_dir': out,
                                                  'migratekit_cutover_max_downtime': BUDGET})
    assert proc.returncode == 0, proc.stdout[-3000:]
    with open(os.path.join(out, 'report.json')) as handle:
        data = json.load(handle)
    return out, data, proc


def test_report_json_has_each_vm_and_the_fleet_totals(planning, report):
    out, data, proc = report
    assert sorted(vm['name'] for vm in data['vms']) == VMS
    by_name = dict((vm['name'], vm) for vm in data['vms'])
    for vm in VMS:
        entry = by_name[vm]
        lab_vm = planning.lab.vm(vm)
        assert entry['uuid'] == lab_vm['uuid']
        assert entry['cycles'] == planning.history(vm)
        assert entry['change_rate_bps'] > 0 and entry['last_throughput_bps'] > 0
        assert entry['predicted_cutover_seconds'] > 0
    assert by_name['VM0']['ready'] is True and by_name['VM1']['ready'] is False  # 60 s default shutdown > 30 s
    totals = data['totals']
    assert (totals['vms'], totals['ready'], totals['not_ready'], totals['unknown']) == (2, 1, 1, 0)
    assert totals['cycles'] == sum(len(planning.history(vm)) for vm in VMS)
    assert totals['change_rate_bps'] == pytest.approx(sum(by_name[vm]['change_rate_bps'] for vm in VMS))
    assert data['budget_seconds'] == BUDGET
    assert '2 VM(s), 1 ready within the budget of 30.0 s, 1 over it' in proc.stdout
    # self-contained: no reference to anything outside the file
    with open(os.path.join(out, 'report.html')) as handle:
        page = handle.read()
    assert 'src=' not in page and 'href=' not in page and '@import' not in page and 'url(' not in page


def test_report_check_mode_writes_nothing(planning, tmp_path):
    out = str(tmp_path / 'checked')
    proc = run_playbook(['-i', planning.lab.inventory, '--check', '-e', json.dumps({
        'migratekit_state_dir': planning.state_dir, 'migratekit_report_dir': out}),
        os.path.join(PLAYBOOKS, 'report.yml')], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not os.path.exists(out)


class Dom(html_parser.HTMLParser):
    """The elements of a dumped DOM: (tag, attributes, text) in document order."""

    def __init__(self):
        html_parser.HTMLParser.__init__(self)
        self.elements = []
        self.open = []

    def handle_starttag(self, tag, attrs):
        element = [tag, dict(attrs), '']
        self.elements.append(element)
        if tag not in ('line', 'circle', 'rect', 'polyline', 'meta', 'br', 'img', 'input'):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.open:
            self.open[-1][2] += data

    def find(self, tag, cls=None, **attrs):
        return [(t, a, x) for t, a, x in self.elements if t == tag
                and (cls is None or cls in a.get('class', '').split())
                and all(a.get(k.replace('_', '-')) == v for k, v in attrs.items())]


def render(page):
    """The page's DOM after its script ran, from headless Chromium (Debian's chromium)."""
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if chromium is None:
        pytest.fail('chromium is not installed (scripts/setup-test.sh installs it)')
    profile = tempfile.mkdtemp(prefix='chromium-')
    try:
        proc = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
                               '--user-data-dir=' + profile, '--virtual-time-budget=5000', '--dump-dom',
                               'file://' + page], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                              universal_newlines=True, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


def test_report_page_draws_the_data_in_a_browser(report):
    out, data, _proc = report
    dom = render(os.path.join(out, 'report.html'))
    assert dom.find('body')[0][1].get('data-rendered') == 'true'
    by_name = dict((vm['name'], vm) for vm in data['vms'])

    # the table, sorted by readiness: the ready VM first
    rows = [a['data-vm'] for _t, a, _x in dom.find('tr') if 'data-vm' in a]
    assert rows == ['VM0', 'VM1']

    # the fleet chart: one bar per VM, as long as its prediction, and the budget line
    bars = dict((a['data-vm'], a) for _t, a, _x in dom.find('rect', 'predicted'))
    assert sorted(bars) == VMS
    for vm in VMS:
        assert float(bars[vm]['data-value']) == pytest.approx(by_name[vm]['predicted_cutover_seconds'])
        assert bars[vm]['data-ready'] == str(by_name[vm]['ready']).lower()
    ratio = float(bars['VM1']['width']) / float(bars['VM0']['width'])
    assert ratio == pytest.approx(by_name['VM1']['predicted_cutover_seconds']
                                  / by_name['VM0']['predicted_cutover_seconds'], rel=0.02)
    budget_lines = dom.find('line', 'budget')
    assert budget_lines and all(float(a['data-value']) == BUDGET for _t, a, _x in budget_lines)

    for vm in VMS:
        entry = by_name[vm]
        # change rate over time: one point per incremental cycle, at its rate, higher rates drawn higher
        charts = dom.find('svg', 'rate', data_vm=vm)
        assert len(charts) == 1
        wanted = [p['change_rate_bps'] for p in entry['series'][str(KEY)] if p['change_rate_bps'] is not None]
        section = list(dom.elements)
        start = section.index(list(charts[0]))
        points = []
        for tag, attrs, _text in section[start + 1:]:
            if tag == 'svg':
                break
            if tag == 'circle' and 'rate-point' in attrs.get('class', ''):
                points.append((float(attrs['data-value']), float(attrs['cy'])))
        assert [v for v, _cy in points] == pytest.approx(wanted)
        by_value = sorted(points)
        assert [cy for _v, cy in by_value] == sorted((cy for _v, cy in by_value), reverse=True)
        # sync durations: one bar per cycle, heights in proportion to the durations
        start = section.index(list(dom.find('svg', 'durations', data_vm=vm)[0]))
        bars = []
        for tag, attrs, _text in section[start + 1:]:
            if tag == 'svg':
                break
            if tag == 'rect' and 'duration-bar' in attrs.get('class', ''):
                bars.append((float(attrs['data-value']), float(attrs['height']), attrs['data-cycle']))
        assert [(v, c) for v, _h, c in bars] == [(c['duration'], c['cycle']) for c in entry['cycles']]
        longest = max(bars)
        for value, height, _cycle in bars:
            assert height == pytest.approx(longest[1] * value / longest[0], abs=0.5)
        # the prediction's parts against the budget
        start = section.index(list(dom.find('svg', 'prediction', data_vm=vm)[0]))
        parts = {}
        for tag, attrs, _text in section[start + 1:]:
            if tag == 'svg':
                break
            if tag == 'rect' and 'part' in attrs.get('class', ''):
                parts[attrs['class'].split()[1]] = float(attrs['data-value'])
        prediction = entry['prediction']
        assert parts == {'shutdown': pytest.approx(prediction['shutdown_seconds']),
                         'overhead': pytest.approx(prediction['overhead_seconds']),
                         'final-delta': pytest.approx(prediction['final_delta_seconds'])}
