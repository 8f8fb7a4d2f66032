"""Entry point of tests/lab/labctl (run with the project's venv python)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lab.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
