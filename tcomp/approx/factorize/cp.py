"""CP decomposition by alternating least squares with a bound on the norm of the rank-one terms.

CP writes a tensor as a sum of R rank-one terms, ``T ≈ Σ_r a_r ∘ b_r ∘ c_r ∘ …``; for a conv weight
``W[o,c,kh,kw]`` the four factors are a 1×1 conv, a k×1 and a 1×k depthwise conv and a 1×1 conv (Lebedev et al.,
ICLR 2015). Plain ALS is known to degenerate: when T has no best rank-R approximation (its border rank is below
its rank), the iterates drive two or more terms to ever larger norms that nearly cancel, the error creeping down
while the factors blow up — useless for a network that is then fine-tuned or run in low precision.

The safeguard follows Phan et al. ("Stable Low-rank Tensor Decomposition for Compression of Convolutional Neural
Network", ECCV 2020; and Phan, Tichavský & Cichocki, "Error Preserving Correction: A Method for CP Decomposition
at a Target Error Bound", IEEE TSP 2019), who keep the CP model stable by limiting the size of its rank-one terms.
EPC minimises the terms' norm at a fixed error; this module implements the dual form, which minimises the error
at a fixed norm:

    minimise ‖T − Σ_r λ_r·(unit a_r ∘ b_r ∘ …)‖_F   subject to   (Σ_r λ_r²)^{1/2} ≤ max_norm·‖T‖_F.

The feasible set is compact, so a best approximation always exists and no component can diverge. Each ALS step
updates one factor with every other factor's columns normalised to unit length; then ``λ_r`` is the norm of the
updated factor's column r, and the bound becomes a ball constraint on that factor, ``‖A‖_F ≤ c``. That step is a
trust-region least-squares problem, solved exactly: ``A(μ) = F·(G + μI)⁻¹`` with ``F`` the MTTKRP and ``G`` the
Hadamard product of the other factors' Gram matrices; ``μ = 0`` (the least-norm least-squares solution) when it is
inside the ball, otherwise the ``μ > 0`` with ``‖A(μ)‖_F = c``, found by Newton's method on the secular equation
``1/‖A(μ)‖ = 1/c`` safeguarded by bisection (Moré & Sorensen 1983). Every step solves its block exactly over the
feasible set, so the error never increases. ``max_norm=None`` gives plain ALS.
"""
from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

import opt_einsum
import torch

from .network import FactorNetwork, working_dtype
from .tucker import unfold


@dataclass
class CPResult:
    """``tensor ≈ Σ_r ∘_n factors[n][:, r]``; the factors carry equal shares of each term's norm ``term_norms[r]``."""

    factors: list[torch.Tensor]
    term_norms: torch.Tensor
    relative_error: float
    iterations: int


def _ball_least_squares(mttkrp: torch.Tensor, gram: torch.Tensor, radius: float | None) -> torch.Tensor:
    """``argmin ‖M − A Zᵀ‖`` over ``‖A‖_F ≤ radius`` given ``F = M Z`` and ``G = ZᵀZ`` (least-norm if several)."""
    eigenvalues, vectors = torch.linalg.eigh(gram)
    eigenvalues = eigenvalues.clamp(min=0)
    rotated = mttkrp @ vectors
    weights = (rotated * rotated).sum(0)  # ‖F v_r‖²
    cutoff = eigenvalues.max() * gram.shape[0] * torch.finfo(gram.dtype).eps
    inverse = torch.where(eigenvalues > cutoff, 1 / eigenvalues.clamp(min=cutoff), torch.zeros_like(eigenvalues))
    solution = (rotated * inverse) @ vectors.T
    if radius is None or solution.norm() <= radius:
        return solution
    g, h = eigenvalues.tolist(), weights.tolist()

    def norm(mu: float) -> float:
        return math.sqrt(sum(hr / (gr + mu) ** 2 for gr, hr in zip(g, h)))

    low, high = 0.0, math.sqrt(sum(h)) / radius  # ‖A(high)‖ ≤ ‖F‖/high = radius
    mu = high
    for _ in range(100):
        value = norm(mu)
        if value > radius:
            low = mu
        else:
            high = mu
        if abs(value - radius) <= 1e-12 * radius:
            break
        # Newton on φ(μ) = 1/‖A(μ)‖ − 1/radius, whose derivative is Σ h/(g+μ)³ / ‖A(μ)‖³.
        slope = sum(hr / (gr + mu) ** 3 for gr, hr in zip(g, h)) / value ** 3
        step = mu - (1 / value - 1 / radius) / slope
        mu = step if low < step < high else (low + high) / 2
    mu = high if norm(mu) > radius else mu
    return (rotated / (eigenvalues + mu)) @ vectors.T


