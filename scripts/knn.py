"""k-NN top-1/top-5 of a checkpoint's frozen features: ``python scripts/knn.py --help``."""

import sys

from unimix.eval.cli import main_knn

if __name__ == "__main__":
    sys.exit(main_knn())
