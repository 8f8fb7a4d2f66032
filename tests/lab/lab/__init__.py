"""The migratekit test lab (see core.py and tests/lab/README.md)."""

from .core import (  # noqa: F401
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DISK_SIZE,
    DEFAULT_PAGE_SIZE,
    Lab,
    LabError,
    build,
    chain_read,
    chain_sha256,
    chain_to_raw,
    compare_chain,
    pid_alive,
)
