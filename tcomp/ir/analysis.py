"""What ops may do besides computing their result: write in place, draw random numbers.

:func:`mutation` finds the first op that writes a tensor in place (rewrites that merge or move ops, CSE and
select_through, leave such a program alone); :func:`deterministic` says whether an op always computes the same
result from the same inputs (only those may be merged). :func:`tcomp.ir.ops.is_pure` — whether dropping an unread op
changes nothing — is the third such question, kept with the ops because dead-code elimination needs it.
"""
from __future__ import annotations

import operator

import torch

from .ops import Call, Network, Op, Pointwise, is_pure

_IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                       operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
                       operator.irshift, operator.imatmul, operator.setitem}
_RANDOM_PREFIXES = ("rand", "empty", "new_empty", "bernoulli", "multinomial", "poisson", "rrelu")
_RANDOM_NAMES = {"normal", "uniform", "exponential", "geometric", "cauchy", "log_normal"}


def mutation(program) -> Op | None:
    """The first op that writes a tensor in place (a stateful submodule updating its own buffers does not count:
    no program value aliases them), or None."""
    return next((op for op in program.ops if writes_in_place(op)), None)


def writes_in_place(op: Op) -> bool:
    """Whether ``op`` writes a program value in place (see :func:`mutation`)."""
    if isinstance(op, Call) and op.kind == "module":
        return False
    return not is_pure(op) or (isinstance(op, Call) and op.target in _IN_PLACE_OPERATORS) \
        or (isinstance(op, Pointwise) and op.kwargs.get("inplace") is True)


def deterministic(op: Op) -> bool:
    """Whether ``op`` always computes the same result from the same inputs, with no effect besides its result."""
    if isinstance(op, Network):
        return True
    if isinstance(op, Pointwise):
        return op.kwargs.get("inplace") is not True
    if not is_pure(op) or "generator" in op.kwargs:
        return False
    if op.kind == "module":
        return not any(m.training for m in op.module.modules())
    if isinstance(op.target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in op.target.tags:
        return False
    name = op.target if op.kind == "method" else getattr(op.target, "__name__", "")
    if not isinstance(name, str):
        return True
    name = name.lstrip("_").lower()
    return not (name.startswith(_RANDOM_PREFIXES) or name in _RANDOM_NAMES or "dropout" in name)
