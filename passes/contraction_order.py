"""contraction_order: a contraction tree for every Network, planned once at compile time.

Each Network gets the cheapest of its candidate trees (opt_einsum's searches, tcomp's large-network path search,
constants first, the pre-fusion order) under tcomp's layout-aware cost model, its steps lowered to GEMMs without
transposition copies where strides allow, and weight-only sub-trees folded once. The algorithm is the library
:func:`tcomp.contract.search.plan_program` (docs/passes/contraction_order.md); the pass applies it to the program
and ensures the property ``planned``.
"""
from __future__ import annotations

from tcomp.contract.search import plan_program
from tcomp.ir import Program
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "contraction_order"


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new, done = plan_program(program, training=ctx.training, machine=ctx.machine, measure=True)
    report = PassReport(NAME, changed=done.planned > 0)
    report.notes.append(f"planned {done.planned} network(s) in {done.seconds:.2f} s; {done.folded} constant step(s) "
                        f"folded; {done.copies} transposition copies left")
    report.details = {"methods": done.methods}
    return new, report


PASS = Pass(NAME, run, exact=True, ensures=("planned",), doc=__doc__.splitlines()[0])
