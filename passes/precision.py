"""precision (approximate): reduced-precision options for every Network — bf16 operands — and int8 options for
linear layers.

A Network with a ``compute_dtype`` casts its operands (weights once, through a cached cast; activations with
``.to``), multiplies in that dtype with the GEMM's fp32 accumulation, and returns a result of that dtype; the
pointwise ops and calls after it then run in it too until a promotion (:func:`tcomp.approx.apply.propagate_dtypes`),
and the program's outputs are cast back. Measured on all-MiniLM-L6-v2 before this pass existed: bf16 throughout
keeps the embedding cosine at 0.99998 — on most models the cheapest accuracy-for-speed trade, so the selection must
see it.

The dtype is offered only where the device multiplies in it faster than in float32 (:func:`tcomp.cost.gemm_speedup`,
measured once per machine: a 512³ GEMM); for linear sites each structured option is also offered in that dtype. The
program in bf16 throughout (:func:`tcomp.approx.precision.throughout`) is weighed by the select pass as a base.

Int8 (:mod:`tcomp.codegen.quantized`: per-channel int8 weights, per-row int8 activations quantized at every call,
an int32-accumulating ``torch._int_mm``) is offered for each linear site of that shape where an int8 linear layer
measures faster than a float32 one here (:func:`int8_speedup`) — on a CPU whose bf16 GEMMs are slow (AVX2 without
AVX512-BF16) int8 is often the only reduced precision that pays. The select pass measures each option's own time
and error like any other.
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F

from tcomp.approx.apply import int8_bias, int8_refused
from tcomp.approx.precision import short_name
from tcomp.codegen.quantized import int8_linear, pack_int8
from tcomp.cost import gemm_speedup
from tcomp.distributed import agree
from tcomp.ir import Program
from tcomp.ir.sites import Option, find_sites
from tcomp.passmanager import Pass, PassContext, PassReport
from tcomp.timing import fastest_time

NAME = "precision"
DTYPE = torch.bfloat16
MIN_SPEEDUP = 1.2      # a reduced-precision product this much faster than float32 here, or no options of it
MIN_INT8_WIDTH = 64    # narrower layers: quantizing the activation costs more than the product saves


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    new.sites = sites = program.sites if program.sites is not None else find_sites(program)
    if ctx.earlier_selection is not None:
        return new, PassReport(NAME, notes=["an earlier selection is re-applied: no new options"])
    report = PassReport(NAME)
    _reduced_float_options(sites, report)
    refused = int8_refused(ctx.example_inputs, ctx.training)
    if refused:
        report.notes.append(f"no int8 options {refused}")
    else:
        _int8_options(new, sites, report)
    return new, report


def _reduced_float_options(sites: dict, report: PassReport) -> None:
    speedup = agree(gemm_speedup(DTYPE))  # rank 0's reading on every rank: all ranks are offered the same options
    if speedup < MIN_SPEEDUP:
        report.notes.append(f"{DTYPE} GEMMs are not faster here ({speedup:.2f}x a float32 GEMM): no {DTYPE} options")
        return
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


def _int8_options(program: Program, sites: dict, report: PassReport) -> None:
    speedup = agree(int8_speedup())
    if speedup < MIN_SPEEDUP:
        report.notes.append(f"int8 linear layers are not faster here ({speedup:.2f}x float32): no int8 options")
        return
    ops = {op.out.name: op for op in program.ops}
    count = 0
    for name, site in sites.items():
        site.options = [o for o in site.options if o.kind != "int8"]
        wide = site.kind == "linear" and min(site.weight.shape) >= MIN_INT8_WIDTH
        if wide and int8_bias(ops[name], site) is not False:
            site.options.append(Option(name, "int8", "int8"))
            count += 1
    report.notes.append(f"{count} int8 option(s) (an int8 linear layer {speedup:.2f}x float32 here)")


@functools.cache
def int8_speedup() -> float:
    """How much faster a 512×512 linear layer on 512 rows runs as int8 (:func:`tcomp.codegen.quantized.int8_linear`,
    its activations quantized at the call) than in float32 here, measured once per process (not kept on disk: one
    reading taken under load would otherwise decide for every later process)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g) for shape in ((512, 512), (512, 512), (512,)))
    return fastest_time(F.linear, (x, w, b), 7) / fastest_time(int8_linear, (x, pack_int8(w), b), 7)


PASS = Pass(NAME, run, exact=False, ensures=("sites",), doc=__doc__.splitlines()[0])
