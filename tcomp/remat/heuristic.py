"""Greedy split-and-recompute repair: the fast schedule that hints the CP-SAT search.

Starts from the no-recompute schedule on the staged grid and repairs it one move at a time. While some step exceeds
the budget, take the first such step t at which some move lowers the excess. Every output live across t that step t
does not read is a candidate: recompute it in the stage of its first read after t, so that its old instance dies at
its last read before t and stops counting at t. The recomputation reads the latest instances of its inputs, which
may then live longer; a variant of each move also recomputes those extended inputs in the same stage. The move taken
is the one with the largest reduction of the total excess memory (the sum over steps of the memory above the budget)
per unit of compute it adds (compute raised to an exponent; several exponents are tried, the cheapest result wins).
A node already computed as often as its limit allows is no candidate; when no move at any over-budget step reduces
the excess the heuristic gives up. Finally each recomputation, most expensive first, is removed again if the
schedule still fits without it.

The excess of a single-node move is computed exactly from the current memory profile with array slices (only the
ranges around the new step change), so choosing a move costs O(live outputs · steps) with numpy doing the inner
loop; the input-recomputing variants are simulated in full, for the few best single-node moves, or for all of them
when none helps alone. At most sum(limit − 1) over the nodes moves are taken, each lowering the excess.
"""
from __future__ import annotations

import math
import time
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from .problem import Problem, Recomputations, drop_unread_recomputations, staged_steps
from .simulate import memory_profile, profile_of, trace

VARIANTS_SIMULATED = 4
"""How many of the best single-node moves also get their input-recomputing variant tried."""

COST_EXPONENTS = (0.75, 1.0, 0.5, 2.0)
"""Moves are ranked by excess reduction / compute ** exponent; `greedy_schedule` tries these in turn."""


@dataclass(frozen=True)
class _Move:
    stage: int
    nodes: tuple[int, ...]
    excess: int  # total excess memory after the move


def greedy_schedule(
    problem: Problem, budget: int, deadline: float = math.inf
) -> list[list[int]] | None:
    """The cheapest repaired schedule within `budget` over COST_EXPONENTS, or None if every repair fails.

    Tries no further exponent once a schedule is found and `deadline` (a `time.perf_counter()` value) has passed.
    """
    best, best_cost = None, math.inf
    for exponent in COST_EXPONENTS:
        found = repair(problem, budget, exponent)
        cost = math.inf if found is None else problem.total_compute(staged_steps(found))
        if cost < best_cost:
            best, best_cost = found, cost
        if best is not None and time.perf_counter() > deadline:
            break
    return best


def repair(problem: Problem, budget: int, exponent: float) -> list[list[int]] | None:
    """One greedy repair, ranking moves by excess reduction / compute ** exponent; None if it gets stuck."""
    stages: list[set[int]] = [set() for _ in range(problem.n)]
    count = [1] * problem.n
    while True:
        state = _State(problem, stages)
        excess = state.excess(budget)
        if excess == 0:
            return _prune(problem, budget, [sorted(s) for s in stages])
        for t in np.flatnonzero(state.profile > budget):
            move = _best_move(problem, state, stages, count, budget, excess, exponent, int(t))
            if move is not None:
                break
        else:
            return None
        for v in move.nodes:
            stages[move.stage].add(v)
            count[v] += 1


class _State:
    """The current schedule simulated: steps, the stage of each step, memory profile, live ranges and reads."""

    def __init__(self, problem: Problem, stages: list[set[int]]):
        self.recomputations = [sorted(s) for s in stages]
        self.steps = staged_steps(self.recomputations)
        self.stage = [k for k, again in enumerate(self.recomputations) for _ in range(len(again) + 1)]
        self.stage_start = [0]  # the first step of each stage
        for again in self.recomputations:
            self.stage_start.append(self.stage_start[-1] + len(again) + 1)
        tr = trace(problem.preds.__getitem__, self.steps)
        self.profile = np.array(profile_of(tr, problem.memory, self.steps, problem.workspace), np.int64)
        self.last_read = tr.last_read
        self.read_at: list[list[int]] = [[] for _ in self.steps]  # the steps reading each instance, ascending
        for t, instances in enumerate(tr.reads):
            for i in instances:
                self.read_at[i].append(t)
        self.instances: list[list[int]] = [[] for _ in range(problem.n)]  # the steps computing each node
        for t, v in enumerate(self.steps):
            self.instances[v].append(t)

    def excess(self, budget: int) -> int:
        return int(np.maximum(self.profile - budget, 0).sum())

    def insertion_point(self, stage: int, v: int) -> int:
        """The step before which a recomputation of v in `stage` goes (stages recompute in ascending order)."""
        return self.stage_start[stage] + bisect_left(self.recomputations[stage], v)


