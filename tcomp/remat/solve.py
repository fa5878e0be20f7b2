"""`schedule`: the rematerialization pass's entry point, from a graph and a budget to a verified `Schedule`.

Phases, all inside one time limit:
  1. a budget at or above the no-recompute peak needs no recomputation (optimal at once); one below the largest
     node-with-inputs is impossible;
  2. the greedy split-and-recompute repair (`heuristic.py`) gives a schedule, in about a second or less;
  3. if it fails, a CP-SAT feasibility phase (the Moccasin model without objective) looks for one;
  4. the optimisation phase (`moccasin.py`) starts from that schedule as its hint and improves it until it is
     proven optimal or the time runs out (then the best schedule found is returned, marked "feasible").
Every returned schedule is simulated; a peak above the budget is an internal error, never a result.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import networkx as nx

from . import moccasin
from .heuristic import greedy_schedule
from .problem import Problem, Recomputations, drop_unread_recomputations, staged_steps
from .result import BudgetInfeasibleError, Schedule

HEURISTIC_SECONDS = 2.0
"""The heuristic tries no further ranking exponent after this many seconds (see heuristic.greedy_schedule)."""


def schedule(
    graph: nx.DiGraph,
    budget: float,
    *,
    order: Sequence[Hashable] | None = None,
    compute: str = "cost_cpu",
    memory: str = "cost_ram",
    workspace: str | None = None,
    max_computations: int = 2,
    time_limit: float = 60.0,
    workers: int | None = None,
    progress: bool = False,
) -> Schedule:
    """The cheapest schedule of `graph` found whose simulated peak memory is at most `budget`.

    graph: a DAG whose nodes carry a compute cost (attribute `compute`) and an integer output size (`memory`);
        `workspace` optionally names an integer attribute of temporaries that exist only while the node is
        computed (nodes without it have none).
    order: the topological order of first computations (default: a topological sort).
    max_computations: how many times a node may be computed at most (>= 1); a node whose attribute
        "recomputable" is False is computed once.
    time_limit: seconds for the whole call; workers: CP-SAT workers (None: one per core).
    progress: print each phase's result and each improvement to stderr.
    Raises BudgetInfeasibleError when no schedule within the budget is found (its message gives the smallest
    budget found feasible).
    """
    started = time.perf_counter()
    budget = _check_arguments(budget, max_computations, time_limit, workers)
    problem = Problem.from_graph(graph, order, compute, memory, max_computations, workspace)
    run = _Run(problem, budget, started, started + time_limit, workers, progress)
    if budget >= problem.no_recompute_peak:
        return run.finish(_Found([[] for _ in range(problem.n)], "no-recompute", time.perf_counter()), "optimal")
    if budget < problem.lower_bound:
        raise _infeasible(problem, budget, True, "it is below the largest node with its inputs")
    first = run.first_schedule(time_limit, max_computations)
    if time.perf_counter() >= run.deadline:
        return run.finish(first, "feasible")
    return run.improve(first)


@dataclass
class _Found:
    """A schedule within the budget (per node, its recomputations), which phase found it and when."""

    recomputations: Recomputations
    found_by: str
    found_at: float
    first_at: float | None = None   # when the first schedule within the budget was found (default: this one)

    def __post_init__(self):
        self.first_at = self.found_at if self.first_at is None else self.first_at


@dataclass
class _Run:
    """One call of :func:`schedule`: the problem, the budget, the clock, and the phases."""

    problem: Problem
    budget: int
    started: float
    deadline: float
    workers: int | None
    progress: bool

    def first_schedule(self, time_limit: float, max_computations: int) -> _Found:
        """Phases 2 and 3: the heuristic's schedule, else CP-SAT's first feasible one; BudgetInfeasibleError when
        neither finds one."""
        problem = self.problem
        best = greedy_schedule(problem, self.budget, deadline=self.started + HEURISTIC_SECONDS)
        if best is not None:
            self.report(f"heuristic: TDI {_tdi(problem, best):.4%}")
            return _Found(best, "heuristic", time.perf_counter())
        if time.perf_counter() >= self.deadline:
            raise _infeasible(problem, self.budget, False, f"none found within {time_limit} s")
        self.report("heuristic found no schedule; CP-SAT feasibility phase")
        result = moccasin.solve(problem, self.budget, hint=None, minimize=False,
                                time_limit=self.deadline - time.perf_counter(), workers=self.workers)
        if result.recomputations is None:
            proven = result.status == "infeasible"
            reason = "no schedule exists with this order and at most " \
                f"{max_computations} computations per node" if proven else f"none found within {time_limit} s"
            raise _infeasible(problem, self.budget, proven, reason)
        found = _Found(drop_unread_recomputations(problem, result.recomputations), "cp-sat", time.perf_counter())
        self.report(f"feasibility phase: TDI {_tdi(problem, found.recomputations):.4%}")
        return found

    def improve(self, first: _Found) -> Schedule:
        """Phase 4: CP-SAT minimising the recomputation, hinted with ``first``, until proven optimal or the time
        runs out; the better of the two."""
        problem = self.problem
        improved_at: list[float] = []

        def on_solution(recompute: float) -> None:
            improved_at.append(time.perf_counter())
            self.report(f"CP-SAT: TDI {recompute / problem.base_compute:.4%}" if problem.base_compute
                        else "CP-SAT: TDI 0")

        result = moccasin.solve(problem, self.budget, hint=first.recomputations, minimize=True,
                                time_limit=self.deadline - time.perf_counter(), workers=self.workers,
                                on_solution=on_solution)
        if result.recomputations is None:
            return self.finish(first, "feasible")
        improved = drop_unread_recomputations(problem, result.recomputations)
        if _total(problem, improved) < _total(problem, first.recomputations):
            return self.finish(_Found(improved, "cp-sat", improved_at[-1], first.first_at), result.status)
        return self.finish(first, result.status)

    def finish(self, found: _Found, status: str) -> Schedule:
        """The schedule, simulated: a peak over the budget is an internal error, never a result."""
        problem = self.problem
        steps = staged_steps(found.recomputations)
        peak = problem.peak(steps)
        if peak > self.budget:
            raise RuntimeError(f"internal error: a {found.found_by} schedule peaks at {peak}, over the budget "
                               f"{self.budget}")
        return Schedule(
            steps=tuple(problem.nodes[v] for v in steps), budget=self.budget, peak_memory=peak,
            total_compute=problem.total_compute(steps), tdi=_tdi(problem, found.recomputations), status=status,
            found_by=found.found_by, time_to_first=found.first_at - self.started,
            time_to_best=found.found_at - self.started, solve_time=time.perf_counter() - self.started)

    def report(self, what: str) -> None:
        if self.progress:
            print(f"[remat {time.perf_counter() - self.started:7.2f} s] {what}", file=sys.stderr)


def smallest_feasible_budget(problem: Problem, tolerance: float = 1e-3) -> int:
    """The smallest budget, to `tolerance` of the no-recompute peak, for which the heuristic finds a schedule."""
    low, high = problem.lower_bound, problem.no_recompute_peak  # the no-recompute peak always fits
    step = max(1, int(tolerance * high))
    while high - low > step:
        middle = (low + high) // 2
        if greedy_schedule(problem, middle, deadline=0.0) is None:
            low = middle
        else:
            high = middle
    return high


def _infeasible(
    problem: Problem, budget: int, proven: bool, reason: str
) -> BudgetInfeasibleError:
    return BudgetInfeasibleError(
        budget, smallest_feasible_budget(problem), problem.lower_bound, proven, reason
    )


def _check_arguments(budget: float, max_computations: int, time_limit: float, workers: int | None) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite non-negative number, got {budget!r}")
    if isinstance(max_computations, bool) or not isinstance(max_computations, int) or max_computations < 1:
        raise ValueError(f"max_computations must be an integer >= 1, got {max_computations!r}")
    if not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return int(budget)  # sizes are integers, so a fractional budget allows what its floor allows


def _total(problem: Problem, recomputations: Recomputations) -> float:
    return problem.total_compute(staged_steps(recomputations))


def _tdi(problem: Problem, recomputations: Recomputations) -> float:
    base = problem.base_compute
    return (_total(problem, recomputations) - base) / base if base else 0.0
