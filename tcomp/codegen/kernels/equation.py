"""Pairwise einsum equations as batched GEMMs: which index plays which role.

For ``out = contract(a, b)`` written ``"<a>,<b>-><out>"`` with single-letter indices, an index is

* **batch** if it is in a, b and out;
* **M** if it is in a and out only; **N** if it is in b and out only;
* **K** (contracted) if it is in a and b only.

So the contraction is, per batch element, ``out[M, N] = Σ_K a[M, K] · b[K, N]`` with each role possibly a group of
several indices (``"bhqd,bhkd->bhqk"``: batch (b, h), M q, N k, K d). An index in one operand only would be summed
out before the contraction, and one in the output only has no source: both are errors, as are repeated indices
(diagonals) and ellipses.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairwiseEquation:
    """A parsed pairwise equation: operand and output index strings and the indices of each role.

    ``batch``, ``m`` and ``n`` are in output order; ``k`` in the order of ``a``.
    """

    a: str
    b: str
    out: str
    batch: tuple[str, ...]
    m: tuple[str, ...]
    n: tuple[str, ...]
    k: tuple[str, ...]

    @staticmethod
    def parse(equation: str) -> PairwiseEquation:
        """Parse ``"<a>,<b>-><out>"`` (spaces ignored); raise ValueError naming what is wrong."""
        if not isinstance(equation, str):
            raise TypeError(f"equation must be a string, got {type(equation).__name__}")
        text = "".join(equation.split())
        if "..." in text:
            raise ValueError(f"equation {equation!r}: ellipsis ('...') is not supported; name every index")
        if text.count("->") != 1:
            raise ValueError(f"equation {equation!r}: expected one '->' separating inputs from the output")
        inputs, out = text.split("->")
        operands = inputs.split(",")
        if len(operands) != 2:
            raise ValueError(f"equation {equation!r}: a pairwise contraction has exactly two operands, "
                             f"got {len(operands)}")
        a, b = operands
        for label, indices in (("operand a", a), ("operand b", b), ("the output", out)):
            bad = sorted({c for c in indices if c not in string.ascii_letters})
            if bad:
                raise ValueError(f"equation {equation!r}: {label} has characters {bad} that are not index "
                                 "letters (a-z, A-Z)")
            repeated = sorted({c for c in indices if indices.count(c) > 1})
            if repeated:
                raise ValueError(f"equation {equation!r}: {label} repeats indices {repeated}; diagonals are not "
                                 "supported")
        lonely = [(c, name) for name, here, others in (("a", a, b + out), ("b", b, a + out))
                  for c in here if c not in others]
        if lonely:
            index, name = lonely[0]
            raise ValueError(f"equation {equation!r}: index {index!r} appears only in operand {name}; sum it out "
                             "before the contraction")
        sourceless = [c for c in out if c not in a + b]
        if sourceless:
            raise ValueError(f"equation {equation!r}: output indices {sourceless} appear in no operand")
        return PairwiseEquation(
            a=a, b=b, out=out,
            batch=tuple(c for c in out if c in a and c in b),
            m=tuple(c for c in out if c in a and c not in b),
            n=tuple(c for c in out if c in b and c not in a),
            k=tuple(c for c in a if c in b and c not in out),
        )

    def role_counts(self) -> tuple[int, int, int, int]:
        """How many indices each role (batch, M, N, K) has."""
        return len(self.batch), len(self.m), len(self.n), len(self.k)

    def sizes(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, int]:
        """The size of every index, checked for consistency between ``a`` and ``b``."""
        for name, indices, tensor in (("a", self.a, a), ("b", self.b, b)):
            if tensor.dim() != len(indices):
                raise ValueError(f"operand {name} has {tensor.dim()} dims {tuple(tensor.shape)} but the equation "
                                 f"gives it {len(indices)} indices {indices!r}")
        sizes = dict(zip(self.a, a.shape))
        for index, extent in zip(self.b, b.shape):
            if sizes.setdefault(index, extent) != extent:
                raise ValueError(f"index {index!r} has size {sizes[index]} in operand a but {extent} in operand b")
        return sizes

    def __str__(self) -> str:
        return f"{self.a},{self.b}->{self.out}"
