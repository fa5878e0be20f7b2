"""Reduced precision throughout: the whole program computing in bf16 (or fp16), as ``model.to(torch.bfloat16)``
would run it but with float32 master weights.

Per-Network precision (an option of the precision pass) leaves float32 islands: a bf16 projection added to a float32
residual stream promotes it back, so every layer casts its input again and the adds and norms run in float32
(measured on all-MiniLM-L6-v2: bf16 on every linear site ran 1.33× eager, the model cast to bf16 1.86×).
:func:`throughout` avoids them; the selection weighs it as a base for the per-site choices
(:mod:`tcomp.approx.selection`).
"""
from __future__ import annotations

import dataclasses

import torch

from tcomp.ir import Call, Network, Pointwise, Program, Value, is_pure, substitute_inputs
from tcomp.ir.names import Names

from .apply import propagate_dtypes, with_dtype


def short_name(dtype: torch.dtype) -> str:
    """``bf16``, ``fp16``: how options, notes and cast values name a reduced dtype."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def _explicit_cast(op) -> bool:
    """Whether ``op`` is the model's own conversion to a floating dtype (``.float()``, ``.to(torch.float32)``)."""
    if isinstance(op, Pointwise):
        return op.fn == "to"
    if isinstance(op, Call) and op.kind == "method":
        return op.target in ("float", "double", "to", "type")
    return False


def throughout(program: Program, dtype: torch.dtype, example_inputs: tuple) -> Program | None:
    """``program`` computing in ``dtype`` throughout: every float32 Network computes in it, every float32
    activation made from no floating activation (a float input, an embedding lookup, a slice of a weight) is cast to
    it once where it is made (for its readers; the program's outputs keep their values and dtypes), and a pointwise
    op's float32 constants are cast (once each), so that nothing promotes back; calls follow their inputs (a
    LayerNorm reads bf16 with its float32 weights), and what the program returns is cast back to its dtype
    (:func:`tcomp.approx.apply.propagate_dtypes`). Weights stay float32 masters (Networks cast them once per update).
    An explicit float32 cast in the model (``.float()``, ``softmax(..., dtype=torch.float32)``) still makes float32
    after it, and so does one made from an integer (positions turned into angles): it is the model's own choice.
    None when the program cannot run so: an op writes in place (it would write into a cast copy), or an op refuses
    bf16 input.
    A convolution module reads its input cast to its weights' dtype (:mod:`tcomp.codegen.emit`), so a CNN's convolutions
    stay float32 here."""
    if not all(is_pure(op) for op in program.ops):
        return None
    new = program.copy()
    new.ops = []
    names = Names(program)
    mapping: dict[int, Value] = {}   # a float32 source (input, constant, lookup) -> its cast, for readers
    floating: set[int] = set()       # ids of floating activations: in ``dtype``, or float32 by the model's own cast

    def cast(v: Value) -> Value:
        if id(v) not in mapping:
            out = dataclasses.replace(v, name=names.fresh(f"{v.name}_{short_name(dtype)}"), dtype=dtype, kind="op",
                                      data=None, trainable=False)
            new.ops.append(Pointwise(out, "to", torch.Tensor.to, (v, dtype)))
            floating.add(id(out))
            mapping[id(v)] = out
        return mapping[id(v)]

    def is_f32(v: Value) -> bool:
        return v.is_tensor and v.dtype == torch.float32

    for v in program.inputs:
        if is_f32(v):
            cast(v)
    for op in program.ops:
        if isinstance(op, Pointwise):
            for v in op.inputs():
                if v.kind == "const" and is_f32(v):
                    cast(v)
        op = substitute_inputs(op, mapping) if mapping else op
        if isinstance(op, Network) and is_f32(op.out):
            op = with_dtype(op, dtype)
        new.ops.append(op)
        if not (op.out.is_tensor and op.out.dtype is not None and op.out.dtype.is_floating_point):
            continue
        if (isinstance(op, Network) and op.compute_dtype == dtype) or _explicit_cast(op) or \
                any(id(v) in floating for v in op.inputs()):
            floating.add(id(op.out))  # what follows it takes its dtype from it
        elif is_f32(op.out):
            cast(op.out)
    try:
        new.check()
        return propagate_dtypes(new, example_inputs)
    except (RuntimeError, TypeError, ValueError):
        return None
