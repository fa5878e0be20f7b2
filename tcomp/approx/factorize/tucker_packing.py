"""Tucker packing: the core shape (multilinear rank) that keeps most energy within a parameter budget
(Ghadiri, Fahrbach, Fu & Mirrokni, "Approximately Optimal Core Shapes for Tensor Decompositions", ICML 2023).

Given the mode-n singular values ``σ_{n,1} ≥ σ_{n,2} ≥ …`` of a tensor with mode sizes ``I_n``, choose ranks
``R_n ≥ 1`` to

    maximise  Σ_n Σ_{i≤R_n} σ²_{n,i}    subject to    m·Π_n R_n + Σ_n I_n·R_n ≤ budget,

i.e. maximise the energy the truncated HOSVD keeps in each mode (equivalently minimise the bound
``Σ_n Σ_{i>R_n} σ²_{n,i}`` on its squared error) for a budget on core plus factor parameters. ``m`` is the product
of the sizes of any modes left unfactored — ``kh·kw`` for Tucker-2 of a conv weight, whose core is
``R_1 × R_2 × kh × kw``.

:func:`tucker_packing` solves this integer program exactly with OR-Tools CP-SAT. The ranks are unary-coded,
``R_n = Σ_i x_{n,i}`` with booleans ``x_{n,1} ≥ x_{n,2} ≥ …``, so the objective ``Σ σ²_{n,i}·x_{n,i}`` is linear
(its weights are the σ² scaled to integers, 1e12 in total; the true objective of the answer is recomputed in
float64). The product ``Π_n R_n`` is not linear: it is a chain of N−1 ``AddMultiplicationEquality`` constraints on
integer variables bounded by ``budget/m``, which CP-SAT linearises and branches on. The model has ``Σ_n L_n``
booleans (``L_n`` = the ranks the budget allows in mode n) and N−1 products; the problem is a knapsack with a
multilinear constraint, NP-hard in general, but the instances of tensor compression (N ≤ 4, ranks ≤ a few
hundred) solve to proven optimality in well under a second. The greedy solution is given as a hint, and is
returned instead if the solver stops at its time limit with something worse, so the answer never keeps less
energy than :func:`greedy_packing`.

:func:`greedy_packing` is the baseline: from all ranks 1, repeatedly grow the rank whose next singular value
buys the most energy per added parameter, while the budget allows.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_OBJECTIVE_SCALE = 1e12


@dataclass
class Packing:
    """A core shape: its ``ranks``, the energy ``retained`` (Σ kept σ²), its parameter ``cost``, whether it is
    ``optimal`` (proven by the solver, or exhaustive), and the ``seconds`` the choice took."""

    ranks: tuple[int, ...]
    retained: float
    cost: int
    optimal: bool
    seconds: float


def packing_cost(ranks: Sequence[int], mode_sizes: Sequence[int], core_multiplier: int = 1) -> int:
    """Core plus factor parameters of a Tucker decomposition: ``m·Π R_n + Σ I_n·R_n``."""
    return core_multiplier * math.prod(ranks) + sum(size * rank for size, rank in zip(mode_sizes, ranks))


def _validate(singular_values: Sequence[Sequence[float]], mode_sizes: Sequence[int], budget: int,
              core_multiplier: int) -> list[list[float]]:
    """The squared singular values per mode, after checking the instance."""
    if len(singular_values) != len(mode_sizes) or not mode_sizes:
        raise ValueError(f"{len(singular_values)} lists of singular values for {len(mode_sizes)} modes")
    if not isinstance(core_multiplier, int) or core_multiplier < 1:
        raise ValueError(f"core_multiplier must be a positive integer, got {core_multiplier!r}")
    energies = []
    for mode, (values, size) in enumerate(zip(singular_values, mode_sizes)):
        values = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
        if not 1 <= len(values) <= size:
            raise ValueError(f"mode {mode}: {len(values)} singular values for a mode of size {size}")
        if any(v < 0 for v in values) or any(a < b for a, b in zip(values, values[1:])):
            raise ValueError(f"mode {mode}: singular values must be non-negative and non-increasing")
        energies.append([v * v for v in values])
    smallest = packing_cost([1] * len(mode_sizes), mode_sizes, core_multiplier)
    if budget < smallest:
        raise ValueError(f"budget {budget} is below {smallest}, the cost of the smallest core (all ranks 1)")
    return energies


def _retained(energies: list[list[float]], ranks: Sequence[int]) -> float:
    return sum(sum(e[:r]) for e, r in zip(energies, ranks))


def greedy_packing(singular_values: Sequence[Sequence[float]], mode_sizes: Sequence[int], budget: int,
                   core_multiplier: int = 1) -> Packing:
    """The greedy HOSVD rank choice: grow the rank with the best energy gain per parameter while it fits."""
    start = time.perf_counter()
    energies = _validate(singular_values, mode_sizes, budget, core_multiplier)
    ranks = [1] * len(energies)
    cost = packing_cost(ranks, mode_sizes, core_multiplier)
    while True:
        best, best_ratio = None, -1.0
        for mode, energy in enumerate(energies):
            if ranks[mode] == len(energy):
                continue
            grown = ranks[:mode] + [ranks[mode] + 1] + ranks[mode + 1:]
            extra = packing_cost(grown, mode_sizes, core_multiplier) - cost
            if cost + extra <= budget and energy[ranks[mode]] / extra > best_ratio:
                best, best_ratio = mode, energy[ranks[mode]] / extra
        if best is None:
            break
        ranks[best] += 1
        cost = packing_cost(ranks, mode_sizes, core_multiplier)
    return Packing(tuple(ranks), _retained(energies, ranks), cost, False, time.perf_counter() - start)


def tucker_packing(singular_values: Sequence[Sequence[float]], mode_sizes: Sequence[int], budget: int,
                   core_multiplier: int = 1, *, time_limit: float = 10.0, workers: int = 1) -> Packing:
    """The optimal core shape by CP-SAT (see the module doc).

    ``workers``: CP-SAT search threads. One is fastest on the instances of tensor compression (measured here: 35 ms
    with one, 60 ms with two, on a 64×48×32 tensor); more pay off only on large, hard instances.
    """
    from ortools.sat.python import cp_model  # imported on use: OR-Tools (and pandas with it) take 0.3 s to import

    start = time.perf_counter()
    energies = _validate(singular_values, mode_sizes, budget, core_multiplier)
    greedy = greedy_packing(singular_values, mode_sizes, budget, core_multiplier)
    total = sum(map(sum, energies)) or 1.0
    others = sum(mode_sizes)
    model = cp_model.CpModel()
    ranks, objective = [], []
    for mode, (energy, size) in enumerate(zip(energies, mode_sizes)):
        # R_n ≤ (budget − Σ_{k≠n} I_k) / (I_n + m): every other rank is at least 1.
        allowed = min(len(energy), (budget - (others - size)) // (size + core_multiplier))
        steps = [model.NewBoolVar(f"x{mode}_{i}") for i in range(1, allowed)]  # x_{n,i}: R_n > i
        for longer, shorter in zip(steps[1:], steps):
            model.AddImplication(longer, shorter)
        rank = model.NewIntVar(1, allowed, f"R{mode}")
        model.Add(rank == 1 + sum(steps))
        model.AddHint(rank, greedy.ranks[mode])
        for i, step in enumerate(steps, start=1):
            model.AddHint(step, greedy.ranks[mode] > i)
            objective.append(round(energy[i] / total * _OBJECTIVE_SCALE) * step)
        ranks.append(rank)
    product = ranks[0]
    bound = budget // core_multiplier
    for mode, rank in enumerate(ranks[1:], start=1):
        partial = model.NewIntVar(1, bound, f"P{mode}")
        model.AddMultiplicationEquality(partial, [product, rank])
        product = partial
    model.Add(core_multiplier * product + sum(size * rank for size, rank in zip(mode_sizes, ranks)) <= budget)
    model.Maximize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        chosen, optimal = greedy.ranks, False
    else:
        chosen, optimal = tuple(solver.Value(rank) for rank in ranks), status == cp_model.OPTIMAL
        if _retained(energies, chosen) < greedy.retained:
            chosen = greedy.ranks
    return Packing(tuple(chosen), _retained(energies, chosen), packing_cost(chosen, mode_sizes, core_multiplier),
                   optimal, time.perf_counter() - start)
