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

from tcomp.approx.selection import Job, reapply, select
from tcomp.ir import Program
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "select"


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    earlier = ctx.earlier_selection
    if earlier is not None:
        what = f" ({earlier.throughout.name})" if earlier.throughout is not None else ""
        return reapply(program, earlier, ctx.example_inputs), PassReport(
            NAME, changed=bool(earlier), selection=earlier,
            notes=[f"re-applied the earlier selection to {len(earlier.sites)} site(s){what} (no new measurement)"])
    opts = ctx.options
    if ctx.calibration is None or not opts.approximate or not any(s.options for s in program.sites.values()):
        return program, PassReport(NAME, notes=["no approximation requested or nothing to approximate: program "
                                                "unchanged"])
    result = select(Job(program, ctx.calibration, ctx.measurements, ctx.example_inputs, ctx.training,
                        opts.tolerance, opts.target_speedup, opts.heal_config, ctx.machine))
    return result.program, PassReport(NAME, changed=bool(result.selection), notes=result.notes,
                                      details=result.details, selection=result.selection)


PASS = Pass(NAME, run, exact=False, requires=("sites",), doc=__doc__.splitlines()[0])
