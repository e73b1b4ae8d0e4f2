"""Parameters and compute of every preset: the rows of ``unimix backbones``.

Parameters are counted with a 1000-class head, as the papers do. Compute is measured by running
the model once on a ``[1, 3, S, S]`` input under ``torch.utils.flop_counter.FlopCounterMode``
(``S`` = 224, or 32 for nano presets) and is reported in **GMACs** (multiply-accumulates =
FLOPs / 2, the unit timm and the papers quote). Counted: convolutions, linear layers, matrix
products, and fused attention (``scaled_dot_product_attention``; on CPU torch does not count it,
so we add its formula). Not counted: element-wise ops, norms, softmax, pooling, and
hand-written kernels (ACmix's window attention), as in fvcore/timm tables. The column
``GMACs excl. SDPA`` leaves fused attention out: that is what the timm-measured anchors
(``deit_small`` 4.24, ``coatnet_0`` 4.39, ``caformer_s18`` 3.88) count, so compare with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .registry import PREFIX, PRESETS

__all__ = ["count_gmacs", "format_table", "preset_stats"]

_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch registers SDPA FLOP formulas for its CUDA kernels only; the CPU kernel is the same maths
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_gmacs(model: torch.nn.Module, image_size: int, in_chans: int = 3) -> tuple[float, float]:
    """``(GMACs, GMACs excluding fused attention)`` of one forward pass on ``[1, C, S, S]``."""
    x = torch.randn(1, in_chans, image_size, image_size)
    counter = FlopCounterMode(display=False, custom_mapping={_CPU_SDPA: _cpu_sdpa_flops})
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    sdpa = sum(
        flops
        for op, flops in counter.get_flop_counts().get("Global", {}).items()
        if "scaled_dot_product" in str(op)
    )
    return total / 2e9, (total - sdpa) / 2e9


def preset_stats(name: str, flops: bool = True) -> dict[str, Any]:
    """One table row: params (M, 1000-class head), GMACs at the preset's size, anchors, diff %."""
    preset = PRESETS[name]
    torch.manual_seed(0)
    model = timm.create_model(PREFIX + name, num_classes=1000)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    headless = timm.create_model(PREFIX + name, num_classes=0)
    headless_m = sum(p.numel() for p in headless.parameters()) / 1e6
    row: dict[str, Any] = {
        "preset": name,
        "family": preset.family,
        "params_m": round(params_m, 6),
        "headless_params_m": round(headless_m, 6),
        "anchor_params_m": preset.anchor_params_m,
        "params_diff_pct": None,
        "image_size": preset.image_size,
        "gmacs": None,
        "gmacs_excl_sdpa": None,
        "anchor_gmacs": preset.anchor_gmacs,
        "anchor_source": preset.anchor_source,
    }
    if preset.anchor_params_m:
        diff = 100.0 * (params_m - preset.anchor_params_m) / preset.anchor_params_m
        row["params_diff_pct"] = round(diff, 2)
    if flops:
        gmacs, gmacs_excl = count_gmacs(model, preset.image_size)
        row["gmacs"], row["gmacs_excl_sdpa"] = round(gmacs, 6), round(gmacs_excl, 6)
    return row


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of :func:`preset_stats` rows."""
    header = (
        "preset",
        "family",
        "params M",
        "headless M",
        "anchor M",
        "diff %",
        "px",
        "GMACs",
        "GMACs excl. SDPA",
        "anchor GMACs",
        "anchor source",
    )
    lines = [
        (
            r["preset"],
            r["family"],
            _fmt(r["params_m"], ".2f"),
            _fmt(r["headless_params_m"], ".2f"),
            _fmt(r["anchor_params_m"]),
            _fmt(r["params_diff_pct"], "+.2f"),
            str(r["image_size"]),
            _fmt(r["gmacs"], ".3f"),
            _fmt(r["gmacs_excl_sdpa"], ".3f"),
            _fmt(r["anchor_gmacs"]),
            r["anchor_source"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    numeric = {2, 3, 4, 5, 6, 7, 8, 9}

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [render(header), render(["-" * w for w in widths])]
    out += [render(line) for line in lines]
    out += [
        "",
        "params: 1000-class head ('headless M': num_classes=0, what DINO trains). GMACs = FLOPs/2 from torch FlopCounterMode, one image at `px`",
        "(conv, linear, matmul, fused attention; element-wise ops and ACmix's hand-written window",
        "attention not counted). timm-measured anchors leave CPU fused attention out: compare them",
        "with 'GMACs excl. SDPA'.",
    ]
    return "\n".join(out)
