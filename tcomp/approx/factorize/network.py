"""The result type shared by every factorization: a weight as a small tensor network of factors.

A :class:`FactorNetwork` says how a weight ``W`` is (approximately) the contraction of a few factor tensors, in
einsum notation: every factor dimension carries one index letter, and every dimension of the original weight is
the row-major group of index letters it splits into. So

    W.reshape(sizes of all weight letters, in order) == einsum(",".join(factor_indices) + "->" + weight letters)

An empty group stands for a dimension of size 1 (the 1×1 kernel of a pointwise convolution). Letters shared by
more than two factors are hyperedges (the block index of Monarch); opt_einsum and torch.einsum accept them.

The first weight dimension is the output; all the others are contracted with the input. That is the convention
:meth:`FactorNetwork.contraction_flops` uses, and the one of ``nn.Linear`` (``W[o,i]``) and ``nn.Conv2d``
(``W[o,c,kh,kw]``, where the input is the unfolded k×k patch — the im2col view).
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass

import opt_einsum
import torch

#: Index letters that torch.einsum accepts.
LETTERS = frozenset(string.ascii_letters)


@dataclass
class FactorNetwork:
    """A weight W approximated (or represented exactly) as a small tensor network of factors.

    method: the factorization that produced it ("svd", "asvd", "afm", "cur", "monarch", "btt", "kronecker",
        "tucker2", "cp"; a tcomp.approx.layers.Linear also gives "dense" and "lowrank"); params: that method's
        parameters (e.g. ``{"rank": 32}``); factors: the factor tensors; factor_indices: one index letter per factor
        dimension; weight_indices: per dimension of the original weight, the row-major group of letters it splits
        into; sizes: the size of every letter.
    """

    method: str
    params: dict
    factors: list[torch.Tensor]
    factor_indices: list[str]
    weight_indices: list[tuple[str, ...]]
    sizes: dict[str, int]

    def __post_init__(self) -> None:
        if len(self.factors) != len(self.factor_indices):
            raise ValueError(f"{len(self.factors)} factors but {len(self.factor_indices)} index strings")
        for k, (factor, letters) in enumerate(zip(self.factors, self.factor_indices)):
            if not set(letters) <= LETTERS or len(set(letters)) != len(letters):
                raise ValueError(f"factor {k}: indices {letters!r} must be distinct ASCII letters")
            expected = tuple(self._size(letter) for letter in letters)
            if tuple(factor.shape) != expected:
                raise ValueError(f"factor {k} ({letters}) has shape {tuple(factor.shape)}, sizes say {expected}")
        weight_letters = self.weight_letters
        if len(set(weight_letters)) != len(weight_letters):
            raise ValueError(f"a weight index appears twice in {self.weight_indices}")
        missing = set(weight_letters) - set("".join(self.factor_indices))
        if missing:
            raise ValueError(f"weight indices {sorted(missing)} appear in no factor")

    def _size(self, letter: str) -> int:
        if letter not in self.sizes:
            raise ValueError(f"index {letter!r} has no size")
        return self.sizes[letter]

    @property
    def weight_letters(self) -> str:
        """All weight index letters, in the weight's row-major order."""
        return "".join("".join(group) for group in self.weight_indices)

    @property
    def equation(self) -> str:
        """The einsum equation from the factors to the (split) weight."""
        return ",".join(self.factor_indices) + "->" + self.weight_letters

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The shape of the original weight."""
        return tuple(math.prod(self.sizes[letter] for letter in group) for group in self.weight_indices)

    def dense(self) -> torch.Tensor:
        """Rebuild W in its original shape (for error checks only; a lowering never forms it)."""
        return torch.einsum(self.equation, *self.factors).reshape(self.weight_shape)

    def num_params(self) -> int:
        """The number of stored factor entries."""
        return sum(factor.numel() for factor in self.factors)

    def contraction_flops(self, rows: int) -> int:
        """FLOPs (2 per multiply-add) to compute ``y[rows, out] = x[rows, in] · Wᵀ`` through the factors.

        ``x`` carries the letters of every weight dimension but the first (for a conv weight: the unfolded patch,
        so ``rows`` counts output positions). The order is opt_einsum's best ("optimal" search up to 5 operands,
        else "dp"); contractions of factors with each other are counted too, as if done per call.
        """
        if rows < 1:
            raise ValueError(f"rows must be positive, got {rows}")
        row = next(letter for letter in sorted(LETTERS) if letter not in self.sizes)
        inputs = "".join("".join(group) for group in self.weight_indices[1:])
        output = row + "".join(self.weight_indices[0])
        equation = ",".join([row + inputs, *self.factor_indices]) + "->" + output
        shapes = [(rows, *(self.sizes[letter] for letter in inputs))] + [tuple(f.shape) for f in self.factors]
        strategy = "optimal" if len(shapes) <= 5 else "dp"
        _, info = opt_einsum.contract_path(equation, *shapes, shapes=True, optimize=strategy)
        return int(info.opt_cost)


def working_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype to decompose in: the tensor's own if at least float32, else float32 (no SVD in half precision)."""
    if not tensor.is_floating_point():
        raise ValueError(f"expected a floating-point weight, got {tensor.dtype}")
    return torch.promote_types(tensor.dtype, torch.float32)


def as_matrix(weight: torch.Tensor) -> tuple[torch.Tensor, list[tuple[str, ...]]]:
    """A Linear weight ``W[o,i]`` or a 1×1 conv weight ``W[o,i,1,1]`` as the matrix ``W[o,i]``.

    Also returns the empty weight-index groups that stand for the trailing size-1 kernel dimensions.
    """
    if weight.dim() == 2:
        return weight, []
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        return weight[:, :, 0, 0], [(), ()]
    raise ValueError(f"expected a Linear weight [o,i] or a 1x1 conv weight [o,i,1,1], got shape {tuple(weight.shape)}")
