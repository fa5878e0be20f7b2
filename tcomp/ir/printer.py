"""The printed form of a Program: one op a line, jaxpr-style — tcomp's debugging tool and what ``tcomp inspect``
shows.

``%up = network ad,cd->ac (%norm, up.weight) ; add(acc, up.bias)   f32[B,256]   49152*B flop``: the result, the
op's kind (``network``, ``relabel`` for a pure reshape/permute, ``pointwise``, ``call``), its grouped equation or
target, its operands, its epilogue, then the result's type and its cost: a planned Network's FLOPs, or whatever the
caller annotates (the pass manager's snapshots give every Network's, :func:`tcomp.contract.costs.flops_note`). A
planned Network's contraction tree is printed under it, one step a line.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .ops import DTYPE_SHORT, Network, Op, Pointwise, Value


def _format_arg(a: Any) -> str:
    if isinstance(a, Value):
        return a.ref()
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_format_arg(x) for x in a)
        return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k}: {_format_arg(v)}" for k, v in a.items()) + "}"
    if isinstance(a, torch.dtype):
        return DTYPE_SHORT.get(a, str(a))
    if isinstance(a, float):
        return f"{a:.6g}"
    return repr(a)


def _format_args(args: tuple, kwargs: dict) -> str:
    parts = [_format_arg(a) for a in args] + [f"{k}={_format_arg(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def format_op(op: Op) -> str:
    """One line of the printed program for ``op`` (without the type/cost columns)."""
    lhs = f"%{op.out.name} ="
    if isinstance(op, Network):
        operands = ", ".join(v.ref() for v in op.operands)
        epi = format_epilogue(op)
        kind = "relabel" if op.is_relabel and not op.epilogue else "network"
        if op.compute_dtype is not None:
            kind += f"[{DTYPE_SHORT.get(op.compute_dtype, op.compute_dtype)}]"
        if op.kernel is not None:
            kind += f"@{op.kernel}"
        return f"{lhs} {kind} {op.grouped_equation()} ({operands}){epi}"
    if isinstance(op, Pointwise):
        return f"{lhs} pointwise {op.fn}({_format_args(op.args, op.kwargs)})"
    return f"{lhs} call {op.target_name}({_format_args(op.args, op.kwargs)})"


def _planned_flops(op: Op) -> str:
    return f"   {op.plan.cost.flops_str()} flop" if isinstance(op, Network) and op.plan is not None else ""


def format_epilogue(net: Network) -> str:
    return "".join(f" ; {e.fn}({_format_args(e.args, e.kwargs)})" for e in net.epilogue)


def format_program(program, annotate: Callable[[Op], str] | None = None) -> str:
    """``program`` printed; ``annotate(op)`` adds text after an op's type (the pass manager gives every Network's
    FLOPs, :func:`tcomp.contract.costs.flops_note`); by default a planned Network shows its plan's FLOPs."""
    annotate = annotate or _planned_flops
    ins = ", ".join(f"{v.name}: {v.type_str()}" for v in program.inputs)
    outs = ", ".join(v.type_str() for v in program.output_values())
    lines = [f"program {program.name}({ins}) -> {outs}"]
    rows = []
    for op in program.ops:
        info = op.out.type_str() + annotate(op)
        rows.append((format_op(op), info))
        if isinstance(op, Network) and op.plan is not None:
            for line in op.plan.format(op).splitlines():
                rows.append(("    " + line, ""))
    width = min(max((len(t) for t, _ in rows), default=0), 100)
    for text, info in rows:
        lines.append(f"  {text.ljust(width)}   {info}".rstrip())
    lines.append(f"  return {_format_args((program.output,), {})}")
    return "\n".join(lines)
