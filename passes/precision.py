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

from tcomp.candidates import Option, find_sites, propagate_dtypes, with_dtype
from tcomp.ir import Network, Pointwise, Program, Value, substitute_inputs
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
    short = str(dtype).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")
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


def throughout(program: Program, dtype: torch.dtype, example_inputs: tuple) -> Program | None:
    """``program`` computing in ``dtype`` throughout: every floating Network computes in it, every floating
    activation made from no floating activation (a floating input, an embedding lookup, a slice of a weight) is
    cast to it where it is made, and a pointwise op's floating constants are cast too, so that nothing promotes
    back to float32; calls follow their inputs (a LayerNorm reads bf16 with its float32 weights) and the outputs are
    cast back to their dtypes (:func:`tcomp.candidates.propagate_dtypes`). Weights stay float32 masters, cast once
    per update. None when some op refuses the mixture (a convolution module with float32 weights on bf16 input)."""
    new = program.copy()
    new.ops = []
    mapping: dict[int, Value] = {}
    floating: set[int] = set()       # ids of the floating activations of the new program

    def cast(v: Value) -> Value:
        short = str(dtype).replace("torch.", "")
        out = Value(f"{v.name}_{short}", v.shape, dtype)
        new.ops.append(Pointwise(out, "to", torch.Tensor.to, (v, dtype)))
        floating.add(id(out))
        return out

    def is_float(v: Value) -> bool:
        return v.is_tensor and v.dtype is not None and v.dtype.is_floating_point

    for v in program.inputs:
        if is_float(v):
            mapping[id(v)] = cast(v)
    for op in program.ops:
        op = substitute_inputs(op, mapping) if mapping else op
        reads_float = any(id(v) in floating for v in op.inputs())
        if isinstance(op, Pointwise):
            consts = {id(v): cast(v) for v in op.inputs() if v.kind == "const" and is_float(v)}
            op = substitute_inputs(op, consts) if consts else op
        if isinstance(op, Network) and is_float(op.out):
            op = with_dtype(op, dtype)
        new.ops.append(op)
        if not is_float(op.out):
            continue
        if reads_float or isinstance(op, Network):
            floating.add(id(op.out))
        else:
            mapping[id(op.out)] = cast(op.out)
    new.output = torch.utils._pytree.tree_map(lambda v: mapping.get(id(v), v) if isinstance(v, Value) else v,
                                              new.output)
    try:
        new.check()
        return propagate_dtypes(new, example_inputs)
    except (RuntimeError, TypeError, ValueError):
        return None


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
