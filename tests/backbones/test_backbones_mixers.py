"""The token-mixer contract, once for every mixer in the ``MIXERS`` registry and every mixer
inside every skeleton preset.

The contract (``unimix.backbones.mixers.base``): ``trace(x).output`` equals ``forward(x)``;
``trace(x).affinity @ trace(x).values`` equals ``trace(x).aggregated``, which the mixer computes
by its own fast path (conv, pooling, fused attention...), so the affinity is proven to be what
the mixer applies; ``affinity(x)`` is ``trace(x).affinity``. Mixer-specific truths (explicit
Toeplitz bands, softmax rows, α/β limits) stay in the family test files.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from unimix.backbones import MIXERS, PRESETS, TokenMixer, create_backbone

DIM = 8
SIZES = [(5, 6), (1, 1), (3, 3), (8, 8)]


def _set(mixer: TokenMixer, **values: float) -> TokenMixer:
    """Unequal mixing weights, so both paths of a two-path mixer show in the check."""
    with torch.no_grad():
        for name, value in values.items():
            getattr(mixer, name).fill_(value)
    return mixer


# name -> variant -> builder(H, W); every MIXERS entry must have at least one variant
CASES: dict[str, dict[str, Callable[[int, int], TokenMixer]]] = {
    "pooling": {"3x3": lambda H, W: MIXERS["pooling"](DIM)},
    "dwconv": {
        "k3": lambda H, W: MIXERS["dwconv"](DIM, kernel_size=3),
        "k7": lambda H, W: MIXERS["dwconv"](DIM),
    },
    "sepconv": {"default": lambda H, W: MIXERS["sepconv"](DIM)},
    "mlp": {"tokens": lambda H, W: MIXERS["mlp"](DIM, num_tokens=H * W)},
    "attention": {
        "plain": lambda H, W: MIXERS["attention"](DIM, head_dim=4),
        "rel_pos": lambda H, W: MIXERS["attention"](DIM, head_dim=4, rel_pos=True, rel_pos_base=3),
    },
    "container": {
        "affine": lambda H, W: _set(
            MIXERS["container"](DIM, mode="affine", head_dim=4), alpha=0.7, beta=-0.3
        ),
        "sigmoid": lambda H, W: MIXERS["container"](DIM, mode="sigmoid", head_dim=4),
        "static": lambda H, W: MIXERS["container"](DIM, mode="static", head_dim=4),
    },
    "acmix": {
        "rates": lambda H, W: _set(
            MIXERS["acmix"](12, num_heads=3, window_size=5), rate1=0.8, rate2=0.3
        ),
    },
    "mbconv": {
        "stride1": lambda H, W: MIXERS["mbconv"](DIM),
        "stride2_wider": lambda H, W: MIXERS["mbconv"](DIM, 2 * DIM, stride=2),
    },
}


def _check_contract(mixer: TokenMixer, x: torch.Tensor) -> None:
    with torch.no_grad():
        trace = mixer.trace(x)
        out = mixer(x)
        affinity = mixer.affinity(x)
    B, (H, W) = x.shape[0], x.shape[-2:]
    assert trace.affinity.shape[0] == B and trace.affinity.shape[-1] == H * W
    torch.testing.assert_close(
        trace.affinity @ trace.values, trace.aggregated, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(trace.output, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(affinity, trace.affinity)


def test_every_registered_mixer_has_a_case() -> None:
    assert sorted(CASES) == sorted(MIXERS)
    assert all(issubclass(cls, TokenMixer) for cls in MIXERS.values())


@pytest.mark.parametrize(
    "name, variant", [(name, variant) for name, cases in CASES.items() for variant in cases]
)
@pytest.mark.parametrize("size", SIZES)
def test_registered_mixer_keeps_the_contract(
    name: str, variant: str, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    mixer = CASES[name][variant](*size).eval()
    channels = 12 if name == "acmix" else DIM
    x = torch.randn(2, channels, *size)
    _check_contract(mixer, x)
    if variant != "stride2_wider":
        assert mixer(x).shape == x.shape


def _skeleton_presets() -> list[str]:
    return [n for n, p in PRESETS.items() if p.nano and not n.startswith("deit")]


@pytest.mark.parametrize("name", _skeleton_presets())
def test_every_mixer_inside_a_preset_keeps_the_contract(name: str) -> None:
    """The mixers as the presets wire them (widths, strides, CoAtNet's widening attention), on
    the maps they really see, at two input sizes."""
    torch.manual_seed(0)
    model = create_backbone(name, num_classes=0).eval()
    mixers = [m for m in model.modules() if isinstance(m, TokenMixer)]
    assert mixers, f"{name}: no token mixer found"
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: inputs.__setitem__(i, args[0]))
        for i, m in enumerate(mixers)
    ]
    try:
        for size in (16, 32):
            inputs.clear()
            with torch.no_grad():
                model(torch.randn(1, 3, size, size))
            for i, mixer in enumerate(mixers):
                _check_contract(mixer, inputs[i])
    finally:
        for h in hooks:
            h.remove()
