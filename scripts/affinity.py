"""Plot each stage's affinity row for one query pixel: ``python scripts/affinity.py --help``."""

import sys

from unimix.viz.cli import main_affinity

sys.exit(main_affinity())
