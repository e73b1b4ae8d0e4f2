"""Run budgeted jobs side by side, resumably: a job whose ``result.json`` exists is not re-run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .job import JobSpec, job_command

__all__ = ["run_jobs"]


def run_jobs(
    specs: Sequence[JobSpec], parallel: int = 2, lockstep: bool = False
) -> list[dict[str, Any]]:
    """Run every spec (``parallel`` at a time, each in its own process, output in
    ``<spec.out>/job.log``) and return their results in order; finished jobs are read, not
    re-run, so an interrupted search continues where it stopped. ``lockstep``: start jobs in
    groups of ``parallel`` and wait for a whole group before the next (methods that race for
    the same minutes then always share the machine with each other only).

    Raises:
        RuntimeError: a job failed (naming its log).
    """
    pending = [s for s in specs if not (Path(s.out) / "result.json").is_file()]
    print(f"{len(specs)} jobs, {len(specs) - len(pending)} already done, {parallel} at a time")
    running: list[tuple[JobSpec, subprocess.Popen, float]] = []
    failed: list[str] = []
    while pending or running:
        free = 0 if (lockstep and running) else parallel - len(running)
        for spec in pending[:free]:
            Path(spec.out).mkdir(parents=True, exist_ok=True)
            log = open(Path(spec.out) / "job.log", "w")  # noqa: SIM115 (the child owns it)
            proc = subprocess.Popen(job_command(spec), stdout=log, stderr=subprocess.STDOUT)
            running.append((spec, proc, time.perf_counter()))
            print(f"  start {spec.out}", flush=True)
        del pending[: max(free, 0)]
        time.sleep(2)
        for item in list(running):
            spec, proc, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            minutes = (time.perf_counter() - started) / 60
            if proc.returncode:
                failed.append(f"{spec.out} (exit {proc.returncode}, see {spec.out}/job.log)")
                print(f"  FAILED {failed[-1]}", flush=True)
            else:
                result = json.loads((Path(spec.out) / "result.json").read_text())
                print(
                    f"  done  {spec.out} in {minutes:.1f} min: teacher "
                    f"{result['final_teacher']:.2f}, student {result['final_student']:.2f}",
                    flush=True,
                )
    if failed:
        raise RuntimeError("jobs failed: " + "; ".join(failed))
    return [json.loads((Path(s.out) / "result.json").read_text()) for s in specs]
