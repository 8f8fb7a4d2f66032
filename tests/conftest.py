# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make the repository importable as ansible_collections.migratekit.migration.

The repository root is the collection root; Python and Ansible find a
collection only below an ``ansible_collections/<namespace>/<name>`` path, so
the tests point one at the checkout (build/collections, git-ignored) and put
it on sys.path and ANSIBLE_COLLECTIONS_PATH for child processes.

A checkout that already lies at such a path (``ansible-test units`` runs the
unit tests from a copy at .../ansible_collections/migratekit/migration, with
its own collection loader on sys.path) is used where it is: a second
``ansible_collections`` package on sys.path would hide the loader's.
"""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PARENTS = REPO_ROOT.split(os.sep)[-3:-1]
IN_PLACE = _PARENTS == ['ansible_collections', 'migratekit'] and os.path.basename(REPO_ROOT) == 'migration'
if IN_PLACE:
    COLLECTIONS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(REPO_ROOT)))
else:
    COLLECTIONS_ROOT = os.path.join(REPO_ROOT, 'build', 'collections')


def _link_collection():
    namespace_dir = os.path.join(COLLECTIONS_ROOT, 'ansible_collections', 'migratekit')
    link = os.path.join(namespace_dir, 'migration')
    os.makedirs(namespace_dir, exist_ok=True)
    if not os.path.islink(link):
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:
            pass


if not IN_PLACE:
    _link_collection()
if COLLECTIONS_ROOT not in sys.path and 'ansible_collections' not in sys.modules:
    sys.path.insert(0, COLLECTIONS_ROOT)
os.environ['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS_ROOT
os.environ.setdefault('ANSIBLE_PYTHON_INTERPRETER', os.path.join(REPO_ROOT, '.venv', 'bin', 'python'))
