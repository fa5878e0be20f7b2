"""Public API of rematerialization (issue 5): schedule a DAG under a memory budget, simulate a schedule's peak,
and rematerialize a model's training step.

A thin re-export of `tcomp.passes.rematerialize` (Moccasin on CP-SAT); see docs/passes/rematerialize.md.
"""
from tcomp.passes.rematerialize import (
    BudgetInfeasibleError,
    RematerializedModule,
    RematReport,
    Schedule,
    ScheduleError,
    measure_peak_memory,
    rematerialize_module,
    schedule,
    simulate,
)

__all__ = [
    "BudgetInfeasibleError", "RematReport", "RematerializedModule", "Schedule", "ScheduleError",
    "measure_peak_memory", "rematerialize_module", "schedule", "simulate",
]
