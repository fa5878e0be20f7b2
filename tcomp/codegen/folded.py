"""Runtime pieces the emitted modules call: functions of the model's parameters, computed once and cached.

:class:`CachedFunction` — ``fn(*tensors)`` where every tensor is a parameter or buffer of the model (a weight with a
batch norm folded in, a weight laid out channels-last, a weight scaled by a constant). The cache is a pure function
of its inputs: it is recomputed when any of them changes. A change is seen by the tensor's identity (storage,
dtype, device), its version counter (bumped by in-place updates through the tensor: optimizer steps,
``load_state_dict``, ``p.mul_()`` under ``no_grad``) and a fingerprint of its contents (:func:`fingerprint`:
position-weighted sums of the bytes read as words), which sees what bumps no version — a write through ``p.data``,
batch norm's running statistics updated by a training-mode forward. When gradients are needed the cached value is
returned through an autograd function whose backward differentiates ``fn`` — so the compiled module trains with the
same gradients as eager while its forward never repeats the computation.

:class:`FoldedConstant` — weight pre-contraction, the cached function ``einsum(equation, *params)``: a sub-network
whose operands are all constants (two Linears with no activation between them, a fixed coupling tensor with a
weight) is contracted once.

:class:`Compose` builds the function of a rewrite applied to an already cached weight, so that two rewrites of one
weight (fold a batch norm, then lay it out channels-last) make one cache of the original parameters, never a cache
of a cache.

:func:`same_float_dtype` — where reduced-precision results meet float32 ones at a call that needs one dtype.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch._guards import active_fake_mode
from torch._subclasses.fake_tensor import is_fake
import torch.nn as nn


class _CachedValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, function: "CachedFunction", cached: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.function = function
        ctx.save_for_backward(*inputs)
        return cached.view_as(cached)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = ctx.function.compute(*inputs)
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True)) if wanted else iter(())
        return (None, None, *[next(grads) if t.requires_grad else None for t in inputs])


class CachedFunction(nn.Module):
    """``fn(*inputs)``, computed once and cached until an input changes: its storage, version, dtype or device, or
    its contents — a small input (up to :data:`COPIED_BYTES`) compared with a copy kept of it, a larger one by its
    :func:`fingerprint` (writes through ``.data`` bump no version).

    ``fn`` must be a deterministic function of its tensor inputs. The cached result never aliases an input (a
    result that shares an input's storage is cloned), so updating a parameter in place cannot change it silently.
    """

    def __init__(self, fn: Callable[..., torch.Tensor] | None = None):
        super().__init__()
        self.fn = fn
        self._cache: torch.Tensor | None = None
        self._key: tuple | None = None

    def extra_repr(self) -> str:
        return describe(self.fn)

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        maybe_traced = torch._C._len_torch_dispatch_stack() or not all(type(t) in _PLAIN for t in inputs)
        if maybe_traced and (active_fake_mode() is not None or any(is_fake(t) for t in inputs)):
            # traced (AOTAutograd, export) or run on fake tensors (dtype propagation): the result is not a value to
            # keep — caching it would hand a FakeTensor to the next real call with the same parameters. (The two
            # checks cost more than a small model's call: plain tensors with no dispatch mode on are neither.)
            return self.compute(*inputs)
        if self._cache is None or not self._unchanged(inputs):
            with torch.no_grad():
                value = self.compute(*inputs)
                storages = {t.untyped_storage().data_ptr() for t in inputs}
                if value.untyped_storage().data_ptr() in storages:
                    value = value.clone()
            self._cache = value
            self._key = [(t.data_ptr(), t._version, t.dtype, t.device, _contents(t)) for t in inputs]
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            return _CachedValue.apply(self, self._cache, *inputs)
        return self._cache

    def _unchanged(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        if self._key is None or len(inputs) != len(self._key):
            return False
        for t, (ptr, version, dtype, device, contents) in zip(inputs, self._key):
            if t.data_ptr() != ptr or t._version != version or t.dtype != dtype or t.device != device:
                return False
            if isinstance(contents, torch.Tensor):
                if contents.shape != t.shape or not torch.equal(contents, t.detach()):
                    return False
            elif contents != fingerprint(t):
                return False
        return True


_PLAIN = (torch.Tensor, nn.Parameter)

COPIED_BYTES = 1 << 16
"""Inputs of a cached function up to this size are compared with a copy kept of them: exact, and one comparison a
call (about 3 µs) where a fingerprint costs some 15 small torch calls (measured 40 µs each for 2x4 weights, which
made checking eight of them cost 100x restacking them)."""


def _contents(t: torch.Tensor) -> torch.Tensor | tuple[int, int]:
    """What a cached input's contents are compared by (see :class:`CachedFunction`)."""
    if t.numel() * t.element_size() <= COPIED_BYTES:
        return t.detach().clone()
    return fingerprint(t)


def fingerprint(t: torch.Tensor) -> tuple[int, int]:
    """The tensor's bytes read as 64-bit (else 32-, 16-, 8-bit) integer words laid out as a near-square grid, and
    the grid's row sums and column sums each weighted by position, with wrap-around: a change to one word changes
    both; moving words around (a flip, a permutation of rows) changes the row or the column sums' weights, so only
    a coincidence of the weighted sums hides it. It reads the tensor twice (a 100 MB weight in under 10 ms here,
    against 75 ms for a byte hash), so a cached weight is checked on every call."""
    flat = t.detach().reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    nbytes = flat.numel() * flat.element_size()
    if nbytes == 0:
        return 0, 0
    word = next(w for w in (torch.int64, torch.int32, torch.int16, torch.uint8) if nbytes % w.itemsize == 0)
    words = flat.view(torch.uint8).view(word)
    columns = max(1, math.isqrt(words.numel()))
    rows = words.numel() // columns
    grid = words[: rows * columns].view(rows, columns)
    tail = words[rows * columns:].to(torch.int64)
    row_sums = grid.sum(1, dtype=torch.int64)
    column_sums = torch.cat([grid.sum(0, dtype=torch.int64), tail])
    return (int((row_sums * _weights(rows, t.device)).sum()),
            int((column_sums * _weights(column_sums.numel(), t.device)).sum()))


@functools.lru_cache(maxsize=64)
def _weights(n: int, device: torch.device) -> torch.Tensor:
    """1, 3, 5, ...: distinct odd weights (odd, so that no weight is a zero divisor modulo 2**64)."""
    return torch.arange(1, 2 * n, 2, dtype=torch.int64, device=device)


class FoldedConstant(CachedFunction):
    """``einsum(equation, *params)`` reshaped to ``out_shape``, computed once and cached until a parameter changes."""

    def __init__(self, equation: str, input_shapes: list[tuple[int, ...]], path: list | None = None):
        super().__init__()
        self.equation = equation
        self.input_shapes = [tuple(s) for s in input_shapes]
        self.path = path

    def extra_repr(self) -> str:
        return f"{self.equation!r}"

    def contract(self, *params: torch.Tensor) -> torch.Tensor:
        views = [p.reshape(s) for p, s in zip(params, self.input_shapes)]
        return torch.einsum(self.equation, *views)

    def compute(self, *params: torch.Tensor) -> torch.Tensor:
        return self.contract(*params).contiguous()


class Compose:
    """``outer(inner(*xs[:arity]), *xs[arity:])``: a function applied to the result of another, with the outer
    function's own extra inputs after the inner function's."""

    def __init__(self, outer: Callable[..., torch.Tensor], inner: Callable[..., torch.Tensor], arity: int):
        self.outer = outer
        self.inner = inner
        self.arity = arity

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(*xs[:self.arity]), *xs[self.arity:])

    def __repr__(self) -> str:
        return f"{describe(self.outer)} ∘ {describe(self.inner)}"


def same_float_dtype(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` cast to their promoted floating dtype where theirs differs (no-op when they agree). A program
    with some Networks in bf16 calls this before a call that reads several floating activations: a bf16 query
    projection meeting float32 key and value at ``scaled_dot_product_attention`` (which refuses mixed dtypes) runs
    it in float32 — the dtype promotion that elementwise ops would have done."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in tensors)


def describe(fn: Callable | None) -> str:
    """A short readable name of a cached function: ``mul(other=0.125)``, ``fold_bn_weight(eps=1e-05) ∘ ...``."""
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{describe(fn.func)}({', '.join(args)})"
    if fn is None:
        return ""
    return getattr(fn, "__name__", None) or repr(fn)
