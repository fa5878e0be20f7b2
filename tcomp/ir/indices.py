"""Index algebra for Networks: fresh index names, canonical renaming, and the common refinement of two
row-major factorisations of one dimension (how a reshape splits or merges indices).

Example: a tensor of shape ``[B, 768]`` viewed as ``[B, 12, 64]`` has the common refinement ``[B, 12, 64]``: the
input's second dimension is the group ``(h, d)`` and the output's dimensions are ``(b,), (h,), (d,)``. Two
factorisations have a common refinement only when their cumulative products divide each other in turn
(``[6, 10]`` and ``[4, 15]`` do not: 4 does not divide 6); such a reshape stays a materialised op.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import opt_einsum

from .symbolic import Size, as_size, prod, ratio


def symbol(k: int) -> str:
    """The k-th index name (a, b, ..., z, A, ..., Z, then further unicode letters)."""
    return opt_einsum.get_symbol(k)


def einsum_equation(terms: Sequence[Sequence[str]], out: Sequence[str]) -> str:
    """The einsum equation of ``terms -> out`` with its indices renamed a, b, ..., Z in order of appearance:
    torch.einsum takes only the 52 ASCII letters, while a Network's index names run on into unicode."""
    names = canonical_names((*terms, out))
    if len(names) > 52:
        raise ValueError(f"an einsum over {len(names)} distinct indices (torch.einsum takes at most 52)")
    return ",".join("".join(names[i] for i in t) for t in terms) + "->" + "".join(names[i] for i in out)


class IndexPool:
    """Hands out index names not in ``taken``."""

    def __init__(self, taken: Iterable[str] = ()):
        self._taken = set(taken)
        self._next = 0

    def new(self) -> str:
        while symbol(self._next) in self._taken:
            self._next += 1
        s = symbol(self._next)
        self._taken.add(s)
        return s


def refine(a: Sequence[Size], b: Sequence[Size]) -> tuple[list[Size], list[range], list[range]] | None:
    """The common refinement of two row-major factorisations of the same number of elements.

    Returns ``(pieces, a_ranges, b_ranges)`` where ``pieces`` are the sizes of the finest dimensions and
    ``a_ranges[d]`` is the range of pieces that dimension ``d`` of ``a`` consists of (empty for a size-1 dim);
    None when there is no common refinement (or the totals differ).
    """
    if as_size(prod(a)) != as_size(prod(b)):
        return None
    cum_a = _cumulative(a)
    cum_b = _cumulative(b)
    bounds: list[Size] = []
    i = j = 0
    while i < len(cum_a) or j < len(cum_b):
        if i < len(cum_a) and j < len(cum_b) and cum_a[i] == cum_b[j]:
            bounds.append(cum_a[i])
            i += 1
            j += 1
        elif j >= len(cum_b) or (i < len(cum_a) and ratio(cum_b[j], cum_a[i]) is not None):
            bounds.append(cum_a[i])
            i += 1
        elif i >= len(cum_a) or ratio(cum_a[i], cum_b[j]) is not None:
            bounds.append(cum_b[j])
            j += 1
        else:
            return None
    pieces: list[Size] = []
    prev: Size = 1
    for bnd in bounds:
        r = ratio(bnd, prev)
        if r is None:
            return None
        pieces.append(r)
        prev = bnd
    return pieces, _ranges(a, bounds), _ranges(b, bounds)


def _cumulative(dims: Sequence[Size]) -> list[Size]:
    out: list[Size] = []
    p: Size = 1
    for d in dims:
        if d == 1:
            continue
        p = as_size(p * d)
        out.append(p)
    return out


def _ranges(dims: Sequence[Size], bounds: list[Size]) -> list[range]:
    """For each dim, the pieces (positions in ``bounds``) it spans."""
    out = []
    k = 0
    p: Size = 1
    for d in dims:
        if d == 1:
            out.append(range(k, k))
            continue
        p = as_size(p * d)
        start = k
        while bounds[k] != p:
            k += 1
        k += 1
        out.append(range(start, k))
    return out


def canonical_names(groups: Iterable[Iterable[str]]) -> dict[str, str]:
    """A renaming to a, b, c, ... in order of first appearance."""
    mapping: dict[str, str] = {}
    for g in groups:
        for i in g:
            if i not in mapping:
                mapping[i] = symbol(len(mapping))
    return mapping
