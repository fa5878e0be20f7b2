"""Structured linear layers to train from scratch: dense, low-rank, Monarch, Block Tensor-Train and Kronecker.

``Linear(d_in, d_out, structure=..., **structure_params)`` holds the factors of its weight as trainable
parameters, in the layouts of :mod:`tcomp.approx.factorize` (so :meth:`Linear.to_network` is the same
FactorNetwork a factorization returns), and its forward pass multiplies by the factors — the dense weight is
never formed. :meth:`Linear.from_dense` projects a trained ``nn.Linear`` onto the structure with the closed-form
factorizations.

Structures and their parameters (d_out × d_in weight):

- ``"dense"``: none. ``"lowrank"``: ``rank``, ``U[o,r]·V[r,i]``.
- ``"monarch"``: ``blocks`` (int b, or a pair (b_out, b_in)); ``"btt"``: ``blocks`` and ``rank``. Block counts must
  divide the dimensions (see tcomp/approx/factorize/monarch.py); the default is, per side, the divisor of the dimension
  nearest its square root, the choice that makes both block-diagonal factors about equally large.
- ``"kronecker"``: ``terms`` and ``a_shape`` (the shape (o, i) of the first Kronecker factor), by default the
  near-square-root divisors too.

Initialisation (Qiu, Potapczynski, Finzi, Goldblum & Wilson, "Compute Better Spent: Replacing Dense Layers with
Structured Matrices", ICML 2024, §4): structure-aware µP. Every factor is a batch of dense maps with its own fan-in
``d_in`` and fan-out ``d_out`` — for BTT, R maps a block of ``k`` inputs to ``b_out·r`` intermediate values and L
maps ``b_in·r`` of those to ``d_out/b_out`` outputs; a rank or term index counts as fan-out of the first factor
and fan-in of the second, as in a tensor train. Each factor is drawn from ``N(0, σ²)`` with
``σ = d_in^{-1/2}·min(1, (d_out/d_in)^{1/2})``, the spectral-condition scale (Yang, Simon & Bernstein 2023) that
gives a factor spectral norm ``Θ((d_out/d_in)^{1/2})``: each factor changes the RMS of what passes through it by
``min(1, (d_out/d_in)^{1/2})``, independently of the width, which is the µP property, for every structure alike.
An init from the layer's outer ``d_in``/``d_out`` alone (PyTorch's default) does not see the block sizes and
ranks, so the output scale would drift with them. The bias starts at zero. (The paper also scales each factor's
learning rate; that belongs to the optimiser and is not done here.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .factorize import btt, kronecker, monarch, truncated_svd
from tcomp.approx.factorize.kronecker import kronecker_network, kronecker_split
from tcomp.approx.factorize.lowrank import check_rank, low_rank_network
from tcomp.approx.factorize.monarch import block_counts, block_network, check_block_rank
from tcomp.approx.factorize.network import FactorNetwork

STRUCTURES = ("dense", "lowrank", "monarch", "btt", "kronecker")

_PARAMETERS = {"dense": (), "lowrank": ("rank",), "monarch": ("blocks",), "btt": ("blocks", "rank"),
               "kronecker": ("terms", "a_shape")}
_REQUIRED = {"rank", "terms"}


def near_sqrt_divisor(n: int) -> int:
    """The divisor of ``n`` nearest ``√n`` (the smaller one on a tie)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - math.sqrt(n)), d))


def mup_std(fan_in: int, fan_out: int) -> float:
    """The spectral-condition init scale ``fan_in^{-1/2}·min(1, (fan_out/fan_in)^{1/2})``."""
    return fan_in ** -0.5 * min(1.0, math.sqrt(fan_out / fan_in))


