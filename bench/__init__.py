"""CIFAR-scale benchmarks as a library: budgeted jobs, recipe search, the lightly peer.

Public API::

    from unimix.bench import JobSpec, run_jobs, eval_sets, search, load_grid

- :class:`JobSpec` / :func:`run_jobs`: pretrain one method (``ours`` or the ``lightly`` peer) for
  a budget of source images or minutes and evaluate its checkpoints like for like; jobs run in
  their own processes, side by side, and finished ones are never re-run.
- :func:`search` / :func:`load_grid`: a grid of recipe variants × seeds on a validation split.
- :mod:`unimix.bench.race` (curves: :mod:`unimix.viz.race_plot`): our recipe against the peer
  at one budget, several seeds (``scripts/bench_cifar.py``); :mod:`unimix.bench.zoo`: one nano preset
  per mixer family (``scripts/bench_zoo.py``).
- :mod:`unimix.bench.peer_lightly`: lightly's CIFAR-10 DINO recipe as a plain loop.
- :mod:`unimix.bench.throughput` (with :mod:`~unimix.bench.step_runners` and
  :mod:`~unimix.bench.machine`): DINO step img/s next to lightly's example loop
  (``scripts/bench_train.py``); :mod:`unimix.bench.knn_speed`: k-NN at ImageNet scale, exact
  FAISS against an approximate index on a memory-mapped bank (``scripts/bench_knn.py``); :mod:`unimix.bench.folder_sets`: two small image folders
  (``scripts/make_folder_sets.py``).

lightly (the ``bench`` extra) is imported only where a peer loop is built or run. The scripts in
``scripts/`` are thin command lines over this package: they parse options, call it, print its
tables and write its JSON.
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
