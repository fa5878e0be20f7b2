"""Symbolic sizes: dimensions that depend on the batch size or the sequence length.

tcomp records every tensor's shape as a tuple of *sizes*, where a size is a plain ``int`` or, for dimensions that
change from call to call, a sympy expression in the batch symbol ``B`` and the sequence symbol ``S`` (``B``,
``196*B``, ``B + 1``, ``B*S`` for a ``[B, S, d]`` tensor flattened to ``[B*S, d]``). Capture finds which dimensions
depend on them by propagating shapes at several batch sizes and sequence lengths and fitting each dimension with a
polynomial of degree at most one in each symbol (:func:`fit`; see :mod:`tcomp.frontend.capture`). Costs built from
such sizes are sympy expressions too, so a plan can be checked at any point; decisions are made at the example's
(a :data:`Point`: a value per symbol).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Iterable, Union

import sympy

B = sympy.Symbol("B", positive=True, integer=True)
S = sympy.Symbol("S", positive=True, integer=True)
SYMBOLS = (B, S)
Size = Union[int, sympy.Expr]
Point = dict  # {symbol: value}: where a symbolic size is evaluated (an int means the batch alone)


def as_size(x) -> Size:
    """Normalise an int / sympy number / expression to an ``int`` when it is a constant."""
    if isinstance(x, int):
        return x
    if isinstance(x, sympy.Basic):
        return _normalised(x)
    return int(x)


@functools.lru_cache(maxsize=1 << 16)
def _normalised(x: sympy.Basic) -> Size:
    """Remembered: planning normalises the same few products hundreds of thousands of times."""
    x = sympy.nsimplify(x) if not x.free_symbols else sympy.expand(x)
    return int(x) if x.is_Integer else x


def prod(sizes: Iterable[Size]) -> Size:
    out: Size = 1
    for s in sizes:
        out = out * s
    return as_size(out)


def point(at: Point | int | None) -> Point:
    """``at`` as a point: an int is a batch size, None no value at all."""
    if at is None:
        return {}
    return {B: at} if isinstance(at, int) else dict(at)


def point_key(at: Point) -> tuple:
    """A point as a hashable key with a stable ``repr``: ``(("B", 8), ("S", 128))``."""
    return tuple(sorted((sym.name, int(v)) for sym, v in at.items()))


def evaluate(x: Size, at: Point | int) -> int:
    """The value of a size at a point (or a batch size)."""
    if isinstance(x, int):
        return x
    v = value_at(x, point(at))
    if not v.is_Integer:
        raise ValueError(f"size {x} is not an integer at {point(at)}")
    return int(v)


def value_at(x: sympy.Expr, at: Point) -> sympy.Expr:
    """``x`` with the symbols of ``at`` replaced by their values: a number when ``at`` gives them all. Remembered
    (planning prices the same few expressions at the same point tens of thousands of times, and a sympy
    substitution costs about a millisecond)."""
    return _value_at(x, point_key(at))


@functools.lru_cache(maxsize=1 << 16)
def _value_at(x: sympy.Expr, key: tuple[tuple[str, int], ...]) -> sympy.Expr:
    names = {s.name: s for s in SYMBOLS}
    return x.xreplace({names[name]: sympy.Integer(v) for name, v in key})


def complete(at: Point | int | None) -> Point:
    """``at`` with a value for every symbol: 2 for those it does not give."""
    given = point(at)
    return {s: given.get(s) or 2 for s in SYMBOLS}


def decision_point(at: Point | int | None) -> Point:
    """The point layouts and plans are decided at: the example's sizes, at least 2 each (so that a batch or sequence
    index stays visible as an index of its own), 2 for a symbol the example does not give."""
    return {s: max(v, 2) for s, v in complete(at).items()}


def ratio(big: Size, small: Size) -> Size | None:
    """``big / small`` when it is a valid size (a positive integer, or a polynomial in the symbols with non-negative
    integer coefficients)."""
    if isinstance(big, int) and isinstance(small, int):
        return big // small if small and big % small == 0 else None
    r = sympy.simplify(sympy.sympify(big) / sympy.sympify(small))
    if r.is_Integer:
        return int(r) if r > 0 else None
    if r.free_symbols <= set(SYMBOLS) and r.is_polynomial(*SYMBOLS):
        coeffs = sympy.Poly(r, *SYMBOLS).coeffs()
        if all(c.is_Integer and c >= 0 for c in coeffs):
            return r
    return None


def fit(samples: list[tuple[Point, int]]) -> Size | None:
    """The size ``c₀ + c_B·B + c_S·S + c_BS·B·S`` (rational coefficients; only the symbols the samples vary) through
    every (point, size) sample, or None when there is none. Exact arithmetic: the first samples that determine the
    coefficients are solved, every sample is then checked. (Remembered: a graph fits the same pattern many times.)"""
    if len({v for _, v in samples}) == 1:
        return int(samples[0][1])
    return _fit(tuple((tuple(sorted(p.items(), key=lambda kv: kv[0].name)), v) for p, v in samples))


@functools.lru_cache(maxsize=4096)
def _fit(samples: tuple) -> Size | None:
    samples = [(dict(p), v) for p, v in samples]
    varying = [sym for sym in SYMBOLS if len({p.get(sym) for p, _ in samples}) > 1]
    monomials = [(), *((sym,) for sym in varying)] + ([tuple(varying)] if len(varying) == 2 else [])

    def row(p: Point) -> list[Fraction]:
        return [Fraction(math.prod(p[sym] for sym in m)) for m in monomials]

    coefficients = _solve([(row(p), Fraction(v)) for p, v in samples], len(monomials))
    if coefficients is None or any(sum(c * x for c, x in zip(coefficients, row(p))) != v for p, v in samples):
        return None
    return as_size(sum((sympy.Rational(c.numerator, c.denominator) * sympy.Mul(*m) for c, m in
                        zip(coefficients, monomials)), sympy.Integer(0)))


def _solve(rows: list[tuple[list[Fraction], Fraction]], n: int) -> list[Fraction] | None:
    """The solution of the first ``n`` independent equations (Gauss–Jordan on exact fractions), None when fewer."""
    chosen: list[tuple[list[Fraction], Fraction]] = []
    for coefficients, value in rows:
        trial = chosen + [(coefficients, value)]
        if _rank(trial) == len(trial):
            chosen = trial
        if len(chosen) == n:
            break
    if len(chosen) < n:
        return None
    a = [list(c) + [v] for c, v in chosen]
    for col in range(n):
        pivot = next(r for r in range(col, n) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [x / a[col][col] for x in a[col]]
        for r in range(n):
            if r != col and a[r][col] != 0:
                a[r] = [x - a[r][col] * y for x, y in zip(a[r], a[col])]
    return [a[r][n] for r in range(n)]


def _rank(rows: list[tuple[list[Fraction], Fraction]]) -> int:
    m = [list(c) for c, _ in rows]
    rank = 0
    for col in range(len(m[0]) if m else 0):
        pivot = next((r for r in range(rank, len(m)) if m[r][col] != 0), None)
        if pivot is None:
            continue
        m[rank], m[pivot] = m[pivot], m[rank]
        for r in range(len(m)):
            if r != rank and m[r][col] != 0:
                factor = m[r][col] / m[rank][col]
                m[r] = [x - factor * y for x, y in zip(m[r], m[rank])]
        rank += 1
    return rank
