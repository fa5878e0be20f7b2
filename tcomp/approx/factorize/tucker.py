"""Tucker decomposition by truncated HOSVD (De Lathauwer, De Moor & Vandewalle 2000a) with optional HOOI refinement
(De Lathauwer, De Moor & Vandewalle 2000b), and Tucker-2 of a k×k convolution (Kim et al., ICLR 2016).

Truncated HOSVD: for each factored mode n, ``U_n`` = the top ``R_n`` left singular vectors of the mode-n unfolding
``T_(n)``; the core is ``G = T ×_n U_nᵀ``. Its error obeys ``‖T − Ĝ‖² ≤ Σ_n Σ_{i>R_n} σ²_{n,i}`` (the discarded
mode-n singular values), the bound the Tucker packing program (``tucker_packing``) optimises. HOOI then
alternates: ``U_n`` = top ``R_n`` left singular vectors of ``(T ×_{m≠n} U_mᵀ)_(n)``; each step cannot increase the
error.

Tucker-2 factors only the channel modes of ``W[o,c,kh,kw]``:
``W[o,c,h,w] = Σ_{r,s} P[c,r]·core[r,s,h,w]·Q[s,o]`` — a 1×1 conv ``c → r1``, a k×k conv ``r1 → r2`` and a 1×1
conv ``r2 → o``. The factors are orthonormal; the core carries the scale.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .network import FactorNetwork, working_dtype


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding: that mode's fibres as columns, ``[I_mode, Π others]``."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def mode_product(tensor: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """``tensor ×_mode matrix``: contract the tensor's mode with the matrix's columns."""
    return torch.tensordot(matrix, tensor, dims=([1], [mode])).movedim(0, mode)


def mode_singular_values(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """The singular values of the mode-``mode`` unfolding, descending."""
    return torch.linalg.svdvals(unfold(tensor.to(working_dtype(tensor)), mode))


def _leading_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The top ``rank`` left singular vectors; past the matrix's column count, an orthonormal completion."""
    u, _, _ = torch.linalg.svd(matrix, full_matrices=rank > matrix.shape[1])
    return u[:, :rank]


def tucker(tensor: torch.Tensor, ranks: Sequence[int | None],
           hooi_iters: int = 0) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Tucker decomposition with multilinear rank ``ranks`` (None leaves a mode unfactored).

    Returns ``(core, factors)``, ``factors[n]`` of shape ``[I_n, R_n]`` (orthonormal columns) or None, such that
    ``tensor ≈ core ×_n factors[n]`` over the factored modes. A rank above the product of the other modes' sizes
    (or, in HOOI, ranks) is allowed but buys nothing: the core is zero along the extra directions.
    """
    if len(ranks) != tensor.dim():
        raise ValueError(f"{len(ranks)} ranks for a {tensor.dim()}-way tensor")
    for mode, (rank, size) in enumerate(zip(ranks, tensor.shape)):
        if rank is not None and (not isinstance(rank, int) or not 1 <= rank <= size):
            raise ValueError(f"rank of mode {mode} must be None or an integer in [1, {size}], got {rank!r}")
    if not isinstance(hooi_iters, int) or hooi_iters < 0:
        raise ValueError(f"hooi_iters must be a non-negative integer, got {hooi_iters!r}")
    full = tensor.to(working_dtype(tensor))
    modes = [mode for mode, rank in enumerate(ranks) if rank is not None]
    factors: list[torch.Tensor | None] = [None] * full.dim()
    for mode in modes:
        factors[mode] = _leading_vectors(unfold(full, mode), ranks[mode])
    for _ in range(hooi_iters):
        for mode in modes:
            projected = full
            for other in modes:
                if other != mode:
                    projected = mode_product(projected, factors[other].T, other)
            factors[mode] = _leading_vectors(unfold(projected, mode), ranks[mode])
    core = full
    for mode in modes:
        core = mode_product(core, factors[mode].T, mode)
    return core, factors


def reconstruct(core: torch.Tensor, factors: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """``core ×_n factors[n]`` over the modes that have a factor."""
    for mode, factor in enumerate(factors):
        if factor is not None:
            core = mode_product(core, factor, mode)
    return core


def tucker2(weight: torch.Tensor, rank_out: int, rank_in: int, hooi_iters: int = 0) -> FactorNetwork:
    """Tucker-2 of a conv weight ``W[o,c,kh,kw]`` on its channel modes: ``P[c,r]·core[r,s,h,w]·Q[s,o]``."""
    if weight.dim() != 4:
        raise ValueError(f"expected a conv weight [o,c,kh,kw], got shape {tuple(weight.shape)}")
    core, (u_out, u_in, _, _) = tucker(weight, [rank_out, rank_in, None, None], hooi_iters)
    o, c, kh, kw = weight.shape
    factors = [u_in, core.permute(1, 0, 2, 3), u_out.T]
    return FactorNetwork("tucker2", {"rank_out": rank_out, "rank_in": rank_in, "hooi_iters": hooi_iters},
                         [t.to(weight.dtype).contiguous() for t in factors], ["cr", "rshw", "so"],
                         [("o",), ("c",), ("h",), ("w",)],
                         {"o": o, "c": c, "h": kh, "w": kw, "r": rank_in, "s": rank_out})
