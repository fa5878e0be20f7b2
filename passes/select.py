"""select (approximate): one option per site under a global error budget — a multiple-choice knapsack on CP-SAT.

The sites' options (proposed by the structured, precision and tucker passes) are measured — time against the dense
site, end-to-end sensitivity on the calibration data — and chosen to maximise the time saved within the tolerance
(or to reach ``target_speedup`` at the least error), on the float32 program and on the program in bf16 throughout;
the choice is applied, verified on held-out batches and tightened until within the tolerance, optionally healed.
The algorithm is :func:`tcomp.approx.selection.select` (docs/passes/approximate.md). The report lists every site's
options and choice; the selection is returned in the report, so that a recompilation re-applies it
(:func:`tcomp.approx.selection.reapply`) instead of measuring again.
"""
from __future__ import annotations

import torch

from tcomp.approx.selection import PROGRAM, Job, Selection, reapply, select
from tcomp.distributed import agree
from tcomp.ir import Program
from tcomp.ir.sites import Option
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "select"


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    earlier = ctx.earlier_selection
    if earlier is not None:
        what = f" ({earlier.throughout.name})" if earlier.throughout is not None else ""
        new, notes = reapply(program, earlier, ctx.example_inputs, ctx.training)
        return new, PassReport(
            NAME, changed=bool(earlier), selection=earlier,
            notes=[f"re-applied the earlier selection to {len(earlier.sites)} site(s){what} (no new measurement)",
                   *notes])
    opts = ctx.options
    if ctx.calibration is None or not opts.approximate or not any(s.options for s in program.sites.values()):
        return program, PassReport(NAME, notes=["no approximation requested or nothing to approximate: program "
                                                "unchanged"])
    result = select(Job(program, ctx.calibration, ctx.measurements, ctx.example_inputs, ctx.training,
                        opts.tolerance, opts.target_speedup, opts.heal_config, ctx.machine))
    new, selection = result.program, result.selection
    chosen = agree(_names(selection))  # under torch.distributed every rank runs rank 0's choice
    if chosen != _names(selection):
        selection = _by_names(program, chosen)
        new, notes = reapply(program, selection, ctx.example_inputs, ctx.training)
        result.notes += ["rank 0's selection, which this rank measured differently, is applied", *notes]
    return new, PassReport(NAME, changed=bool(selection), notes=result.notes, details=result.details,
                           selection=selection)


def _names(selection: Selection) -> tuple:
    """What a selection chose, by name: per site the option's name, and the precision throughout."""
    marker = selection.throughout
    return (tuple(sorted((n, o.name) for n, o in selection.sites.items())),
            None if marker is None else (marker.name, str(marker.dtype)))


def _by_names(program: Program, names: tuple) -> Selection:
    """The selection of ``names`` made of this program's own options (every rank proposes the same options: they
    are computed from the same weights)."""
    per_site, marker = names
    sites = {n: next(o for o in program.sites[n].options if o.name == name) for n, name in per_site}
    throughout = None
    if marker is not None:
        dtype = getattr(torch, marker[1].removeprefix("torch."))
        throughout = Option(PROGRAM, "precision", marker[0], dtype=dtype)
    return Selection(sites, throughout)


PASS = Pass(NAME, run, exact=False, requires=("sites",), doc=__doc__.splitlines()[0])
