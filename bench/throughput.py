"""DINO step throughput: unimix's trainer next to lightly's documented DINO example loop.

Both sides train the same backbone with the same head sizes, batch size, crops, thread count and
DataLoader workers, starting from the same weights (:mod:`unimix.bench.step_runners`). They run
in one process, alternating in rounds (ours, lightly, ours, lightly, …) so that machine drift
hits both alike. The report gives source images/s, the ratio, the share of the peak FLOP/s
of the precision measured in the same run (:mod:`unimix.bench.machine`) and peak RSS. ``scripts/bench_train.py``
is its command line.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .machine import peak_matmul_flops, peak_rss_mib, sync
from .step_runners import LightlyRunner, OursRunner

__all__ = ["DEFAULT_NANO", "ThroughputSpec", "build_config", "format_throughput", "measure"]

DEFAULT_NANO = "poolformer_nano"


@dataclass
class ThroughputSpec:
    """One throughput measurement; the fields are ``scripts/bench_train.py``'s options."""

    backbone: str | None = None  # preset or timm name (None: DEFAULT_NANO)
    data: str = "synthetic"  # 'synthetic', 'cifar10' or a folder path
    num_samples: int = 4096  # synthetic only
    batch_size: int = 128
    global_size: int = 32
    local_size: int = 16
    num_local: int = 6  # local crops per image (lightly's DINOTransform and example)
    out_dim: int = 1024  # head output dim (both sides)
    hidden_dim: int = 512
    bottleneck_dim: int = 64
    steps: int = 8  # timed steps per side per round
    warmup: int = 2  # untimed steps per side first
    rounds: int = 3
    num_workers: int = 1  # DataLoader workers (both sides)
    threads: int = 0  # torch threads (0: torch's default)
    precision: str = "fp32"  # fp32 or bf16 (autocast), both sides
    compile: str = ""  # torch.compile backend for our student and teacher ("": eager)
    compile_mode: str = "default"  # torch.compile mode (reduce-overhead: CUDA graphs)
    placement: str = "auto"  # where our views are rendered (augment.placement)
    decode: str = "loader"  # where our JPEG files are decoded (data.decode)
    cache: bool = False  # a folder's images decoded once into RAM (data.cache)
    out: str = "bench_train.json"  # JSON report path


def build_config(spec: ThroughputSpec) -> Any:
    """The quickstart recipe with ``spec``'s backbone, data, batch, crops and head sizes."""
    from ..ssl.config import load_pretrain_config

    overrides = [
        f"model.backbone={spec.backbone or DEFAULT_NANO}",
        f"data.batch_size={spec.batch_size}",
        f"data.num_workers={spec.num_workers}",
        f"augment.global_size={spec.global_size}",
        f"augment.local_size={spec.local_size}",
        f"augment.num_local={spec.num_local}",
        f"augment.placement={spec.placement}",
        f"data.decode={spec.decode}",
        f"model.head.out_dim={spec.out_dim}",
        f"model.head.hidden_dim={spec.hidden_dim}",
        f"model.head.bottleneck_dim={spec.bottleneck_dim}",
        "epochs=100",
    ]
    if spec.data == "synthetic":
        overrides += ["data.dataset=synthetic", f"data.num_samples={spec.num_samples}"]
        overrides += [f"data.image_size={spec.global_size}"]
    else:
        overrides += [f"data.dataset={spec.data}", f"data.cache={str(spec.cache).lower()}"]
    return load_pretrain_config("quickstart", overrides)


def _runners(
    cfg: Any, dataset: Any, accelerator: Any, bf16: bool
) -> tuple[dict[str, Any], nn.Module, float]:
    """Both runners from the same initial weights; also the backbone and one step's FLOPs."""
    from ..backbones import create_dino_backbone

    ours = OursRunner(cfg, dataset, accelerator)
    step_flops = ours.count_flops()
    torch.manual_seed(cfg.seed)
    backbone = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    backbone.load_state_dict(accelerator.unwrap_model(ours.step_fn.student).backbone.state_dict())
    theirs = LightlyRunner(cfg, dataset, backbone, accelerator.device, bf16=bf16)
    return {"unimix": ours, "lightly": theirs}, backbone, step_flops


