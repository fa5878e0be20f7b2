"""structured (approximate): candidate structured replacements for every linear site's dense weight.

For each Network with the shape of a Linear or a 1×1 convolution (:func:`tcomp.ir.sites.linear_site`), proposes
closed-form projections of its weight ``W[o,i]`` (``tcomp.approx.factorize``; nothing is trained here):

- low-rank: activation-aware SVD when calibration statistics of the layer's input are known (minimises
  ``‖XWᵀ − XW_rᵀ‖``), plain truncated SVD otherwise; optionally AFM (output-feature projection) and CUR — at ranks
  that halve, quarter, ... the dense cost;
- Monarch (Dao et al. 2022) with block counts that divide both dimensions, and a Block Tensor-Train of rank 4
  (Qiu et al. 2024);
- a Kronecker sum when asked for (``methods`` includes "kronecker"; slow on CPUs for skinny factors).

The options are only proposals: the select pass measures each one's time and end-to-end error and chooses.
Options whose FLOPs would not be below the dense layer's are not proposed. Which methods are proposed is the
``structures`` option of ``tcomp.compile`` (default ``("asvd", "monarch", "btt")``).
"""
from __future__ import annotations

import math

import torch

from tcomp.approx.calibration import site_statistics
from tcomp.ir.sites import find_sites, Option
from tcomp.ir import Program
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.approx.factorize import activation_aware_svd, btt, cur, kronecker, monarch, output_projection, truncated_svd

NAME = "structured"
DEFAULT_METHODS = ("asvd", "monarch", "btt")
RANK_FRACTIONS = (1 / 2, 1 / 4, 1 / 8)
MIN_SIZE = 64


def _ranks(o: int, i: int) -> list[int]:
    """Ranks whose factorization costs at most ~70% of the dense product."""
    limit = 0.7 * o * i / (o + i)
    ranks = sorted({max(4, int(min(o, i) * f)) for f in RANK_FRACTIONS}, reverse=True)
    return [r for r in ranks if r <= limit]


def _block_counts(o: int, i: int) -> list[int]:
    """Up to three block counts that divide both dimensions, around √min(o, i) (the FLOP-optimal Monarch)."""
    fits = [b for b in (4, 8, 16, 32, 64) if o % b == 0 and i % b == 0 and b * b <= min(o, i) * 4]
    return sorted(fits, key=lambda b: abs(math.log(b * b / min(o, i))))[:3]


def propose(weight: torch.Tensor, stats, methods) -> list[Option]:
    """Structured options for one weight (``[o,i]`` or ``[o,i,1,1]``)."""
    w2 = weight.detach().reshape(weight.shape[0], weight.shape[1]).float()
    o, i = w2.shape
    out: list[Option] = []
    if min(o, i) < MIN_SIZE:
        return out
    for r in _ranks(o, i):
        if "asvd" in methods:
            fn = activation_aware_svd(weight.detach().float(), stats, r) if stats is not None else \
                truncated_svd(weight.detach().float(), r)
            out.append(Option("", "structure", f"{fn.method}(rank={r})", fn, params={"rank": r}))
        if "svd" in methods and stats is not None:
            fn = truncated_svd(weight.detach().float(), r)
            out.append(Option("", "structure", f"svd(rank={r})", fn, params={"rank": r}))
        if "afm" in methods and stats is not None:
            fn, new_bias = output_projection(weight.detach().float(), stats, r)
            out.append(Option("", "structure", f"afm(rank={r})", fn, params={"rank": r, "bias": new_bias}))
        if "cur" in methods and stats is not None:
            fn = cur(weight.detach().float(), stats, r)
            out.append(Option("", "structure", f"cur(rank={r})", fn, params={"rank": r}))
    for b in _block_counts(o, i):
        if "monarch" in methods:
            out.append(Option("", "structure", f"monarch(blocks={b})", monarch(weight.detach().float(), b),
                              params={"blocks": b}))
        if "btt" in methods and min(o, i) // b >= 4 and b in (8, 16):
            out.append(Option("", "structure", f"btt(blocks={b},rank=4)", btt(weight.detach().float(), b, 4),
                              params={"blocks": b, "rank": 4}))
    if "kronecker" in methods:
        a = (_near_sqrt(o), _near_sqrt(i))
        fn = kronecker(weight.detach().float(), 2, a)
        out.append(Option("", "structure", f"kronecker(terms=2,a={a})", fn, params={"terms": 2, "a_shape": a}))
    for opt in out:
        opt.local_error = _local_error(w2, opt.factors.dense().reshape(o, i).float(), stats)
    return out


def _near_sqrt(n: int) -> int:
    best = 1
    for d in range(1, int(math.isqrt(n)) + 1):
        if n % d == 0:
            best = d
    return best


def _local_error(w: torch.Tensor, approx: torch.Tensor, stats) -> float:
    """``‖X(W−W̃)ᵀ‖/‖XWᵀ‖`` with the calibration second moment when known, else ``‖W−W̃‖/‖W‖``."""
    d = (w - approx).double()
    if stats is None:
        return (d.norm() / w.double().norm()).item()
    c = stats.second_moment
    num = torch.einsum("oi,ij,oj->", d, c, d).clamp_min(0).sqrt()
    den = torch.einsum("oi,ij,oj->", w.double(), c, w.double()).clamp_min(1e-30).sqrt()
    return (num / den).item()


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    new.sites = sites = program.sites if program.sites is not None else find_sites(program)
    if ctx.earlier_selection is not None:
        return new, PassReport(NAME, notes=["an earlier selection is re-applied: no new options"])
    methods = tuple(ctx.options.structures or DEFAULT_METHODS)
    stats = site_statistics(program, ctx.calibration, ctx.measurements)
    proposed = 0
    for name, site in sites.items():
        if site.kind != "linear" or site.weight.data is None:
            continue
        options = ctx.measurements.remember(NAME, name, methods, compute=lambda site=site, name=name: propose(
            site.weight.data, stats.get(name), methods))
        for opt in options:
            opt.site = name
        site.options = [o for o in site.options if o.kind != "structure"] + options
        proposed += len(options)
    report = PassReport(NAME)
    report.notes.append(f"{proposed} structured option(s) for {sum(s.kind == 'linear' for s in sites.values())} "
                        f"linear site(s); methods {', '.join(methods)}")
    return new, report


PASS = Pass(NAME, run, exact=False, ensures=("sites",), doc=__doc__.splitlines()[0])
