"""The training objective: DINO's loss plus weighted regularisers, every one a named term.

``Objective(inputs)`` returns ``(total, terms)``: ``total = terms["dino"] + Σ w_t · terms[t]``,
``terms`` the unweighted values. The step backpropagates ``total`` and reports ``terms``; the
metrics record and every tracker log whatever terms arrive. A new regulariser is one entry of
:data:`TERMS` (its weight read from the config; a weight of 0 leaves it out of the step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .koleo import koleo_loss
from .loss import DINOLoss

__all__ = ["TERMS", "Objective", "ObjectiveInputs", "Term", "build_objective"]


@dataclass(frozen=True)
class ObjectiveInputs:
    """What every term of one micro-batch can read."""

    student_out: torch.Tensor  # [V, B, K] student head outputs, globals first
    teacher_out: torch.Tensor  # [2, B, K] teacher head outputs of the global views
    features: torch.Tensor | None  # [V·B, D] student backbone features, view-major
    batch: int  # B, source images of the micro-batch
    teacher_temp: float  # this step's teacher temperature


@dataclass(frozen=True)
class Term:
    """A regulariser: its weight from the run's config, and its unweighted value."""

    weight: Callable[[Any], float]  # PretrainConfig -> weight; 0 turns the term off
    value: Callable[[ObjectiveInputs], torch.Tensor]  # -> scalar
    needs_features: bool = True  # the student returns its backbone features for it


def _koleo(x: ObjectiveInputs) -> torch.Tensor:
    """DINOv2: KoLeo over the batch of each global view's features, summed over the views."""
    assert x.features is not None
    return sum(koleo_loss(f) for f in x.features[: 2 * x.batch].chunk(2))


#: The regularisers the config can switch on, by the name they are logged under.
TERMS: dict[str, Term] = {"koleo": Term(lambda cfg: cfg.dino.koleo_weight, _koleo)}


class Objective:
    """``dino_loss`` plus ``terms`` (name -> (weight, term)), in that order."""

    def __init__(self, dino_loss: DINOLoss, terms: Mapping[str, tuple[float, Term]]) -> None:
        self.dino_loss, self.terms = dino_loss, dict(terms)
        self.needs_features = any(term.needs_features for _, term in self.terms.values())

    def __call__(self, x: ObjectiveInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, terms)``: scalars, ``terms["dino"]`` first, then each term unweighted."""
        terms = {"dino": self.dino_loss(x.student_out, x.teacher_out, x.teacher_temp)}
        total = terms["dino"]
        for name, (weight, term) in self.terms.items():
            terms[name] = term.value(x)
            total = total + weight * terms[name]
        return total, terms


def build_objective(cfg: Any, dino_loss: DINOLoss) -> Objective:
    """The objective ``cfg`` asks for: DINO's loss and every term of :data:`TERMS` whose weight
    is not 0."""
    chosen = {name: (w, term) for name, term in TERMS.items() if (w := term.weight(cfg))}
    return Objective(dino_loss, chosen)
