"""Runtime pieces the emitted modules call.

:class:`FoldedConstant` — weight pre-contraction. A sub-network whose operands are all constants (two Linears
with no activation between them, a fixed coupling tensor with a weight) is contracted once and cached. The cache is
a pure function of the parameters: it is recomputed when any of them changes (in-place updates bump a tensor's
version counter; ``load_state_dict`` and optimizer steps both do), and when gradients are needed the cached value
is returned through an autograd function whose backward differentiates the contraction — so the compiled module
trains with the same gradients as eager while its forward never repeats the folding.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class _CachedFold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fold: "FoldedConstant", cached: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.fold = fold
        ctx.save_for_backward(*params)
        return cached.view_as(cached)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        params = [p.detach().requires_grad_(p.requires_grad) for p in ctx.saved_tensors]
        with torch.enable_grad():
            out = ctx.fold.contract(*params)
        wanted = [p for p in params if p.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True)) if wanted else iter(())
        return (None, None, *[next(grads) if p.requires_grad else None for p in params])


class FoldedConstant(nn.Module):
    """``einsum(equation, *params)`` reshaped to ``out_shape``, computed once and cached until a parameter changes."""

    def __init__(self, equation: str, input_shapes: list[tuple[int, ...]], path: list | None = None):
        super().__init__()
        self.equation = equation
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.path = path
        self._cache: torch.Tensor | None = None
        self._key: tuple | None = None

    def extra_repr(self) -> str:
        return f"{self.equation!r}"

    def contract(self, *params: torch.Tensor) -> torch.Tensor:
        views = [p.reshape(s) for p, s in zip(params, self.input_shapes)]
        return torch.einsum(self.equation, *views)

    def forward(self, *params: torch.Tensor) -> torch.Tensor:
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._cache is None or key != self._key:
            with torch.no_grad():
                self._cache = self.contract(*params).contiguous()
            self._key = key
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return _CachedFold.apply(self, self._cache, *params)
        return self._cache
