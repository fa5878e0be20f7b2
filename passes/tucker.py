"""tucker (approximate): Tucker-2 and CP options for k×k convolutions.

For every ``nn.Conv2d`` with a k×k kernel and one group (:func:`tcomp.ir.sites.conv_site`):

- Tucker-2 on the channel modes (Kim et al. 2016): ``1×1 conv c→r₁ → k×k conv r₁→r₂ → 1×1 conv r₂→o``, the factors
  from HOSVD (one HOOI sweep), the core shape ``(r₂, r₁)`` chosen by Tucker packing (Ghadiri et al. 2023, an
  OR-Tools integer program maximising the retained squared mode singular values subject to the parameter budget)
  at budgets of 1/2, 1/4 and 1/8 of the layer's parameters;
- CP of rank R (Lebedev et al. 2015; ALS with the norm bound of Phan et al. 2020 against diverging components):
  ``1×1 conv c→R → depthwise kh×1 → depthwise 1×kw → 1×1 conv R→o``, at the rank matching a 1/4 budget.
"""
from __future__ import annotations

import torch

from tcomp.ir.sites import find_sites, Option
from tcomp.ir import Call, Program
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.approx.factorize import cp, mode_singular_values, tucker2, tucker_packing

NAME = "tucker"
METHODS = ("tucker2", "cp")
BUDGETS = (1 / 2, 1 / 4, 1 / 8)
MIN_CHANNELS = 8


def propose(weight: torch.Tensor, methods: tuple[str, ...] = METHODS) -> list[Option]:
    w = weight.detach().float()
    o, c, kh, kw = w.shape
    full = o * c * kh * kw
    out: list[Option] = []
    if min(o, c) < MIN_CHANNELS:
        return out  # nothing to gain: a factor of so few channels costs about as much as the layer
    if "tucker2" in methods:
        sv = [mode_singular_values(w, 0).tolist(), mode_singular_values(w, 1).tolist()]
        seen = set()
        for frac in BUDGETS:
            budget = int(full * frac)
            try:
                packing = tucker_packing(sv, [o, c], budget, core_multiplier=kh * kw, time_limit=2.0)
            except ValueError:  # the budget is below the smallest core
                continue
            r_out, r_in = packing.ranks
            if (r_out, r_in) in seen or min(r_out, r_in) < 1:
                continue
            seen.add((r_out, r_in))
            fn = tucker2(w, r_out, r_in, hooi_iters=1)
            out.append(Option("", "conv", f"tucker2({r_out},{r_in})", fn, params={"ranks": (r_out, r_in),
                                                                                 "budget": frac}))
    if "cp" in methods:
        rank = max(4, int(full / 4 / (o + c + kh + kw)))
        fn = cp(w, rank, iters=60, generator=torch.Generator().manual_seed(0))
        out.append(Option("", "conv", f"cp(rank={rank})", fn, params={"rank": rank}))
    for opt in out:
        approx = opt.factors.dense().float()
        opt.local_error = ((approx - w).norm() / w.norm()).item()
    return out


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    new.sites = sites = program.sites if program.sites is not None else find_sites(program)
    if ctx.earlier_selection is not None:
        return new, PassReport(NAME, notes=["an earlier selection is re-applied: no new options"])
    by_name = {op.out.name: op for op in new.ops}
    count = 0
    for name, site in sites.items():
        if site.kind != "conv":
            continue
        call = by_name[name]
        assert isinstance(call, Call)
        options = ctx.measurements.remember(NAME, name, METHODS, compute=lambda call=call: propose(call.module.weight))
        for opt in options:
            opt.site = name
        site.options = [o for o in site.options if o.kind != "conv"] + options
        count += len(options)
    report = PassReport(NAME)
    report.notes.append(f"{count} Tucker-2/CP option(s) for {sum(s.kind == 'conv' for s in sites.values())} "
                        f"convolution(s)")
    return new, report


PASS = Pass(NAME, run, exact=False, ensures=("sites",), doc=__doc__.splitlines()[0])
