"""A plain multilayer perceptron: Linear → LayerNorm → GELU blocks and a linear classifier.

The default is the classic MNIST-sized network 784 → 1024 → 1024 → 10 (flattened 28×28 inputs), with
LayerNorm (Ba et al. 2016) before the GELU (Hendrycks & Gimpel 2016) of every hidden layer.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """`in_features` → each width in `hidden` (Linear, LayerNorm, GELU) → `num_classes` logits."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (1024, 1024), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for next_width in hidden:
            layers += [nn.Linear(width, next_width), nn.LayerNorm(next_width), nn.GELU()]
            width = next_width
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
