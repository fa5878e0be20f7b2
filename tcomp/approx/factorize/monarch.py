"""Monarch (Dao et al., ICML 2022) and Block Tensor-Train (Qiu et al., "Compute Better Spent", ICML 2024) projections.

A Monarch matrix is a product of two block-diagonal matrices with a fixed permutation between them. With
``b_in`` blocks in the first (``R``) and ``b_out`` in the second (``L``), split the input ``i = (i1, k)`` with
``i1 < b_in`` the block of R, and the output ``o = (o, j)`` with ``j < b_out`` the block of L (row-major, so
L's block j writes the outputs ``o·b_out + j``). Then

    W[(o,j), (i1,k)] = Σ_r L[j, o, i1, r] · R[i1, j, r, k]

Block Tensor-Train of rank r is exactly this with the rank index r; Monarch is rank 1 (no r index). Viewed as a
``b_out × b_in`` grid of blocks ``W[:, j, i1, :]`` of size ``(d_out/b_out) × (d_in/b_in)``, each block is the
rank-r matrix ``L[j,:,i1,:]·R[i1,j,:,:]`` and the blocks share no parameters. So the Frobenius error splits over
blocks, and the best projection is the best rank-r approximation of every block separately — one batched SVD.

Valid block counts: ``blocks=b`` means ``b_out = b_in = b`` and needs ``b`` to divide both ``d_in`` and ``d_out``;
``blocks=(b_out, b_in)`` needs ``b_out | d_out`` and ``b_in | d_in``. The rank of BTT is at most the smaller block
side, ``min(d_out/b_out, d_in/b_in)``. Parameters: ``r·(b_out·d_in + b_in·d_out)``.

The factor layouts (``R[i1,j,r,k]``, ``L[j,o,i1,r]``) make both stages plain batched GEMMs without copying a
weight: ``R.reshape(b_in, b_out·r, k)`` and ``L.reshape(b_out, o, b_in·r)``.
"""
from __future__ import annotations

import torch

from .network import FactorNetwork, as_matrix, working_dtype


def block_counts(d_out: int, d_in: int, blocks: int | tuple[int, int]) -> tuple[int, int]:
    """``(b_out, b_in)`` for ``blocks``, or ValueError saying which block counts are valid."""
    pair = (blocks, blocks) if isinstance(blocks, int) else tuple(blocks)
    if len(pair) != 2 or not all(isinstance(b, int) and b >= 1 for b in pair):
        raise ValueError(f"blocks must be a positive int or a pair (b_out, b_in) of them, got {blocks!r}")
    b_out, b_in = pair
    if d_out % b_out or d_in % b_in:
        raise ValueError(f"blocks={blocks!r} does not fit a {d_out}x{d_in} weight: the number of output blocks must "
                         f"divide d_out={d_out} and the number of input blocks must divide d_in={d_in}")
    return b_out, b_in


def check_block_rank(d_out: int, d_in: int, b_out: int, b_in: int, rank: int) -> None:
    """ValueError unless ``1 ≤ rank ≤`` the smaller side of a ``(d_out/b_out) × (d_in/b_in)`` block."""
    o, k = d_out // b_out, d_in // b_in
    if not isinstance(rank, int) or not 1 <= rank <= min(o, k):
        raise ValueError(f"rank must be an integer in [1, {min(o, k)}] (the smaller side of a {o}x{k} block), "
                         f"got {rank!r}")


def block_network(method: str, params: dict, left: torch.Tensor, right: torch.Tensor,
                  trailing: list[tuple[str, ...]] = ()) -> FactorNetwork:
    """The FactorNetwork of ``L[j,o,i1,r]`` and ``R[i1,j,r,k]``; for Monarch (``method="monarch"``) r is dropped."""
    b_out, o, b_in, rank = left.shape
    k = right.shape[3]
    if method == "monarch":
        factors, indices = [left[..., 0], right[:, :, 0, :]], ["joi", "ijk"]
    else:
        factors, indices = [left, right], ["joir", "ijrk"]
    sizes = {"j": b_out, "o": o, "i": b_in, "k": k, "r": rank}
    return FactorNetwork(method, params, factors, indices, [("o", "j"), ("i", "k"), *trailing], sizes)


def _project(weight: torch.Tensor, b_out: int, b_in: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-``rank`` approximation of every block: ``(L[j,o,i1,r], R[i1,j,r,k])``."""
    d_out, d_in = weight.shape
    o, k = d_out // b_out, d_in // b_in
    grid = weight.to(working_dtype(weight)).reshape(o, b_out, b_in, k).permute(1, 2, 0, 3)  # [j, i1, o, k]
    u, s, vh = torch.linalg.svd(grid, full_matrices=False)
    root = s[..., :rank].sqrt()
    left = (u[..., :rank] * root[..., None, :]).permute(0, 2, 1, 3)  # [j, i1, o, r] -> [j, o, i1, r]
    right = (root[..., None] * vh[..., :rank, :]).permute(1, 0, 2, 3)  # [j, i1, r, k] -> [i1, j, r, k]
    return left.to(weight.dtype).contiguous(), right.to(weight.dtype).contiguous()


def btt(weight: torch.Tensor, blocks: int | tuple[int, int], rank: int) -> FactorNetwork:
    """The best Block Tensor-Train approximation of rank ``rank`` with ``blocks`` blocks (see the module doc)."""
    matrix, trailing = as_matrix(weight)
    d_out, d_in = matrix.shape
    b_out, b_in = block_counts(d_out, d_in, blocks)
    check_block_rank(d_out, d_in, b_out, b_in, rank)
    left, right = _project(matrix, b_out, b_in, rank)
    return block_network("btt", {"blocks": (b_out, b_in), "rank": rank}, left, right, trailing)


def monarch(weight: torch.Tensor, blocks: int | tuple[int, int]) -> FactorNetwork:
    """The best Monarch approximation (per-block best rank-1) with ``blocks`` blocks (see the module doc)."""
    matrix, trailing = as_matrix(weight)
    b_out, b_in = block_counts(*matrix.shape, blocks)
    left, right = _project(matrix, b_out, b_in, 1)
    return block_network("monarch", {"blocks": (b_out, b_in)}, left, right, trailing)
