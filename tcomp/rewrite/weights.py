"""Weight-only values: tensors computed from the model's parameters and buffers alone, kept as cached functions.

A rewrite that changes a weight — a batch norm folded into a convolution's weight, a constant factor folded into a
linear map's weight, a convolution weight laid out channels-last — must keep it a function of the *original*
parameters, so that optimizer steps, ``load_state_dict`` and gradients stay right and the compiled module's
``state_dict`` keeps the original keys. Such a weight is a :class:`~tcomp.ir.Call` of a
:class:`tcomp.codegen.folded.CachedFunction` whose inputs are program constants (computed once, recomputed when a
parameter changes, differentiated in backward).

:func:`weight_recipe` recognises a weight-only value (a constant, a cached function of constants, or a reshape of a
constant) as a function of constants; :func:`cached_call` applies a further function to it, composing with the
existing recipe (:class:`tcomp.codegen.folded.Compose`) so that a weight rewritten twice is one cache of the original
parameters, never a cache of a cache. This module is shared by the fold_bn, algebraic and layout passes; it is not
a pass itself.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from tcomp.ir import Call, Network, Op, Program, Value
from tcomp.codegen.folded import CachedFunction, Compose


@dataclass(frozen=True)
class WeightRecipe:
    """``fn(*inputs)`` over program constants; ``fn`` None means the single constant itself."""

    fn: Callable[..., torch.Tensor] | None
    inputs: tuple[Value, ...]


def is_cached_call(op: Op | None) -> bool:
    return isinstance(op, Call) and op.kind == "module" and isinstance(op.module, CachedFunction)


def weight_recipe(value: Value, producers: dict[int, Op]) -> WeightRecipe | None:
    """``value`` as a function of constants, or None when it depends on the inputs (or is not recognised)."""
    if not value.is_tensor:
        return None
    if value.kind == "const":
        return WeightRecipe(None, (value,))
    op = producers.get(id(value))
    if is_cached_call(op) and not op.kwargs and all(isinstance(a, Value) and a.kind == "const" for a in op.args):
        return WeightRecipe(op.module.fn, tuple(op.args))
    if isinstance(op, Network) and len(op.operands) == 1 and not op.epilogue and op.operands[0].kind == "const" \
            and op.flat_operand_indices()[0] == op.flat_out_indices and all(isinstance(s, int) for s in value.shape):
        return WeightRecipe(functools.partial(torch.reshape, shape=tuple(value.shape)), op.operands)
    return None


def cached_call(target: str, out: Value, fn: Callable[..., torch.Tensor], recipe: WeightRecipe,
                extra: tuple[Value, ...] = ()) -> Call:
    """A Call computing ``fn(recipe(...), *extra)`` once and caching it, as submodule ``target`` (``tcomp.…``)."""
    composed = fn if recipe.fn is None else Compose(fn, recipe.fn, len(recipe.inputs))
    return Call(out, target, "module", (*recipe.inputs, *extra), {}, module=CachedFunction(composed))


class Constants:
    """Program constants for parameters and buffers of the model that a rewrite starts to read directly (those of
    a module that was called as a whole): found by qualified name, or made once and added to the program only
    when an op that is kept reads them (:meth:`register`)."""

    def __init__(self, program: Program):
        self.program = program
        self.made: dict[str, Value] = {}

    def get(self, qualname: str, tensor: torch.Tensor) -> Value:
        v = self.program.constants.get(qualname) or self.made.get(qualname)
        if v is None:
            v = Value(qualname, tuple(int(s) for s in tensor.shape), tensor.dtype, kind="const", data=tensor,
                      trainable=isinstance(tensor, nn.Parameter) and tensor.requires_grad)
            self.made[qualname] = v
        return v

    def register(self) -> None:
        """Add the made constants that the program's ops read to ``program.constants``."""
        read = {id(v) for op in self.program.ops for v in op.inputs()}
        for name, v in self.made.items():
            if id(v) in read:
                self.program.constants[name] = v
