"""What the rematerialization solver returns: the `Schedule`, and the errors it raises."""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """An execution order that may compute a node more than once, and what it costs.

    steps: node ids in execution order; a node appears again where it is recomputed.
    peak_memory: simulated peak (see `simulate`), never above `budget`.
    total_compute: sum of the compute cost of every step.
    tdi: total duration increase, (total_compute - sum of compute over the nodes) / that sum.
    status: "optimal" when no schedule in the solver's model (the fixed order, at most `max_computations`
        computations per node) computes less; "feasible" when the search stopped before proving it.
    found_by: "no-recompute", "heuristic" or "cp-sat": which stage produced these steps.
    time_to_first: seconds from the call until a first schedule within budget was found;
    time_to_best: until these steps were found; solve_time: seconds the call took.
    """

    steps: tuple[Hashable, ...]
    budget: int
    peak_memory: int
    total_compute: float
    tdi: float
    status: str
    found_by: str
    time_to_first: float
    time_to_best: float
    solve_time: float

    @property
    def recomputations(self) -> int:
        """How many steps compute a node that was computed before."""
        return len(self.steps) - len(set(self.steps))


class ScheduleError(ValueError):
    """A sequence of steps that cannot run: it reads a node that no earlier step computed, or names an unknown node."""


class BudgetInfeasibleError(ValueError):
    """No schedule within the memory budget was found (or none exists).

    budget: the budget asked for. smallest_feasible: the smallest budget for which a schedule was found.
    lower_bound: no schedule can peak below it (the largest node plus its inputs).
    proven: True when no schedule can exist in the solver's model; False when the search only ran out of time.
    reason: why, in words.
    """

    def __init__(self, budget: int, smallest_feasible: int, lower_bound: int, proven: bool, reason: str):
        self.budget = budget
        self.smallest_feasible = smallest_feasible
        self.lower_bound = lower_bound
        self.proven = proven
        self.reason = reason
        super().__init__(
            f"no schedule within the memory budget {budget}: {reason}; the smallest budget found feasible is "
            f"{smallest_feasible} (no schedule can peak below {lower_bound}, the largest node with its inputs)"
        )
