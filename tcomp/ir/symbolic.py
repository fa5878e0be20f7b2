"""Symbolic sizes: dimensions that depend on the batch size.

tcomp records every tensor's shape as a tuple of *sizes*, where a size is a plain ``int`` or, for dimensions that
scale with the batch, a sympy expression in the one symbol ``B`` (for example ``B``, ``196*B`` or ``B + 1``).
Capture finds which dimensions depend on the batch by propagating shapes at several batch sizes and fitting an
affine function of ``B`` to each dimension (see :mod:`tcomp.frontend.capture`). Costs built from such sizes are sympy
expressions too, so a plan can be checked over a range of batch sizes.
"""
from __future__ import annotations

from typing import Iterable, Union

import sympy

B = sympy.Symbol("B", positive=True, integer=True)
Size = Union[int, sympy.Expr]


def as_size(x) -> Size:
    """Normalise an int / sympy number / expression to an ``int`` when it is a constant."""
    if isinstance(x, int):
        return x
    if isinstance(x, sympy.Basic):
        x = sympy.nsimplify(x) if not x.free_symbols else sympy.expand(x)
        if x.is_Integer:
            return int(x)
        return x
    return int(x)


def prod(sizes: Iterable[Size]) -> Size:
    out: Size = 1
    for s in sizes:
        out = out * s
    return as_size(out)


def evaluate(x: Size, batch: int) -> int:
    """The value of a size at a concrete batch size."""
    if isinstance(x, int):
        return x
    v = x.subs(B, batch)
    if not v.is_Integer:
        raise ValueError(f"size {x} is not an integer at B={batch}")
    return int(v)


def ratio(big: Size, small: Size) -> Size | None:
    """``big / small`` when it is a valid size (a positive integer, or an integer multiple of a power of B)."""
    if isinstance(big, int) and isinstance(small, int):
        return big // small if small and big % small == 0 else None
    r = sympy.simplify(sympy.sympify(big) / sympy.sympify(small))
    if r.is_Integer:
        return int(r) if r > 0 else None
    if r.is_polynomial(B) and r.free_symbols <= {B}:
        coeffs = sympy.Poly(r, B).all_coeffs()
        if all(c.is_Integer and c >= 0 for c in coeffs):
            return r
    return None


def fit_affine(samples: list[tuple[int, int]]) -> Size | None:
    """Fit ``a*B + c`` (a, c rational) to (batch, size) samples; None when the samples are not affine.

    The first two samples determine the line; every further sample must lie on it.
    """
    (b0, s0), (b1, s1) = samples[0], samples[1]
    if s0 == s1 and all(s == s0 for _, s in samples):
        return int(s0)
    a = sympy.Rational(s1 - s0, b1 - b0)
    c = sympy.Rational(s0) - a * b0
    expr = a * B + c
    for b, s in samples:
        if expr.subs(B, b) != s:
            return None
    return as_size(expr)