def _best_move(
    problem: Problem, state: _State, stages: list[set[int]], count: list[int], budget: int,
    excess: int, exponent: float, t: int,
) -> _Move | None:
    singles: list[_Move] = []
    for x in range(t):
        u = state.steps[x]
        if state.last_read[x] < t or count[u] >= problem.limits[u] or t in state.read_at[x]:
            continue
        later = state.read_at[x][bisect_left(state.read_at[x], t)]
        stage = state.stage[later]
        if u not in stages[stage]:
            singles.append(_Move(stage, (u,), _excess_after_split(problem, state, x, stage, budget)))
    moves = [move for move in singles if move.excess < excess]
    # the input-recomputing variants of the most promising splits, or of every split when none helps alone
    for single in sorted(singles, key=lambda move: move.excess)[:VARIANTS_SIMULATED] if moves else singles:
        inputs = _extended_inputs(problem, state, stages, count, single)
        if inputs:
            nodes = (*inputs, *single.nodes)
            after = _simulated_excess(problem, stages, single.stage, nodes, budget)
            if after < excess:
                moves.append(_Move(single.stage, nodes, after))
    return max(
        moves, default=None,
        key=lambda move: (excess - move.excess) / (problem.total_compute(move.nodes) + 1e-9) ** exponent,
    )


def _excess_after_split(problem: Problem, state: _State, x: int, stage: int, budget: int) -> int:
    """Total excess after recomputing the node of instance x in `stage` (exact, from the current profile).

    With the new step inserted before old step r: instance x now dies at its last read before r, the new
    instance takes over x's later reads (so nothing changes from r on for that node), and each input whose
    latest instance before r was last read before r now lives until the new step.
    """
    u = state.steps[x]
    r = state.insertion_point(stage, u)
    profile = state.profile.copy()
    reads_before = state.read_at[x][: bisect_left(state.read_at[x], r)]
    dies = reads_before[-1] if reads_before else x
    profile[dies + 1: r] -= problem.memory[u]
    new_step = int(state.profile[r]) - problem.memory[state.steps[r]] - problem.workspace[state.steps[r]]
    new_step += problem.workspace[u]
    for p in problem.preds[u]:
        latest = state.instances[p][bisect_left(state.instances[p], r) - 1]
        if state.last_read[latest] < r:
            profile[state.last_read[latest] + 1: r] += problem.memory[p]
            new_step += problem.memory[p]
    return int(np.maximum(profile - budget, 0).sum()) + max(new_step - budget, 0)


def _extended_inputs(
    problem: Problem, state: _State, stages: list[set[int]], count: list[int], move: _Move,
) -> tuple[int, ...]:
    """The inputs of a single-node move that it keeps alive longer and that could be recomputed with it."""
    (u,) = move.nodes
    r = state.insertion_point(move.stage, u)
    return tuple(
        p for p in problem.preds[u]
        if count[p] < problem.limits[p] and p not in stages[move.stage]
        and state.last_read[state.instances[p][bisect_left(state.instances[p], r) - 1]] < r
    )


def _simulated_excess(
    problem: Problem, stages: list[set[int]], stage: int, nodes: tuple[int, ...], budget: int
) -> int:
    """Total excess after recomputing `nodes` in `stage`, by simulating the whole schedule."""
    trial = [sorted(s | set(nodes)) if k == stage else sorted(s) for k, s in enumerate(stages)]
    steps = staged_steps(trial)
    profile = np.array(memory_profile(problem.preds.__getitem__, problem.memory, steps, problem.workspace), np.int64)
    return int(np.maximum(profile - budget, 0).sum())


def _prune(problem: Problem, budget: int, recomputations: Recomputations) -> list[list[int]]:
    """Drop unread recomputations, then every recomputation (most expensive first) the budget does not need."""
    stages = drop_unread_recomputations(problem, recomputations)
    recomputed = [(k, v) for k, again in enumerate(stages) for v in again]
    for k, v in sorted(recomputed, key=lambda kv: -problem.compute[kv[1]]):
        if v not in stages[k]:
            continue
        trial = [[w for w in again if (j, w) != (k, v)] for j, again in enumerate(stages)]
        if problem.peak(staged_steps(trial)) <= budget:
            stages = drop_unread_recomputations(problem, trial)
    return stages
