"""precision (approximate): reduced-precision options for every Network — bf16 operands.

A Network with a ``compute_dtype`` casts its operands (weights once, through a cached cast; activations with
``.to``), multiplies in that dtype with the GEMM's fp32 accumulation, and returns a result of that dtype; the
pointwise ops and calls after it then run in it too until a promotion (:func:`tcomp.approx.apply.propagate_dtypes`),
and the program's outputs are cast back. Measured on all-MiniLM-L6-v2 before this pass existed: bf16 throughout
keeps the embedding cosine at 0.99998 — on most models the cheapest accuracy-for-speed trade, so the selection must
see it.

The dtype is offered only where the device multiplies in it faster than in float32 (:func:`tcomp.cost.gemm_speedup`,
measured once per machine: a 512³ GEMM); for linear sites each structured option is also offered in that dtype. The
program in bf16 throughout (:func:`tcomp.approx.precision.throughout`) is weighed by the select pass as a base.
"""
from __future__ import annotations

import dataclasses

import torch

from tcomp.approx.precision import short_name
from tcomp.cost import gemm_speedup
from tcomp.ir import Program
from tcomp.ir.sites import Option, find_sites
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "precision"
DTYPE = torch.bfloat16


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    new.sites = sites = program.sites if program.sites is not None else find_sites(program)
    if ctx.earlier_selection is not None:
        return new, PassReport(NAME, notes=["an earlier selection is re-applied: no new options"])
    report = PassReport(NAME)
    speedup = gemm_speedup(DTYPE)
    if speedup < 1.2:
        report.notes.append(f"{DTYPE} GEMMs are not faster here ({speedup:.2f}x a float32 GEMM): no options")
        return new, report
    short = short_name(DTYPE)
    count = 0
    for name, site in sites.items():
        if site.kind not in ("linear", "network"):
            continue
        structured = [o for o in site.options if o.kind == "structure"]
        site.options = [o for o in site.options if o.kind != "precision"]
        site.options.append(Option(name, "precision", short, dtype=DTYPE))
        site.options += [dataclasses.replace(o, kind="precision", name=f"{o.name}+{short}", dtype=DTYPE)
                         for o in structured]
        count += 1 + len(structured)
    report.notes.append(f"{count} {short} option(s) ({short} GEMM {speedup:.2f}x float32 here)")
    return new, report


PASS = Pass(NAME, run, exact=False, ensures=("sites",), doc=__doc__.splitlines()[0])
