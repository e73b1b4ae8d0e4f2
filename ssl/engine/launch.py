"""What the launcher asked for, and where each setting of a run comes from.

``accelerate launch`` (its flags, or ``accelerate config``'s file) hands its choices to the
processes it starts as ``ACCELERATE_*`` environment variables; ``torchrun`` sets ``WORLD_SIZE``
and friends. A recipe's explicit ``precision`` / ``model.compile`` wins over the launcher;
``precision: auto`` and ``model.compile: null`` (the defaults) take what the launcher says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LaunchSettings",
    "check_launch",
    "launcher_name",
    "lost_peer_message",
    "resolve_launch",
    "world_origin",
]

_PRECISION_NAMES = {"no": "fp32", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}


@dataclass(frozen=True)
class LaunchSettings:
    """Resolved precision and compilation, each with the place it came from."""

    precision: str  # for Accelerator(mixed_precision=...): "no", "bf16", "fp16" (or "fp8")
    precision_from: str
    compile_backend: str | None  # a torch.compile backend, None: not compiled
    compile_from: str
    #: torch.compile mode when compiled (``default``, ``reduce-overhead``: CUDA graphs, ...)
    compile_mode: str = "default"

    @property
    def precision_name(self) -> str:
        """``fp32`` for ``no``, else the precision itself."""
        return _PRECISION_NAMES.get(self.precision, self.precision)

    def describe(self) -> str:
        """``precision bf16 (from accelerate launch), compile off (default)``."""
        compiled = self.compile_backend or "off"
        if self.compile_backend and self.compile_mode != "default":
            compiled += f" mode {self.compile_mode}"
        return (
            f"precision {self.precision_name} ({self.precision_from}), "
            f"compile {compiled} ({self.compile_from})"
        )


def launcher_name(env: Mapping[str, str] | None = None) -> str | None:
    """``accelerate launch``, ``torchrun`` (or another torch.distributed launcher) or None."""
    env = os.environ if env is None else env
    if "ACCELERATE_MIXED_PRECISION" in env:  # accelerate launch always exports it
        return "accelerate launch"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    if "WORLD_SIZE" in env:
        return "a torch.distributed launcher"
    return None


def world_origin(world: int, env: Mapping[str, str] | None = None) -> str:
    """``2 machine(s) × 1 process(es), from accelerate launch`` (or ``no launcher``)."""
    env = os.environ if env is None else env
    launcher = launcher_name(env)
    if launcher is None:
        return "one process, no launcher"
    local = max(1, int(env.get("LOCAL_WORLD_SIZE", world) or world))
    machines = max(1, world // local)
    return f"{machines} machine(s) × {local} process(es), from {launcher}"


def check_launch(env: Mapping[str, str] | None = None) -> None:
    """Refuse a launch that would train alone while others do the same.

    ``accelerate launch --num_machines N`` (or ``--num_processes N``) without ``--multi_gpu``
    (or a config with ``distributed_type: MULTI_GPU``) starts one unconnected process per
    machine: it sets ``MASTER_ADDR`` but no ``WORLD_SIZE``, and every machine would train alone
    and write the same checkpoints.

    Raises:
        ValueError: one line saying what to add.
    """
    env = os.environ if env is None else env
    if launcher_name(env) != "accelerate launch" or "WORLD_SIZE" in env:
        return
    if "MASTER_ADDR" in env and "MASTER_PORT" in env:
        forced_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}
        fix = (
            "replace --cpu with --multi_gpu (on a machine without GPU it runs CPU processes, "
            "over gloo)"
            if forced_cpu
            else "add --multi_gpu (it also runs CPU processes, over gloo)"
        )
        raise ValueError(
            "accelerate launch was given several machines or processes but started this one "
            f"alone, a world of 1 process (no WORLD_SIZE): {fix}"
        )


#: What gloo, NCCL and the TCP store say when another rank died or hung up mid-collective.
_PEER_LOST = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "remote process exited",
    "communicator was aborted",
)


def lost_peer_message(error: BaseException) -> str | None:
    """One line for a collective that failed because another process of a multi-process run
    died or hung up (killed, out of memory, its machine lost), else None.

    The launcher (``accelerate launch``, ``torchrun``) stops every other process once one
    has died; the run continues from its newest checkpoint with ``--resume auto``.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    text = str(error)
    if not isinstance(error, dist.DistNetworkError) and not any(m in text for m in _PEER_LOST):
        return None
    first = text.splitlines()[0] if text else type(error).__name__
    first = first.split("] ", 1)[-1].split(". ", 1)[0]  # no "[source.cc:545]", no advice
    return (
        f"process {dist.get_rank()} of {dist.get_world_size()} lost contact with another "
        f"process of this run ({first}): that process stopped or was killed; the launcher "
        "stops the others; continue from the newest checkpoint with --resume auto"
    )


def _precision(precision: str, env: Mapping[str, str]) -> tuple[str, str]:
    if precision != "auto":
        return ("no" if precision == "fp32" else precision), "from the config"
    launched = env.get("ACCELERATE_MIXED_PRECISION")
    if launched:
        return launched.lower(), "from accelerate launch"
    return "no", "default: no launcher setting"


def _compile(enabled: bool | None, backend: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    if enabled is True:
        return backend, "from model.compile"
    if enabled is False:
        return None, "model.compile=false"
    launched = env.get("ACCELERATE_DYNAMO_BACKEND", "NO").lower()
    if launched != "no":
        return launched, "from accelerate launch"
    return None, "default"


def resolve_launch(
    precision: str,
    compile_model: bool | None,
    compile_backend: str,
    env: Mapping[str, str] | None = None,
    compile_mode: str | None = None,
) -> LaunchSettings:
    """The run's precision and compilation: the config's explicit values, else the launcher's
    (``ACCELERATE_MIXED_PRECISION``, ``ACCELERATE_DYNAMO_BACKEND``, ``ACCELERATE_DYNAMO_MODE``),
    else fp32 / not compiled."""
    env = os.environ if env is None else env
    mixed, mixed_from = _precision(precision, env)
    backend, backend_from = _compile(compile_model, compile_backend, env)
    mode = compile_mode or env.get("ACCELERATE_DYNAMO_MODE") or "default"
    return LaunchSettings(mixed, mixed_from, backend, backend_from, mode)
