"""precision (approximate): reduced-precision options for every Network — bf16 (or fp16) operands.

A Network with a ``compute_dtype`` casts its operands (weights once, through a cached cast; activations with
``.to``), multiplies in that dtype with the GEMM's fp32 accumulation, and returns a result of that dtype; the
pointwise ops and calls after it then run in it too until a promotion (``tcomp.candidates.propagate_dtypes``), and
the program's outputs are cast back. Measured on all-MiniLM-L6-v2 before this pass existed: bf16 throughout keeps
the embedding cosine at 0.99998 — on most models the cheapest accuracy-for-speed trade, so the selection must see it.

The dtype is offered only where the device multiplies in it faster than in float32 (measured once: a 512³ GEMM,
cached with the calibration); for linear sites each structured option is also offered in that dtype.

Per-Network precision leaves float32 islands: a bf16 projection added to a float32 residual stream promotes it back,
so every layer casts its input again and the adds and norms run in float32 (measured on all-MiniLM-L6-v2: bf16 on
every linear site ran 1.33× eager, the model cast to bf16 1.86×). :func:`throughout` is the other way: the whole
program in the dtype, as ``model.to(torch.bfloat16)`` would run it, but with float32 master weights; the select
pass weighs it as a base for the per-site choices (:mod:`passes.select`).
"""
from __future__ import annotations

import dataclasses
import time

import torch

from tcomp.approx.sites import Option, find_sites, propagate_dtypes, with_dtype
from tcomp.ir.program import Call, Network, Pointwise, Program, Value, is_pure, substitute_inputs
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "precision"
_SPEEDUP: dict[torch.dtype, float] = {}


def gemm_speedup(dtype: torch.dtype) -> float:
    """How much faster a 512×512×512 GEMM runs in ``dtype`` than in float32 on this CPU (measured once)."""
    if dtype not in _SPEEDUP:
        a, b = torch.randn(512, 512), torch.randn(512, 512)
        ar, br = a.to(dtype), b.to(dtype)

        def fastest(fn) -> float:
            fn()
            ts = []
            for _ in range(7):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return min(ts)  # other work on a shared machine only adds time

        with torch.no_grad():
            _SPEEDUP[dtype] = fastest(lambda: a @ b) / fastest(lambda: ar @ br)
    return _SPEEDUP[dtype]


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    if ctx.options.get("selection") is not None:
        return program, PassReport(NAME, notes=["an earlier selection is re-applied: no new options"])
    new = program.copy()
    dtype = ctx.options.get("precision_dtype") or torch.bfloat16
    report = PassReport(NAME, changed=False)
    speedup = gemm_speedup(dtype)
    if speedup < 1.2:
        report.notes.append(f"{dtype} GEMMs are not faster here ({speedup:.2f}x a float32 GEMM): no options")
        return new, report
    sites = new.sites or find_sites(new)
    short = short_name(dtype)
    count = 0
    for name, site in sites.items():
        if site.kind not in ("linear", "network"):
            continue
        structured = [o for o in site.options if o.kind == "structure"]
        site.options = [o for o in site.options if o.kind != "precision"]
        site.options.append(Option(name, "precision", short, dtype=dtype))
        site.options += [dataclasses.replace(o, kind="precision", name=f"{o.name}+{short}", dtype=dtype)
                         for o in structured]
        count += 1 + len(structured)
    new.sites = sites
    report.notes.append(f"{count} {short} option(s) ({short} GEMM {speedup:.2f}x float32 here)")
    return new, report


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
    (:func:`tcomp.candidates.propagate_dtypes`). Weights stay float32 masters (Networks cast them once per update).
    An explicit float32 cast in the model (``.float()``, ``softmax(..., dtype=torch.float32)``) still makes float32
    after it, and so does one made from an integer (positions turned into angles): it is the model's own choice.
    None when the program cannot run so: an op writes in place (it would write into a cast copy), or an op refuses
    bf16 input.
    A convolution module reads its input cast to its weights' dtype (:mod:`tcomp.emit`), so a CNN's convolutions
    stay float32 here."""
    from tcomp.rewrite.weights import Names

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


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