def _alternate(
    runners: dict[str, Any], spec: ThroughputSpec, device: torch.device
) -> tuple[dict[str, list[float]], float]:
    """Warm both up, then time ``spec.rounds`` rounds of ``spec.steps`` steps each, in turn;
    returns each runner's round seconds and the peak RSS after warm-up (MiB)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner.run(spec.warmup)
        sync(device)
    rss_after_warmup = peak_rss_mib()
    for r in range(spec.rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(spec.steps)
            sync(device)
            times[name].append(time.perf_counter() - start)
        print(
            f"round {r + 1}/{spec.rounds}: "
            + ", ".join(
                f"{n} {spec.steps * spec.batch_size / t[-1]:.1f} img/s" for n, t in times.items()
            ),
            flush=True,
        )
    return times, rss_after_warmup


def measure(spec: ThroughputSpec) -> dict[str, Any]:
    """Time both loops as ``spec`` says; returns the JSON report (img/s, ratio vs lightly, % of
    peak fp32, step FLOPs, round seconds, peak RSS …). Prints progress."""
    from ..ssl.engine.launch import resolve_launch
    from ..ssl.engine.runtime import make_accelerator
    from ..ssl.engine.trainer import build_train_dataset

    if spec.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected fp32 or bf16, got {spec.precision!r}")
    cfg = build_config(spec)
    # As a run makes it (precision, threads, on CPU the allocator that keeps freed memory):
    # both loops share this process, so both get the same.
    accelerator = make_accelerator(
        resolve_launch(spec.precision, False, "inductor", {}), spec.threads
    )
    device, bf16 = accelerator.device, spec.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    dataset = build_train_dataset(cfg)
    print(
        f"peak {spec.precision} matmul on {device}, {torch.get_num_threads()} threads …", flush=True
    )
    peak = peak_matmul_flops(device, dtype=dtype)
    runners, backbone, step_flops = _runners(cfg, dataset, accelerator, bf16)
    if spec.compile:  # after the FLOP count, which needs the eager model
        ours = runners["unimix"].step_fn
        kwargs = {"backend": spec.compile, "mode": spec.compile_mode}
        ours.student = torch.compile(ours.student, **kwargs)
        ours.teacher_forward = torch.compile(ours.teacher, **kwargs)
        print(f"compiling our student and teacher ({spec.compile}, {spec.compile_mode}) …")
    times, rss_after_warmup = _alternate(runners, spec, device)
    # Measured again at the end, the higher counts: a shared machine's speed drifts, and a peak
    # caught in a slow moment would flatter both loops' share of it.
    peak = max(peak, peak_matmul_flops(device, dtype=dtype))
    images = spec.steps * spec.batch_size * spec.rounds
    rate = {n: images / sum(t) for n, t in times.items()}
    flops_per_image = step_flops / spec.batch_size
    return {
        "config": asdict(spec) | {"backbone": cfg.model.backbone},
        "device": str(device),
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "backbone_params": sum(p.numel() for p in backbone.parameters()),
        "precision": spec.precision,
        "peak_flops": peak,
        "views_rendered_on": str(runners["unimix"].render_device),
        "step_flops": step_flops,
        "img_per_s": rate,
        "ratio_vs_lightly": rate["unimix"] / rate["lightly"],
        "percent_of_peak": {n: 100 * (rate[n] * flops_per_image / peak) for n in runners},
        "round_seconds": times,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_mib_after_warmup": rss_after_warmup,
        "note": "both loops share one process, so peak RSS covers both",
        "torch": torch.__version__,
    }


def format_throughput(report: dict[str, Any]) -> str:
    """The report as a header line, a table (img/s, vs lightly, % peak fp32) and a footer."""
    c, rate = report["config"], report["img_per_s"]
    batch = c["batch_size"]
    precision = report.get("precision", "fp32")
    header = (
        f"DINO step, {c['backbone']} ({report['backbone_params'] / 1e6:.2f} M params), batch "
        f"{batch}, crops 2×{c['global_size']}px + {c['num_local']}×{c['local_size']}px, "
        f"{precision}, {report['threads']} threads, {c['num_workers']} loader worker(s), "
        f"{report['device']}, our views rendered on {report.get('views_rendered_on', 'cpu')}"
    )
    peak_col = f"% peak {precision}"
    lines = [header, f"{'loop':<10} {'img/s':>8} {'vs lightly':>11} {peak_col:>12}"]
    for name, r in rate.items():
        ratio, mfu = r / rate["lightly"], report["percent_of_peak"][name]
        lines.append(f"{name:<10} {r:>8.1f} {ratio:>10.2f}× {mfu:>11.1f}%")
    step_flops = report["step_flops"]
    lines.append(
        f"peak {precision} {report['peak_flops'] / 1e9:.0f} GFLOP/s; one step "
        f"{step_flops / 1e9:.2f} GFLOP ({step_flops / batch / 1e6:.1f} MFLOP/image); "
        f"peak RSS {report['peak_rss_mib']:.0f} MiB"
    )
    return "\n".join(lines)
