"""Moccasin (Bartan et al., ICML 2023): rematerialization as a CP-SAT model over optional intervals.

Time is Checkmate's staged grid (Jain et al., MLSys 2020) laid out row by row: slot(k, j) = k·n + j is the
place of node j in stage k (j <= k), so stage k's recomputations come in ascending order before node k's first
computation at slot(k, k), and the topological order is fixed.

For node v and computation i < C_v (the node's limit: `max_computations`, or 1 if it may not be recomputed) the
model has an interval [s_v^i, e_v^i) with presence a_v^i: the instance is computed at slot s and stays live until
e. The first computation is present and starts at the constant slot(v, v); a recomputation starts at
s = n·k + v with its stage k an integer variable over the stages that follow v, up to the last stage that can
read v. Every domain is a plain range: the paper's log-spaced interval-length domains made presolve take 25-450 s
on 2 cores, and even exact value sets for the ends (only the slots that read v) made random_layered_n100 at 0.9·P
take 6.3 s to solve instead of 0.4 s. Constraints:
  - presence ordering: a_v^i => a_v^(i-1), and a_v^i => e_v^(i-1) <= s_v^i (one live instance per node, so a
    reader reads the most recent one, as `simulate` assumes); an absent interval is pinned to its earliest slot;
  - precedence: for every edge (u, v) and every present computation i of v, exactly one computation j of u is
    chosen (a Boolean), and it is present with s_u^j < s_v^i < e_u^j;
  - one AddCumulative over all intervals, demand = output size, capacity = the budget; a node with a workspace
    (temporaries while it is computed) adds a one-slot interval per computation with that demand;
  - objective: minimise the compute of the recomputations, sum w_v a_v^i over i >= 1.
That is n·C intervals and about |E|·C² Booleans. The model's peak at a computation's slot counts every interval
covering it, which includes every instance the simulation counts there, so a solution's simulated peak is within
the budget.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from ortools.sat.python import cp_model

from .problem import Problem, Recomputations, staged_steps
from .simulate import trace


@dataclass(frozen=True)
class SolveResult:
    """recomputations: the best schedule found (None if none); status: optimal, feasible, infeasible or unknown."""

    recomputations: list[list[int]] | None
    status: str


class _Computation:
    """The variables of one computation of a node: start, end, presence; stage and length for recomputations."""

    def __init__(self, start, end, present, stage=None, length=None):
        self.start: cp_model.LinearExprT = start
        self.end: cp_model.IntVar = end
        self.present: cp_model.LiteralT = present
        self.stage: cp_model.IntVar | None = stage
        self.length: cp_model.IntVar | None = length


class _Model:
    """The CP-SAT model of one problem, budget and computation limit, with its variables by node."""

    def __init__(self, problem: Problem, budget: int, minimize: bool):
        self.problem = problem
        n, preds, succs = problem.n, problem.preds, problem.succs
        self.model = model = cp_model.CpModel()
        recomputable = [problem.limits[v] > 1 and bool(succs[v]) for v in range(n)]
        # a recomputation of v in stage k helps only if something reads it then or later
        self.last_stage = [max((n - 1 if recomputable[c] else c for c in succs[v]), default=v) for v in range(n)]
        self.computations: list[list[_Computation]] = []
        intervals, demands = [], []
        scale = reduce(math.gcd, (*problem.memory, *problem.workspace), 0) or 1
        for v in range(n):
            first = self.slot(v, v)
            last_end = max((self.slot(self.last_stage[c], c) + 1 for c in succs[v]), default=first + 1)
            end = model.new_int_var(first + 1, last_end, f"e{v}_0")
            intervals.append(model.new_interval_var(first, end - first, end, f"I{v}_0"))
            computations = [_Computation(first, end, 1)]
            if recomputable[v] and self.last_stage[v] > v:
                earliest = self.slot(v + 1, v)
                for i in range(1, problem.limits[v]):
                    a = model.new_bool_var(f"a{v}_{i}")
                    stage = model.new_int_var(v + 1, self.last_stage[v], f"k{v}_{i}")
                    start = n * stage + v
                    end = model.new_int_var(earliest + 1, last_end, f"e{v}_{i}")
                    length = model.new_int_var(1, last_end - earliest, f"l{v}_{i}")
                    intervals.append(model.new_optional_interval_var(start, length, end, a, f"I{v}_{i}"))
                    previous = computations[-1]
                    if i > 1:
                        model.add_implication(a, previous.present)
                    model.add(previous.end <= start).only_enforce_if(a)
                    model.add(stage == v + 1).only_enforce_if(~a)
                    model.add(end == earliest + 1).only_enforce_if(~a)
                    computations.append(_Computation(start, end, a, stage, length))
            demands.extend([problem.memory[v] // scale] * len(computations))
            if problem.workspace[v]:  # temporaries during each computation: one slot long
                for i, c in enumerate(computations):
                    intervals.append(model.new_optional_fixed_size_interval_var(c.start, 1, c.present, f"W{v}_{i}"))
                    demands.append(problem.workspace[v] // scale)
            self.computations.append(computations)
        self.covers: dict[tuple[int, int, int], list[cp_model.IntVar]] = {}
        for v in range(n):
            for i, computation in enumerate(self.computations[v]):
                for u in preds[v]:
                    self._cover(u, v, i, computation)
        model.add_cumulative(intervals, demands, budget // scale)
        self.unit = 1.0
        if minimize:
            weights, self.unit = _integer_weights(problem.compute)
            model.minimize(sum(
                weights[v] * c.present for v in range(n) for c in self.computations[v][1:] if weights[v]
            ))

    def slot(self, k: int, j: int) -> int:
        """Time of node j in stage k."""
        return k * self.problem.n + j

    def _cover(self, u: int, v: int, i: int, reader: _Computation) -> None:
        """Some present computation of u is live at computation i of v."""
        sources = self.computations[u]
        if len(sources) == 1:
            live = self.model.add(sources[0].end >= reader.start + 1)
            if i:
                live.only_enforce_if(reader.present)
            return
        choices = [self.model.new_bool_var(f"b{u}_{v}_{i}_{j}") for j in range(len(sources))]
        self.covers[u, v, i] = choices
        self.model.add(sum(choices) == reader.present)
        for j, (b, source) in enumerate(zip(choices, sources)):
            if j:
                self.model.add_implication(b, source.present)
                self.model.add(source.start + 1 <= reader.start).only_enforce_if(b)
            self.model.add(source.end >= reader.start + 1).only_enforce_if(b)

    def add_hint(self, recomputations: Recomputations) -> None:
        """Hint every variable with the schedule `recomputations`."""
        problem = self.problem
        steps = staged_steps(recomputations)
        slots = [self.slot(k, v) for k, again in enumerate(recomputations) for v in (*again, k)]
        tr = trace(problem.preds.__getitem__, steps)
        instances: list[list[int]] = [[] for _ in range(problem.n)]
        for t, v in enumerate(steps):
            instances[v].append(t)
        for v, ts in enumerate(instances):
            computations = self.computations[v]
            if len(ts) > len(computations):
                raise ValueError(f"the hint computes node {v} {len(ts)} times, more than the model allows")
            for i, c in enumerate(computations):
                present = i < len(ts)
                start = slots[ts[i]] if present else self.slot(v + 1, v)
                end = slots[tr.last_read[ts[i]]] + 1 if present else start + 1
                self.model.add_hint(c.end, end)
                if i:
                    self.model.add_hint(c.present, present)
                    self.model.add_hint(c.stage, start // problem.n)
                    self.model.add_hint(c.length, end - start)
        read_by: dict[tuple[int, int, int], int] = {}  # (u, v, i) -> the computation of u it reads
        for t, v in enumerate(steps):
            i = instances[v].index(t)
            for u, instance in zip(problem.preds[v], tr.reads[t]):
                read_by[u, v, i] = instances[u].index(instance)
        for key, choices in self.covers.items():
            for j, b in enumerate(choices):
                self.model.add_hint(b, read_by.get(key) == j)

    def recomputations(self, solver: cp_model.CpSolver) -> list[list[int]]:
        stages: list[list[int]] = [[] for _ in range(self.problem.n)]
        for v, computations in enumerate(self.computations):
            for c in computations[1:]:
                if solver.boolean_value(c.present):
                    stages[solver.value(c.stage)].append(v)
        return [sorted(again) for again in stages]


class _OnSolution(cp_model.CpSolverSolutionCallback):
    def __init__(self, on_solution: Callable[[float], None], unit: float):
        super().__init__()
        self.on_solution = on_solution
        self.unit = unit

    def on_solution_callback(self) -> None:
        self.on_solution(self.objective_value * self.unit)


def solve(
    problem: Problem,
    budget: int,
    *,
    hint: Recomputations | None,
    minimize: bool,
    time_limit: float,
    workers: int | None,
    on_solution: Callable[[float], None] | None = None,
) -> SolveResult:
    """Solve the model; `minimize=False` is the feasibility phase (it stops at the first schedule).

    on_solution(recompute) is called for each improving schedule, with the compute of its recomputations.
    """
    built = _Model(problem, budget, minimize)
    if hint is not None:
        built.add_hint(hint)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit, 0.0)
    solver.parameters.num_workers = workers or 0
    status = solver.solve(built.model, _OnSolution(on_solution, built.unit) if on_solution else None)
    if status == cp_model.MODEL_INVALID:
        raise RuntimeError(f"internal error: invalid CP-SAT model: {built.model.validate()}")
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        name = "optimal" if status == cp_model.OPTIMAL and minimize else "feasible"
        return SolveResult(built.recomputations(solver), name)
    return SolveResult(None, "infeasible" if status == cp_model.INFEASIBLE else "unknown")


def _integer_weights(compute: tuple[float, ...]) -> tuple[list[int], float]:
    """Compute costs as integer objective weights, and the compute one weight unit stands for.

    Exact (divided by their gcd) when the costs are integers, otherwise rounded to a millionth of the largest.
    """
    if all(float(w).is_integer() for w in compute):
        ints = [int(w) for w in compute]
        g = reduce(math.gcd, ints, 0) or 1
        return [w // g for w in ints], float(g)
    unit = max(compute) / 1_000_000
    return [round(w / unit) for w in compute], unit
