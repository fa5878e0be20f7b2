"""Rematerialization under a memory budget: Moccasin (Bartan et al., ICML 2023) on OR-Tools CP-SAT.

`schedule` finds the cheapest order of computations (with recomputations) of a DAG whose simulated peak memory
fits a budget, and `simulate` gives the peak of any such order; `rematerialize_module` applies them to a model's
training step (AOTAutograd joint graph, coarsened), and `measure_peak_memory` measures a step's peak. See
docs/passes/rematerialize.md.
"""
from .measure import measure_peak_memory
from .result import BudgetInfeasibleError, Schedule, ScheduleError
from .simulate import simulate
from .solve import schedule
from .training import RematerializedModule, RematReport, rematerialize_module

__all__ = [
    "BudgetInfeasibleError", "RematReport", "RematerializedModule", "Schedule", "ScheduleError",
    "measure_peak_memory", "rematerialize_module", "schedule", "simulate",
]
