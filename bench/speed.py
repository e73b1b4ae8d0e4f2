"""Our DINO step's speed over a matrix of settings: where the views are rendered, where JPEGs
are decoded, precision, compilation, batch — no peer, one short run per setting.

Each variant builds our trainer pieces (:class:`~unimix.bench.step_runners.OursRunner`: the
loader, ``DINOStep``) from a :class:`~unimix.bench.throughput.ThroughputSpec` with some fields
replaced, runs ``warmup`` untimed steps (compilation happens there), then times ``steps``
steps. ``scripts/bench_speed.py`` is its command line.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .machine import peak_rss_mib, sync
from .throughput import ThroughputSpec, build_config

__all__ = ["DEFAULT_VARIANTS", "format_speed", "measure_speed", "parse_variant"]

#: The settings an accelerator check compares (``name: field=value,...``).
DEFAULT_VARIANTS = (
    "loader-fp32: placement=loader,precision=fp32",
    "device-fp32: placement=device,precision=fp32",
    "device-bf16: placement=device,precision=bf16",
    "device-bf16-compiled: placement=device,precision=bf16,compile=inductor,compile_mode=reduce-overhead",
)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``"name: field=value,field=value"`` → (name, fields) with values typed like
    :class:`ThroughputSpec`'s fields.

    Raises:
        ValueError: a missing name, an unknown field or a value of the wrong type (one line).
    """
    name, sep, body = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"variant {text!r}: expected 'name: field=value,...'")
    types = {f.name: type(f.default) for f in dataclasses.fields(ThroughputSpec)}
    fields: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"variant {name.strip()!r}: unknown field {key!r} (fields: {known})")
        try:
            if types[key] is bool:
                fields[key] = {"true": True, "false": False}[value.lower()]
            else:
                fields[key] = types[key](value) if types[key] is not type(None) else value
        except (KeyError, ValueError):
            raise ValueError(
                f"variant {name.strip()!r}: {key}={value!r} is not a {types[key].__name__}"
            ) from None
    return name.strip(), fields


def _time_variant(spec: ThroughputSpec) -> dict[str, Any]:
    from ..ssl.engine.launch import resolve_launch
    from ..ssl.engine.runtime import make_accelerator
    from ..ssl.engine.trainer import build_train_dataset
    from .step_runners import OursRunner

    cfg = build_config(spec)
    compiled = bool(spec.compile)
    launch = resolve_launch(
        spec.precision, compiled, spec.compile or "inductor", {}, spec.compile_mode
    )
    accelerator = make_accelerator(launch, spec.threads)
    runner = OursRunner(cfg, build_train_dataset(cfg), accelerator)
    start = time.perf_counter()
    runner.run(spec.warmup)
    sync(accelerator.device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    runner.run(spec.steps)
    sync(accelerator.device)
    seconds = time.perf_counter() - start
    return {
        "img_per_s": spec.steps * spec.batch_size / seconds,
        "step_ms": 1000 * seconds / spec.steps,
        "warmup_s": warmup_s,
        "views_rendered_on": str(runner.render_device),
        "device": str(accelerator.device),
    }


def measure_speed(base: ThroughputSpec, variants: list[str]) -> dict[str, Any]:
    """Time every variant (``"name: field=value,..."`` over ``base``) one after another;
    returns the JSON report. Prints a line per variant."""
    rows = []
    for text in variants:
        name, fields = parse_variant(text)
        spec = dataclasses.replace(base, **fields)
        result = _time_variant(spec)
        rows.append({"name": name, "settings": fields, **result})
        print(f"{name}: {result['img_per_s']:.0f} img/s ({result['warmup_s']:.0f} s warm-up)")
    return {
        "base": dataclasses.asdict(base),
        "rows": rows,
        "peak_rss_mib": peak_rss_mib(),
        "torch": torch.__version__,
    }


def format_speed(report: dict[str, Any]) -> str:
    """A header line and one table row per variant (img/s, ms per step, warm-up)."""
    b = report["base"]
    header = (
        f"our DINO step, {b['backbone'] or 'poolformer_nano'}, batch {b['batch_size']}, crops "
        f"2×{b['global_size']}px + {b['num_local']}×{b['local_size']}px, {b['steps']} timed "
        f"steps after {b['warmup']}, {b['num_workers']} loader worker(s), data {b['data']}"
    )
    lines = [header, f"{'variant':<28} {'img/s':>9} {'ms/step':>8} {'warm-up s':>10}  views on"]
    for r in report["rows"]:
        lines.append(
            f"{r['name']:<28} {r['img_per_s']:>9.0f} {r['step_ms']:>8.1f} "
            f"{r['warmup_s']:>10.1f}  {r['views_rendered_on']}"
        )
    return "\n".join(lines)
