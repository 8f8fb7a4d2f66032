# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test fetches get-pip.py from a host this project's machines cannot
reach; it uses a cached copy when one exists. This script does the same job
offline: ensurepip from the interpreter's own wheels, then pip install of the
packages ansible-test asks for (from the package index pip is configured with).
"""
import subprocess
import sys

FLAGS_FOR_GET_PIP_ONLY = {'--no-setuptools', '--no-wheel'}


def main():
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'])
    args = [arg for arg in sys.argv[1:] if arg not in FLAGS_FOR_GET_PIP_ONLY]
    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check'] + args)


if __name__ == '__main__':
    main()
