"""Rematerialization as a library: schedule a DAG's computations under a memory budget (Moccasin, Bartan et al.,
ICML 2023, on OR-Tools CP-SAT, from a greedy heuristic's hint), simulate any schedule's peak, and measure a
callable's peak memory with the profiler.

The pass that applies these to a model's training step (AOTAutograd's joint graph, coarsened and partitioned) is
:mod:`tcomp.passes.rematerialize`. See docs/passes/rematerialize.md.
"""
from .measure import measure_peak_memory
from .result import BudgetInfeasibleError, Schedule, ScheduleError
from .simulate import simulate
from .solve import schedule

__all__ = ["BudgetInfeasibleError", "Schedule", "ScheduleError", "measure_peak_memory", "schedule", "simulate"]
