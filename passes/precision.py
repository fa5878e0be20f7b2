"""precision (approximate): reduced-precision options for every Network — bf16 (or fp16) operands.

A Network with a ``compute_dtype`` casts its operands (weights once, through a cached cast; activations with
``.to``), multiplies in that dtype with the GEMM's fp32 accumulation, and returns a result of that dtype; the
pointwise ops and calls after it then run in it too until a promotion (``tcomp.candidates.propagate_dtypes``), and
the program's outputs are cast back. Measured on all-MiniLM-L6-v2 before this pass existed: bf16 throughout keeps
the embedding cosine at 0.99998 — on most models the cheapest accuracy-for-speed trade, so the selection must see it.

The dtype is offered only where the device multiplies in it faster than in float32 (measured once: a 512³ GEMM,
cached with the calibration); for linear sites each structured option is also offered in that dtype.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from tcomp.candidates import Option, find_sites
from tcomp.ir import Program
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


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
