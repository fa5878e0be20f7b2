"""Checkmate's MILP (Jain et al., MLSys 2020), the baseline of bench/remat.py — bench only, not part of tcomp.

The frontier-advancing formulation for a fixed topological order 0..n-1, on SCIP through OR-Tools MathOpt:
  R[t,i]     node i is computed in stage t (R[t,t] = 1; nothing after t);
  S[t,i]     the output of i is kept in memory from stage t-1 into stage t (only i < t);
  FREE[t,i,k] the output of i (an input of k, or k itself) is freed right after k is computed in stage t;
  U[t,k]     memory in use while k is computed in stage t, at most the budget.
  minimise   sum_t sum_i cost_i R[t,i]
  subject to R[t,k] <= R[t,i] + S[t,i]            for every edge (i, k)   (inputs present)
             S[t+1,i] <= R[t,i] + S[t,i]           (only what exists can be kept)
             U[t,0] = sum_i m_i S[t,i] + m_0 R[t,0]
             U[t,k] = U[t,k-1] - sum_{i in inputs(k-1) + {k-1}} m_i FREE[t,i,k-1] + m_k R[t,k]
             FREE[t,i,k] = R[t,k] (1 - S[t+1,i]) prod_{j uses i, k < j <= t} (1 - R[t,j]), linearised with the
             hazard count h = (1 - R[t,k]) + S[t+1,i] + sum_j R[t,j]: 1 - FREE <= h and h <= kappa (1 - FREE).
Memory is scaled so the budget is 1000 units (the MILP's U is continuous); the schedule a solution encodes is
re-simulated exactly by tcomp.remat.simulate, so a tolerance never passes unnoticed.
"""
from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass

import networkx as nx
from ortools.math_opt.python import mathopt

from tcomp.remat import simulate


@dataclass
class MilpResult:
    """steps: the best schedule found (None if none); tdi and peak as for tcomp; times from the call's start."""

    steps: list | None
    tdi: float | None
    peak_memory: int | None
    status: str
    time_to_first: float | None
    time_to_best: float | None
    build_time: float
    solve_time: float
    variables: int
    constraints: int


def solve_checkmate_milp(
    graph: nx.DiGraph, order: list, budget: int, compute: str, memory: str, time_limit: float
) -> MilpResult:
    """Solve Checkmate's MILP for `graph` in `order` under `budget` with SCIP (single thread) for `time_limit` s."""
    started = time.perf_counter()
    n = len(order)
    index = {v: i for i, v in enumerate(order)}
    preds = [sorted(index[u] for u in graph.predecessors(v)) for v in order]
    users = [sorted(index[w] for w in graph.successors(v)) for v in order]
    cost = [graph.nodes[v][compute] for v in order]
    scale = 1000.0 / budget
    size = [graph.nodes[v][memory] * scale for v in order]

    model = mathopt.Model(name="checkmate")
    R = {(t, i): model.add_binary_variable(name=f"R{t}_{i}") for t in range(n) for i in range(t + 1)}
    S = {(t, i): model.add_binary_variable(name=f"S{t}_{i}") for t in range(1, n) for i in range(t)}
    for t in range(n):
        model.add_linear_constraint(R[t, t] == 1)
        for k in range(t + 1):
            for i in preds[k]:
                model.add_linear_constraint(R[t, k] <= R[t, i] + S.get((t, i), 0))
        if t + 1 < n:
            for i in range(t + 1):
                model.add_linear_constraint(S[t + 1, i] <= R[t, i] + S.get((t, i), 0))
    for t in range(n):
        previous = sum(size[i] * S[t, i] for i in range(t)) + size[0] * R[t, 0]
        usage = model.add_variable(lb=0.0, ub=1000.0, name=f"U{t}_0")
        model.add_linear_constraint(usage == previous)
        for k in range(t):  # what is freed after k, then k + 1 computed
            freed = 0
            for i in sorted({*preds[k], k}):
                later = [j for j in users[i] if k < j <= t]
                kept = S[t + 1, i] if t + 1 < n and i < t + 1 else 0
                hazards = (1 - R[t, k]) + kept + sum(R[t, j] for j in later)
                free = model.add_binary_variable(name=f"F{t}_{i}_{k}")
                model.add_linear_constraint(1 - free <= hazards)
                model.add_linear_constraint(hazards <= (2 + len(later)) * (1 - free))
                freed += size[i] * free
            next_usage = model.add_variable(lb=0.0, ub=1000.0, name=f"U{t}_{k + 1}")
            model.add_linear_constraint(next_usage == usage - freed + size[k + 1] * R[t, k + 1])
            usage = next_usage
    model.minimize(sum(cost[i] * R[t, i] for (t, i) in R))
    build_time = time.perf_counter() - started

    base = math.fsum(cost)
    found_at: list[float] = []  # when each improving schedule was found
    best = [math.inf]

    def on_event(data: mathopt.CallbackData) -> mathopt.CallbackResult:
        if data.event == mathopt.Event.MIP_SOLUTION and data.solution:
            total = math.fsum(cost[i] * data.solution[R[t, i]] for (t, i) in R)
            if total < best[0] - 1e-9 * max(base, 1.0):
                best[0] = total
                found_at.append(time.perf_counter() - started)
        return mathopt.CallbackResult()

    result = mathopt.solve(
        model, mathopt.SolverType.GSCIP,
        params=mathopt.SolveParameters(
            time_limit=datetime.timedelta(seconds=max(time_limit - build_time, 1.0)), threads=1
        ),
        callback_reg=mathopt.CallbackRegistration(events={mathopt.Event.MIP_SOLUTION}),
        cb=on_event,
    )
    solve_time = time.perf_counter() - started
    reason = result.termination.reason
    status = {
        mathopt.TerminationReason.OPTIMAL: "optimal", mathopt.TerminationReason.FEASIBLE: "feasible",
        mathopt.TerminationReason.INFEASIBLE: "infeasible",
    }.get(reason, "no solution")
    common = dict(build_time=build_time, solve_time=solve_time, variables=len(list(model.variables())),
                  constraints=len(list(model.linear_constraints())))
    if not result.has_primal_feasible_solution():
        return MilpResult(None, None, None, status, None, None, **common)
    values = result.variable_values()
    steps = [order[i] for t in range(n) for i in range(t + 1) if values[R[t, i]] > 0.5]
    total = math.fsum(graph.nodes[v][compute] for v in steps)
    return MilpResult(
        steps, (total - base) / base, simulate(graph, steps, memory=memory), status,
        found_at[0] if found_at else None, found_at[-1] if found_at else None, **common,
    )
