"""Print the backbone preset table (params, GMACs, anchors): ``python scripts/backbones.py --help``."""

import sys

from unimix.backbones.cli import main_table

sys.exit(main_table())
