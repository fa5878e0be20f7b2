"""Rematerialization under a memory budget: Moccasin (Bartan et al., ICML 2023) on OR-Tools CP-SAT.

`schedule` finds the cheapest order of computations (with recomputations) of a DAG whose simulated peak memory
fits a budget; `simulate` gives the peak of any such order. See docs/passes/rematerialize.md.
"""
from .result import BudgetInfeasibleError, Schedule, ScheduleError
from .simulate import simulate
from .solve import schedule

__all__ = ["BudgetInfeasibleError", "Schedule", "ScheduleError", "schedule", "simulate"]
