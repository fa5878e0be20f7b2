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
    deadline = started + time_limit

    def finish(
        recomputations: Recomputations, status: str, found_by: str, first_at: float, found_at: float
    ) -> Schedule:
        steps = staged_steps(recomputations)
        peak = problem.peak(steps)
        if peak > budget:
            raise RuntimeError(f"internal error: a {found_by} schedule peaks at {peak}, over the budget {budget}")
        return Schedule(
            steps=tuple(problem.nodes[v] for v in steps),
            budget=budget,
            peak_memory=peak,
            total_compute=problem.total_compute(steps),
            tdi=_tdi(problem, recomputations),
            status=status,
            found_by=found_by,
            time_to_first=first_at - started,
            time_to_best=found_at - started,
            solve_time=time.perf_counter() - started,
        )

    def report(what: str) -> None:
        if progress:
            print(f"[remat {time.perf_counter() - started:7.2f} s] {what}", file=sys.stderr)

    if budget >= problem.no_recompute_peak:
        now = time.perf_counter()
        return finish([[] for _ in range(problem.n)], "optimal", "no-recompute", now, now)
    if budget < problem.lower_bound:
        raise _infeasible(problem, budget, True, "it is below the largest node with its inputs")

    best = greedy_schedule(problem, budget, deadline=started + HEURISTIC_SECONDS)
    found_by, found_at = "heuristic", time.perf_counter()
    first_at = found_at
    if best is not None:
        report(f"heuristic: TDI {_tdi(problem, best):.4%}")
    elif time.perf_counter() >= deadline:
        raise _infeasible(problem, budget, False, f"none found within {time_limit} s")
    else:
        report("heuristic found no schedule; CP-SAT feasibility phase")
        result = moccasin.solve(
            problem, budget, hint=None, minimize=False,
            time_limit=deadline - time.perf_counter(), workers=workers,
        )
        if result.recomputations is None:
            proven = result.status == "infeasible"
            reason = "no schedule exists with this order and at most " \
                f"{max_computations} computations per node" if proven else f"none found within {time_limit} s"
            raise _infeasible(problem, budget, proven, reason)
        best = drop_unread_recomputations(problem, result.recomputations)
        found_by, found_at = "cp-sat", time.perf_counter()
        first_at = found_at
        report(f"feasibility phase: TDI {_tdi(problem, best):.4%}")

    if time.perf_counter() >= deadline:
        return finish(best, "feasible", found_by, first_at, found_at)
    improved_at: list[float] = []

    def on_solution(recompute: float) -> None:
        improved_at.append(time.perf_counter())
        report(f"CP-SAT: TDI {recompute / problem.base_compute:.4%}" if problem.base_compute else "CP-SAT: TDI 0")

    result = moccasin.solve(
        problem, budget, hint=best, minimize=True,
        time_limit=deadline - time.perf_counter(), workers=workers, on_solution=on_solution,
    )
    if result.recomputations is None:
        return finish(best, "feasible", found_by, first_at, found_at)
    improved = drop_unread_recomputations(problem, result.recomputations)
    if _total(problem, improved) < _total(problem, best):
        best, found_by, found_at = improved, "cp-sat", improved_at[-1]
    return finish(best, result.status, found_by, first_at, found_at)


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
