"""``unimix export``: ``python scripts/export.py --help``."""

import sys

from unimix.eval.cli import main_export

if __name__ == "__main__":
    sys.exit(main_export())
