"""Kronecker-sum approximation ``W ≈ Σ_{t<k} A_t ⊗ B_t`` (Van Loan & Pitsianis 1993).

With the output split ``o = (o, p)`` and the input ``i = (i, j)`` (row-major, ``A_t`` of shape ``o × i`` given by
``a_shape``, ``B_t`` of shape ``p × j``), ``W[(o,p),(i,j)] = Σ_t A_t[o,i]·B_t[p,j]``. Rearranging W into the matrix
``R(W)[(o,i),(p,j)]`` turns every Kronecker product into a rank-1 matrix, so the best k-term approximation in
Frobenius norm is the rank-k truncated SVD of ``R(W)``: ``A_t = √σ_t·u_t``, ``B_t = √σ_t·v_t``.

Valid parameters: ``a_shape = (o, i)`` with ``o | d_out`` and ``i | d_in``; ``1 ≤ terms ≤ min(o·i, p·j)``.
Parameters stored: ``k·(o·i + p·j)``.

The factor layouts ``A[o,t,i]`` and ``B[p,t,j]`` let a layer apply it as two GEMMs without copying a weight:
``A.reshape(o·k, i)`` on the input's outer index, then ``B.reshape(p, k·j)`` (see tcomp.approx.layers).
"""
from __future__ import annotations

import torch

from .network import FactorNetwork, as_matrix, working_dtype


def kronecker_network(params: dict, a: torch.Tensor, b: torch.Tensor,
                      trailing: list[tuple[str, ...]] = ()) -> FactorNetwork:
    """The FactorNetwork of ``A[o,t,i]`` and ``B[p,t,j]``: ``W[(o,p),(i,j)] = Σ_t A[o,t,i]·B[p,t,j]``."""
    (o, k, i), (p, _, j) = a.shape, b.shape
    return FactorNetwork("kronecker", params, [a, b], ["oti", "ptj"], [("o", "p"), ("i", "j"), *trailing],
                         {"o": o, "t": k, "i": i, "p": p, "j": j})


def kronecker_split(d_out: int, d_in: int, terms: int, a_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The factor shapes ``(o, i, p, j)`` for a ``d_out × d_in`` weight, or ValueError saying what is valid."""
    pair = tuple(a_shape) if isinstance(a_shape, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(n, int) and n >= 1 for n in pair) or d_out % pair[0] or d_in % pair[1]:
        raise ValueError(f"a_shape={a_shape!r} does not fit a {d_out}x{d_in} weight: it must be a pair (o, i) of "
                         f"positive ints with o dividing {d_out} and i dividing {d_in}")
    o, i = pair
    p, j = d_out // o, d_in // i
    largest = min(o * i, p * j)
    if not isinstance(terms, int) or not 1 <= terms <= largest:
        raise ValueError(f"terms must be an integer in [1, {largest}] for a_shape={pair}, got {terms!r}")
    return o, i, p, j


def kronecker(weight: torch.Tensor, terms: int, a_shape: tuple[int, int]) -> FactorNetwork:
    """The best ``terms``-term Kronecker-sum approximation with first factors of shape ``a_shape``."""
    matrix, trailing = as_matrix(weight)
    o, i, p, j = kronecker_split(*matrix.shape, terms, a_shape)
    rearranged = matrix.to(working_dtype(weight)).reshape(o, p, i, j).permute(0, 2, 1, 3).reshape(o * i, p * j)
    u, s, vh = torch.linalg.svd(rearranged, full_matrices=False)
    root = s[:terms].sqrt()
    a = (u[:, :terms] * root).reshape(o, i, terms).permute(0, 2, 1)
    b = (root[:, None] * vh[:terms]).reshape(terms, p, j).permute(1, 0, 2)
    cast = [t.to(weight.dtype).contiguous() for t in (a, b)]
    return kronecker_network({"terms": terms, "a_shape": (o, i)}, *cast, trailing)
