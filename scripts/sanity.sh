#!/usr/bin/env bash
# Run `ansible-test sanity` offline on a copy of the collection placed where
# ansible-test wants it (see scripts/ansible-test.sh).
exec "$(dirname "$0")/ansible-test.sh" sanity "$@"
