"""DINO pretraining: ``accelerate launch scripts/pretrain.py --config quickstart`` (see ``--help``)."""

import sys

from unimix.ssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