class Linear(nn.Module):
    """``y = x·Wᵀ + b`` with W a structured matrix held as trainable factors (see the module doc)."""

    def __init__(self, d_in: int, d_out: int, structure: str = "dense", bias: bool = True, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, **structure_params):
        super().__init__()
        if not all(isinstance(d, int) and d >= 1 for d in (d_in, d_out)):
            raise ValueError(f"d_in and d_out must be positive integers, got {d_in!r} and {d_out!r}")
        if structure not in STRUCTURES:
            raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")
        allowed = _PARAMETERS[structure]
        unexpected = set(structure_params) - set(allowed)
        if unexpected:
            raise ValueError(f"structure {structure!r} takes {list(allowed) or 'no parameters'}, "
                             f"not {sorted(unexpected)}")
        missing = [name for name in allowed if name in _REQUIRED and name not in structure_params]
        if missing:
            raise ValueError(f"structure {structure!r} needs {missing}")
        self.d_in, self.d_out, self.structure = d_in, d_out, structure
        self.params, shapes = self._layout(structure_params)
        factory = {"device": device, "dtype": dtype}
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(shape, **factory) * mup_std(fan_in, fan_out))
            for shape, fan_in, fan_out in shapes)
        self.bias = nn.Parameter(torch.zeros(d_out, **factory)) if bias else None

    def _layout(self, given: dict) -> tuple[dict, list[tuple[tuple[int, ...], int, int]]]:
        """The normalised parameters, and per factor its shape, fan-in and fan-out."""
        d_in, d_out = self.d_in, self.d_out
        if self.structure == "dense":
            return {}, [((d_out, d_in), d_in, d_out)]
        if self.structure == "lowrank":
            rank = given["rank"]
            check_rank(rank, d_out, d_in)
            return {"rank": rank}, [((d_out, rank), rank, d_out), ((rank, d_in), d_in, rank)]
        if self.structure in ("monarch", "btt"):
            default = (near_sqrt_divisor(d_out), near_sqrt_divisor(d_in))
            b_out, b_in = block_counts(d_out, d_in, given.get("blocks", default))
            o, k = d_out // b_out, d_in // b_in
            rank = given.get("rank", 1)
            check_block_rank(d_out, d_in, b_out, b_in, rank)
            params = {"blocks": (b_out, b_in)} | ({"rank": rank} if self.structure == "btt" else {})
            left_shape, right_shape = (b_out, o, b_in, rank), (b_in, b_out, rank, k)
            if self.structure == "monarch":
                left_shape, right_shape = (b_out, o, b_in), (b_in, b_out, k)
            return params, [(left_shape, b_in * rank, o), (right_shape, k, b_out * rank)]
        a_shape = given.get("a_shape", (near_sqrt_divisor(d_out), near_sqrt_divisor(d_in)))
        terms = given["terms"]
        o, i, p, j = kronecker_split(d_out, d_in, terms, a_shape)
        return {"terms": terms, "a_shape": (o, i)}, [((o, terms, i), i, o * terms), ((p, terms, j), terms * j, p)]

    def to_network(self) -> FactorNetwork:
        """The weight as a FactorNetwork whose factors are this layer's parameters (Monarch: views of them)."""
        factors = list(self.factors)
        if self.structure == "dense":
            return FactorNetwork("dense", {}, factors, ["oi"], [("o",), ("i",)], {"o": self.d_out, "i": self.d_in})
        if self.structure == "lowrank":
            return low_rank_network("lowrank", self.params, *factors, [], factors[0].dtype)
        if self.structure == "kronecker":
            return kronecker_network(self.params, *factors)
        left, right = factors
        if self.structure == "monarch":
            left, right = left.unsqueeze(3), right.unsqueeze(2)
        return block_network(self.structure, self.params, left, right)

    @classmethod
    def from_dense(cls, linear: nn.Linear, structure: str = "lowrank", **structure_params) -> "Linear":
        """The best approximation of ``linear`` in Frobenius norm with this structure (closed-form projection)."""
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, structure, linear.bias is not None,
                    device=weight.device, dtype=weight.dtype, **structure_params)
        params = layer.params
        if structure == "dense":
            factors = [weight]
        elif structure == "lowrank":
            factors = truncated_svd(weight, params["rank"]).factors
        elif structure == "monarch":
            factors = monarch(weight, params["blocks"]).factors
        elif structure == "btt":
            factors = btt(weight, params["blocks"], params["rank"]).factors
        else:
            factors = kronecker(weight, params["terms"], params["a_shape"]).factors
        with torch.no_grad():
            for parameter, factor in zip(layer.factors, factors):
                parameter.copy_(factor)
            if layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"expected inputs with {self.d_in} features, got shape {tuple(x.shape)}")
        rows = x.reshape(-1, self.d_in)
        if self.structure == "dense":
            y = F.linear(rows, self.factors[0])
        elif self.structure == "lowrank":
            y = F.linear(F.linear(rows, self.factors[1]), self.factors[0])
        elif self.structure == "kronecker":
            y = self._kronecker(rows)
        else:
            y = self._blocks(rows)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.d_out)

    def _blocks(self, rows: torch.Tensor) -> torch.Tensor:
        """Monarch/BTT: a batched GEMM per block-diagonal factor, with the Monarch permutation between them."""
        left, right = self.factors
        if self.structure == "monarch":
            left, right = left.unsqueeze(3), right.unsqueeze(2)
        b_out, o, b_in, rank = left.shape
        k, n = right.shape[3], rows.shape[0]
        blocks_in = rows.reshape(n, b_in, k).transpose(0, 1)  # [i1, n, k]
        middle = torch.bmm(blocks_in, right.reshape(b_in, b_out * rank, k).transpose(1, 2))  # [i1, n, j·r]
        middle = middle.reshape(b_in, n, b_out, rank).permute(2, 1, 0, 3).reshape(b_out, n, b_in * rank)
        out = torch.bmm(middle, left.reshape(b_out, o, b_in * rank).transpose(1, 2))  # [j, n, o]
        return out.permute(1, 2, 0).reshape(n, self.d_out)

    def _kronecker(self, rows: torch.Tensor) -> torch.Tensor:
        """``Σ_t (A_t ⊗ B_t)·x`` as two GEMMs: A on the input's outer index, then B on (term, inner index)."""
        a, b = self.factors
        o, terms, i = a.shape
        p, _, j = b.shape
        n = rows.shape[0]
        outer_first = rows.reshape(n, i, j).transpose(0, 1).reshape(i, n * j)
        partial = (a.reshape(o * terms, i) @ outer_first).reshape(o, terms, n, j)  # [o, t, n, j]
        partial = partial.permute(2, 0, 1, 3).reshape(n * o, terms * j)
        return F.linear(partial, b.reshape(p, terms * j)).reshape(n, self.d_out)

    def extra_repr(self) -> str:
        params = "".join(f", {name}={value}" for name, value in self.params.items())
        bias = self.bias is not None
        return f"d_in={self.d_in}, d_out={self.d_out}, structure={self.structure!r}{params}, bias={bias}"
