"""Public API of rematerialization (issue 5): schedule a DAG under a memory budget, simulate a schedule's peak.

A thin re-export of `tcomp.passes.rematerialize` (the Moccasin CP-SAT solver); see docs/passes/rematerialize.md.
"""
from tcomp.passes.rematerialize import BudgetInfeasibleError, Schedule, ScheduleError, schedule, simulate

__all__ = ["BudgetInfeasibleError", "Schedule", "ScheduleError", "schedule", "simulate"]
