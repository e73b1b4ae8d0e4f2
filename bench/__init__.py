"""CIFAR-scale benchmarks as a library: budgeted jobs, recipe search, the lightly peer.

Public API::

    from unimix.bench import JobSpec, run_jobs, eval_sets, search, load_grid

- :class:`JobSpec` / :func:`run_jobs`: pretrain one method (``ours`` or the ``lightly`` peer) for
  a budget of source images or minutes and evaluate its checkpoints like for like; jobs run in
  their own processes, side by side, and finished ones are never re-run.
- :func:`search` / :func:`load_grid`: a grid of recipe variants × seeds on a validation split.

The other modules (races, zoo, the peer, throughput, k-NN speed, folder sets and search) are
listed in docs/benchmarks.md. lightly (the ``bench`` extra) is imported only where a peer loop
is built or run; the scripts in ``scripts/`` parse options, call this package, print its tables
and write its JSON.
"""

from .job import JobSpec, eval_sets, headline, run_job, untrained_floors
from .scheduler import run_jobs
from .search import format_table, load_grid, search, summarize

__all__ = [
    "JobSpec",
    "eval_sets",
    "format_table",
    "headline",
    "load_grid",
    "run_job",
    "run_jobs",
    "search",
    "summarize",
    "untrained_floors",
]
