"""Tensor-train (TT) layers and a network of them (Novikov, Podoprikhin, Osokin & Vetrov 2015, "Tensorizing
Neural Networks").

A TT layer's weight W[(i_1…i_d), (o_1…o_d)] is a train of cores G_k[r_{k−1}, i_k, o_k, r_k] (r_0 = r_d = 1);
the layer never forms W. As in the common TT-layer implementations (t3nsor, TensorLy-Torch's TT matrices), the
input, reshaped to its modes, is contracted with one core at a time — one einsum per core, each followed by a
reshape that moves on to the next input mode:

    t[b, o_<k, r_{k−1}, i_k, i_>k] · G_k[r_{k−1}, i_k, o_k, r_k]  →  t[b, o_<k, o_k, r_k, i_>k].

Default network (`tt_net`): a 32×32 image flattened to 1024 = 4·8·8·4 → TT 4096 = 8·8·8·8 → ReLU → TT 4096 →
ReLU → Linear 10, TT-rank 8, batch 256 — Novikov et al.'s setting of wide TT hidden layers at small rank.
Cores are Gaussian with equal variances whose product makes Var(W) = 2/in_features (He initialisation).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class TTLinear(nn.Module):
    """`x [B, prod(in_modes)] -> x·W + bias [B, prod(out_modes)]` with W in TT format of the given ranks."""

    def __init__(self, in_modes: Sequence[int], out_modes: Sequence[int], rank: int | Sequence[int]):
        super().__init__()
        if len(in_modes) != len(out_modes) or len(in_modes) < 2:
            raise ValueError(f"in_modes {tuple(in_modes)} and out_modes {tuple(out_modes)} must have one equal "
                             "length of at least 2")
        inner_ranks = [rank] * (len(in_modes) - 1) if isinstance(rank, int) else list(rank)
        if len(inner_ranks) != len(in_modes) - 1:
            raise ValueError(f"{len(in_modes)} cores need {len(in_modes) - 1} inner ranks, got {len(inner_ranks)}")
        self.in_modes, self.out_modes = tuple(in_modes), tuple(out_modes)
        self.in_features, self.out_features = math.prod(in_modes), math.prod(out_modes)
        ranks = [1, *inner_ranks, 1]
        # Var(W) = Π_k σ_k² · Π inner ranks; equal σ_k give Var(W) = 2 / in_features.
        std = (2 / (self.in_features * math.prod(inner_ranks))) ** (1 / (2 * len(in_modes)))
        self.cores = nn.ParameterList(
            nn.Parameter(torch.randn(ranks[k], in_modes[k], out_modes[k], ranks[k + 1]) * std)
            for k in range(len(in_modes)))
        bound = 1 / math.sqrt(self.in_features)
        self.bias = nn.Parameter(torch.empty(self.out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        # t[b, outputs so far, rank, current input mode, remaining input modes]
        t = x.reshape(-1, 1, 1, self.in_modes[0], self.in_features // self.in_modes[0])
        produced, remaining = 1, self.in_features // self.in_modes[0]
        for k, core in enumerate(self.cores):
            t = torch.einsum("borjz,rjms->bomsz", t, core)
            produced *= self.out_modes[k]
            if k + 1 < len(self.cores):
                next_mode = self.in_modes[k + 1]
                t = t.reshape(-1, produced, core.shape[-1], next_mode, remaining // next_mode)
                remaining //= next_mode
        return t.reshape(-1, self.out_features) + self.bias


class TTNet(nn.Module):
    """TT layers with ReLU between them, then a dense classifier: `x [B, prod(modes[0])] -> logits`."""

    def __init__(self, modes: Sequence[Sequence[int]] = ((4, 8, 8, 4), (8, 8, 8, 8), (8, 8, 8, 8)), rank: int = 8,
                 num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for in_modes, out_modes in zip(modes, modes[1:]):
            layers += [TTLinear(in_modes, out_modes, rank), nn.ReLU()]
        layers.append(nn.Linear(math.prod(modes[-1]), num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
