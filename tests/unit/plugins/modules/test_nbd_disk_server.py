# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os

from ansible_collections.migratekit.migration.plugins.modules import nbd_disk_server

SECRET = 'unit-secret-xyz'
THUMB = ':'.join(['0F'] * 20)


def test_check_mode_start_plans_without_starting(run_module, tmp_path):
    sock = str(tmp_path / 'new' / 'd.sock')
    out = run_module(nbd_disk_server, dict(socket=sock, path=str(tmp_path / 'img'), format='raw'), check_mode=True)
    assert not out.failed and out.result['changed'] is True
    assert out.result['uri'] == 'nbd+unix:///?socket=' + sock
    assert out.result['pid'] is None and '-r' in out.result['argv']
    assert out.result['diff']['before']['state'] == 'stopped'
    assert not os.path.exists(os.path.dirname(sock))


def test_vddk_check_mode_hides_password(run_module, tmp_path):
    directory = tmp_path / 'p'
    directory.mkdir(mode=0o700)
    out = run_module(nbd_disk_server, dict(socket=str(directory / 'd.sock'), transport='vddk', server='vc',
                                           username='u', password=SECRET, thumbprint=THUMB, vm_moref='vm-1',
                                           backing_file='[ds] a/a.vmdk'), check_mode=True)
    assert not out.failed
    assert SECRET not in json.dumps(out.result)
    assert 'password=+*' in out.result['argv']
    assert os.listdir(str(directory)) == []


def test_vddk_missing_parameters_fail(run_module, tmp_path):
    out = run_module(nbd_disk_server, dict(socket=str(tmp_path / 'd.sock'), transport='vddk', server='vc'))
    assert out.failed and 'password' in out.result['msg'] and 'thumbprint' in out.result['msg']


def test_bad_thumbprint_fails_naming_operation_and_socket(run_module, tmp_path):
    sock = str(tmp_path / 'd.sock')
    out = run_module(nbd_disk_server, dict(socket=sock, transport='vddk', server='vc', username='u', password=SECRET,
                                           thumbprint='zz', vm_moref='vm-1', backing_file='[ds] a/a.vmdk'))
    assert out.failed
    assert out.result['msg'].startswith('nbd_disk_server: cannot configure the server on %s' % sock)
    assert 'thumbprint' in out.result['msg'] and SECRET not in out.result['msg']


def test_stop_when_nothing_runs_is_ok(run_module, tmp_path):
    out = run_module(nbd_disk_server, dict(socket=str(tmp_path / 'd.sock'), state='stopped'))
    assert not out.failed and out.result['changed'] is False and out.result['pid'] is None


def test_socket_dir_is_only_for_stopping(run_module, tmp_path):
    out = run_module(nbd_disk_server, dict(socket_dir=str(tmp_path), state='started'))
    assert out.failed
    assert out.result['msg'] == ('nbd_disk_server: cannot configure the servers in %s: socket_dir is only for '
                                 'state=stopped; give socket to start a server' % tmp_path)


def test_diff_only_in_diff_mode(run_module, tmp_path):
    args = dict(socket=str(tmp_path / 'new' / 'd.sock'), path=str(tmp_path / 'img'), format='raw')
    assert 'diff' not in run_module(nbd_disk_server, args, check_mode=True, diff=False).result
    assert run_module(nbd_disk_server, args, check_mode=True, diff=True).result['diff']['after']['state'] == 'started'
