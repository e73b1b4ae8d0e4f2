"""``unimix linear``: ``python scripts/linear.py --help``."""

import sys

from unimix.eval.cli import main_linear

if __name__ == "__main__":
    sys.exit(main_linear())
