# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built collection, installed as users install it, ships everything its modules import.

AnsiballZ packs a module with the module_utils it imports; a module_utils file
left out of the artifact (or an import only the checkout satisfies) shows up
only when the installed collection runs. So: ``ansible-galaxy collection
build``, ``ansible-galaxy collection install`` into a temporary path, and a
playbook that runs every module family from there against the lab and real
nbdkit servers, with nothing of the checkout on the collections path.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import glob
import json
import os
import subprocess
import textwrap

from ansible_collections.migratekit.migration.tests.integration.helpers import (
    PYTHON,
    REPO_ROOT,
    ansible_env,
    compare,
    patterned_chunks,
    run_playbook,
    write_image,
)

MiB = 1 << 20
GALAXY = os.path.join(os.path.dirname(PYTHON), 'ansible-galaxy')


def install_artifact(tmp_path):
    built = tmp_path / 'built'
    collections = tmp_path / 'collections'
    # only the new path: the checkout on ANSIBLE_COLLECTIONS_PATH would count as installed already
    env = ansible_env({'ANSIBLE_COLLECTIONS_PATH': str(collections)})
    subprocess.run([GALAXY, 'collection', 'build', '--output-path', str(built), REPO_ROOT], check=True, env=env,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    tarball = glob.glob(str(built / 'migratekit-migration-*.tar.gz'))[0]
    subprocess.run([GALAXY, 'collection', 'install', '-p', str(collections), tarball], check=True, env=env,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    return collections


def test_every_module_runs_from_the_installed_artifact(tmp_path, lab):
    collections = install_artifact(tmp_path)
    installed = collections / 'ansible_collections' / 'migratekit' / 'migration'
    assert (installed / 'plugins' / 'module_utils' / '_copy' / 'worker.py').exists()
    size = 16 * MiB
    source = write_image(str(tmp_path / 'source.img'), size, patterned_chunks(size, seed=5))
    target = write_image(str(tmp_path / 'target.img'), size, fill=lambda length: b'\xee' * length)
    run_dir = tmp_path / 'run'
    vcenter = lab.vcenter
    playbook = tmp_path / 'artifact.yml'
    playbook.write_text(textwrap.dedent('''\
        - hosts: localhost
          gather_facts: false
          vars:
            run_dir: "%(run_dir)s"
          tasks:
            - name: Serve the source read-only
              migratekit.migration.nbd_disk_server:
                socket: "{{ run_dir }}/src.sock"
                path: "%(source)s"
                format: raw
              register: src
            - name: Serve the target
              migratekit.migration.nbd_disk_server:
                socket: "{{ run_dir }}/dst.sock"
                path: "%(target)s"
                format: raw
                readonly: false
              register: dst
            - name: Copy it, reporting to a VMA that is not there (a warning, not a failure)
              migratekit.migration.nbd_incremental_copy:
                source: "{{ src.uri }}"
                target: "{{ dst.uri }}"
                state_file: "%(state)s"
                disk_key: 2000
                change_id: "52 aa/1"
                vma_url: http://127.0.0.1:9
                job_id: artifact
              register: copy
            - name: Post a progress update (check mode)
              migratekit.migration.vma_progress:
                vma_url: http://127.0.0.1:9
                job_id: artifact
                stage: Discover
                status: in_progress
              check_mode: true
            - name: Plan a CBT snapshot of the lab VM (check mode)
              migratekit.migration.vmware_cbt_snapshot:
                hostname: "%(hostname)s"
                port: %(port)d
                username: "%(username)s"
                password: "%(password)s"
                validate_certs: false
                path: "%(vm_path)s"
                extents_dir: "{{ run_dir }}/extents"
              check_mode: true
              register: snapshot
            - name: Stop the servers
              migratekit.migration.nbd_disk_server:
                socket_dir: "{{ run_dir }}"
                state: stopped
            - name: Show the results
              ansible.builtin.debug:
                msg: "RESULT {{ {'copy': copy.committed_change_id, 'disks': snapshot.disks | length} | to_json }}"
        ''' % dict(run_dir=run_dir, source=source, target=target, state=tmp_path / 'state.json',
                   hostname=vcenter['hostname'], port=vcenter['port'], username=vcenter['username'],
                   password=vcenter['password'], vm_path=lab.vm('VM0')['path'])))
    run = run_playbook([str(playbook), '-e', 'ansible_python_interpreter=' + PYTHON],
                       env={'ANSIBLE_COLLECTIONS_PATH': str(collections), 'ANSIBLE_COLLECTIONS_SCAN_SYS_PATH': 'false'})
    assert run.returncode == 0, run.stdout[-4000:]
    line = [text for text in run.stdout.splitlines() if 'RESULT ' in text][-1]
    result = json.loads(line.split('RESULT ', 1)[1].rstrip('"').replace('\\"', '"'))
    assert result == {'copy': '52 aa/1', 'disks': 2}
    assert 'Progress reporting to the VMA at http://127.0.0.1:9' in run.stdout  # the reporter came along
    compare(source, target)
    with open(str(tmp_path / 'state.json')) as handle:
        assert json.load(handle)['disks']['2000']['change_id'] == '52 aa/1'
