# Two commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
# Both run `make setup` first, which is idempotent.
.PHONY: setup test-setup test sanity units integration demo bench lab-build changelog build clean role-specs

setup:
	scripts/setup.sh

# Test-only packages (headless Chromium for the report's browser test): not needed by `make demo`.
test-setup: setup
	scripts/setup-test.sh

test: setup test-setup
	scripts/test.sh

sanity: setup
	scripts/sanity.sh

units: setup
	scripts/ansible-test.sh units

integration: setup
	scripts/tools-venv.sh
	.venv/bin/python -m pytest tests/integration

demo: setup
	scripts/demo.sh

bench: setup
	.venv/bin/python benchmarks/copy_bench.py --mode full --size 4G
	.venv/bin/python benchmarks/copy_bench.py --mode incremental --size 4G --changed-percent 2
	.venv/bin/python benchmarks/vmdk_bench.py --size 2G --links 3 --runs 5

lab-build:
	tests/lab/build.sh

role-specs: setup
	.venv/bin/python scripts/role_specs.py

changelog: setup
	.venv/bin/antsibull-changelog lint

build: setup
	.venv/bin/ansible-galaxy collection build --force --output-path build/

clean:
	rm -rf build tests/output tests/lab/bin .venv-tools .ansible
