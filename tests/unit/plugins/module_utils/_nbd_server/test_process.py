# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Password files, private socket directories, server identity and stopping (files and /proc)."""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.migratekit.migration.plugins.module_utils import nbdkit
from ansible_collections.migratekit.migration.tests.unit.plugins.module_utils.nbd_server_fakes import (
    SECRET, validate, vddk_params,
)


def test_password_file_is_private_and_exact(tmp_path):
    directory = str(tmp_path / 'sock')
    assert nbdkit.ensure_private_dir(directory) is True
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    sock = os.path.join(directory, 'd.sock')
    old_umask = os.umask(0)
    try:
        path = nbdkit.write_password_file(directory, sock, SECRET)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        assert handle.read() == SECRET
    assert nbdkit.password_files(sock) == [path]
    config = validate(vddk_params(socket=sock))
    argv = nbdkit.build_argv(config, path)
    assert 'password=+' + path in argv and not any(SECRET in a for a in argv)


def test_shared_directory_is_refused(tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    with pytest.raises(nbdkit.NbdkitConfigError, match='private'):
        nbdkit.ensure_private_dir(str(shared))
    assert stat.S_IMODE(os.stat(str(shared)).st_mode) == 0o1777


def test_is_our_server():
    assert nbdkit.is_our_server(['/usr/sbin/nbdkit', '-U', '/s/a.sock', 'file'], '/s/a.sock')
    assert not nbdkit.is_our_server(['/usr/sbin/nbdkit', '-U', '/s/b.sock', 'file'], '/s/a.sock')
    assert not nbdkit.is_our_server(['/bin/sleep', '-U', '/s/a.sock'], '/s/a.sock')
    assert not nbdkit.is_our_server(None, '/s/a.sock')


def test_stopping_nothing_is_ok(tmp_path):
    directory = tmp_path / 'd'
    directory.mkdir(mode=0o700)
    config = validate(dict(socket=str(directory / 'x.sock'), path='/nonexistent', format='raw'))
    server = nbdkit.NbdkitServer(config)
    assert server.ensure_stopped()[0] is False
    (directory / 'x.sock.pid').write_text(u'999999999\n')
    changed, result = server.ensure_stopped()
    assert changed is True and result['pid'] is None
    assert not (directory / 'x.sock.pid').exists()