def _initial_factors(tensor: torch.Tensor, rank: int, init: str | Sequence[torch.Tensor],
                     generator: torch.Generator | None) -> list[torch.Tensor]:
    if not isinstance(init, str):
        factors = [f.to(tensor.dtype).clone() for f in init]
        if [tuple(f.shape) for f in factors] != [(size, rank) for size in tensor.shape]:
            raise ValueError(f"init factors must have shapes {[(s, rank) for s in tensor.shape]}")
        return factors
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd', 'random' or a list of factors, got {init!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    factors = []
    for mode, size in enumerate(tensor.shape):
        factor = torch.randn(size, rank, generator=generator, dtype=tensor.dtype)
        if init == "svd":
            u, _, _ = torch.linalg.svd(unfold(tensor, mode), full_matrices=False)
            leading = min(rank, u.shape[1])
            factor[:, :leading] = u[:, :leading]
        factors.append(factor)
    return factors


def cp_als(tensor: torch.Tensor, rank: int, *, max_norm: float | None = 2.0, iters: int = 500, tol: float = 1e-7,
           init: str | Sequence[torch.Tensor] = "svd", generator: torch.Generator | None = None) -> CPResult:
    """Rank-``rank`` CP of an N-way ``tensor`` by ALS with the term-norm bound ``max_norm·‖T‖_F`` (module doc).

    ``init``: "svd" (leading singular vectors of each unfolding, random columns beyond them), "random", or the
    factors to start from; random entries come from ``generator`` (seed 0 if None, so results are reproducible).
    Stops after ``iters`` sweeps or when the relative error improves by less than ``tol``.
    """
    if not 2 <= tensor.dim() < len(string.ascii_letters):
        raise ValueError(f"CP needs a tensor with 2 to 51 modes, got shape {tuple(tensor.shape)}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm must be positive or None, got {max_norm!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    full = tensor.to(torch.float64)
    scale = full.norm().item()
    if scale == 0:
        raise ValueError("cannot decompose an all-zero tensor")
    radius = None if max_norm is None else max_norm * scale
    factors = _initial_factors(full, rank, init, generator)
    letters, r = string.ascii_letters[: full.dim()], string.ascii_letters[full.dim()]
    mttkrps = [opt_einsum.contract_expression(  # MTTKRP per mode, contraction order planned once
        ",".join([letters] + [letters[m] + r for m in range(full.dim()) if m != mode]) + "->" + letters[mode] + r,
        full.shape, *((size, rank) for m, size in enumerate(full.shape) if m != mode))
        for mode in range(full.dim())]
    error, sweep = math.inf, 0
    for sweep in range(1, iters + 1):
        for mode in range(full.dim()):
            others = [m for m in range(full.dim()) if m != mode]
            gram = torch.ones(rank, rank, dtype=full.dtype)
            for m in others:
                norms = factors[m].norm(dim=0)
                dead = norms == 0
                if dead.any():  # a zero column carries no term; any unit column leaves the error unchanged
                    factors[m][:, dead] = 1.0
                    norms = factors[m].norm(dim=0)
                factors[m] = factors[m] / norms
                gram = gram * (factors[m].T @ factors[m])
            mttkrp = mttkrps[mode](full, *(factors[m] for m in others))
            factors[mode] = _ball_least_squares(mttkrp, gram, radius)
        fitted = (factors[-1] * mttkrp).sum()
        model = (factors[-1].T @ factors[-1] * gram).sum()
        previous, error = error, math.sqrt(max(scale ** 2 - 2 * fitted.item() + model.item(), 0.0)) / scale
        if previous - error < tol:
            break
    norms = torch.stack([f.norm(dim=0) for f in factors])  # [modes, rank]
    term_norms = norms.prod(0)
    share = term_norms.clamp(min=torch.finfo(full.dtype).tiny) ** (1 / full.dim())
    balanced = [f / n.clamp(min=torch.finfo(full.dtype).tiny) * share for f, n in zip(factors, norms)]
    rebuilt = torch.einsum(",".join(letter + r for letter in letters) + "->" + letters, *balanced)
    exact_error = ((rebuilt - full).norm() / scale).item()
    dtype = working_dtype(tensor)
    return CPResult([f.to(dtype) for f in balanced], term_norms.to(dtype), exact_error, sweep)


def cp(weight: torch.Tensor, rank: int, *, max_norm: float | None = 2.0, iters: int = 500, tol: float = 1e-7,
       generator: torch.Generator | None = None) -> FactorNetwork:
    """Rank-``rank`` CP of a conv weight ``W[o,c,kh,kw]``: ``A[o,r]·B[c,r]·H[h,r]·V[w,r]`` (see :func:`cp_als`)."""
    if weight.dim() != 4:
        raise ValueError(f"expected a conv weight [o,c,kh,kw], got shape {tuple(weight.shape)}")
    result = cp_als(weight, rank, max_norm=max_norm, iters=iters, tol=tol, generator=generator)
    o, c, kh, kw = weight.shape
    return FactorNetwork("cp", {"rank": rank, "max_norm": max_norm}, [f.to(weight.dtype) for f in result.factors],
                         ["or", "cr", "hr", "wr"], [("o",), ("c",), ("h",), ("w",)],
                         {"o": o, "c": c, "h": kh, "w": kw, "r": rank})
