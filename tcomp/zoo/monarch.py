"""Monarch matrices and an MLP built from them (Dao et al. 2022, "Monarch: Expressive Structured Matrices for
Efficient and Accurate Training").

A Monarch matrix is M = P L P R: R block-diagonal with k blocks, a fixed permutation, L block-diagonal again.
With the input split as i = (i1, i2) (k blocks of p) and the output as o = (o1, j) (s rows of q), it is the
network `y[b, o1, j] = Σ_{i1,i2} x[b, i1, i2] · R[i1, j, i2] · L[j, o1, i1]` — einsum 'bki,kji,jlk->blj'. As in
the reference `blockdiag_butterfly_multiply`, it is evaluated as two batched matrix products (`torch.bmm`)
joined by transposes that realise the permutations.

Default network (`monarch_mlp`): a 1024-wide residual MLP, 4 blocks of LayerNorm → Monarch 1024→4096 → GELU →
Monarch 4096→1024 (k = 32 blocks; R, L blocks of 32×32 / 128×32), then LayerNorm and a dense 10-way
classifier, batch 256: each Monarch layer has 25× fewer parameters and multiply-adds than its dense counterpart.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MonarchLinear(nn.Module):
    """`x [B, in_features] -> x Mᵀ + bias [B, out_features]`, M a Monarch matrix with `nblocks` blocks.

    R: [nblocks, nblocks, in/nblocks] (block i1 maps its in/nblocks inputs to nblocks values j),
    L: [nblocks, out/nblocks, nblocks] (block j maps the values from every i1 to out/nblocks outputs o1);
    output feature o1·nblocks + j.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int):
        super().__init__()
        if in_features % nblocks or out_features % nblocks:
            raise ValueError(f"in_features {in_features} and out_features {out_features} must be multiples of "
                             f"nblocks {nblocks}")
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        in_block, out_block = in_features // nblocks, out_features // nblocks
        # Var(y) = nblocks·Var(L) · in_block·Var(R) · Var(x): unit gain, like a variance-preserving dense layer.
        self.R = nn.Parameter(torch.randn(nblocks, nblocks, in_block) / math.sqrt(in_block))
        self.L = nn.Parameter(torch.randn(nblocks, out_block, nblocks) / math.sqrt(nblocks))
        bound = 1 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        k = self.nblocks
        h = x.reshape(-1, k, self.in_features // k).transpose(0, 1)  # [i1, B, i2]
        h = torch.bmm(h, self.R.transpose(1, 2))                     # [i1, B, j]: block-diagonal R
        h = h.permute(2, 1, 0)                                       # [j, B, i1]: the Monarch permutation
        y = torch.bmm(h, self.L.transpose(1, 2))                     # [j, B, o1]: block-diagonal L
        return y.permute(1, 2, 0).reshape(-1, self.out_features) + self.bias


class MonarchBlock(nn.Module):
    """x + down(GELU(up(LayerNorm(x)))), both projections Monarch."""

    def __init__(self, dim: int, hidden: int, nblocks: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = MonarchLinear(dim, hidden, nblocks)
        self.act = nn.GELU()
        self.down = MonarchLinear(hidden, dim, nblocks)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(self.act(self.up(self.norm(x))))


class MonarchMLP(nn.Module):
    """`forward(x [B, dim]) -> logits [B, num_classes]`: residual Monarch blocks, LayerNorm, dense classifier."""

    def __init__(self, dim: int = 1024, hidden: int = 4096, depth: int = 4, nblocks: int = 32,
                 num_classes: int = 10):
        super().__init__()
        self.blocks = nn.Sequential(*(MonarchBlock(dim, hidden, nblocks) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(x)))
