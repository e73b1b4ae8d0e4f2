"""``python -m unimix.bench.worker --spec JSON``: run one :class:`~unimix.bench.job.JobSpec` in
this process (the scheduler starts one worker per job)."""

from __future__ import annotations

import sys

from .job import main

if __name__ == "__main__":
    sys.exit(main())
