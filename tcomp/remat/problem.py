"""The rematerialization problem in index space, and Checkmate's staged grid (Jain et al., MLSys 2020).

A `Problem` is a DAG whose nodes are numbered 0..n-1 in a fixed topological order, with a compute cost, an output
size, a workspace (temporaries while the node is computed) and a limit on the number of computations per node (1 for
a node whose attribute `recomputable` is False, e.g. a random or mutating operation). On the staged grid, stage k
first recomputes some earlier nodes, in ascending order, and then computes node k for the first time; a schedule on
the grid is the list of those recomputations per stage.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from numbers import Integral, Real

import networkx as nx

from .simulate import memory_profile, trace

RECOMPUTABLE = "recomputable"
"""Node attribute: False forbids recomputing the node (its operation is random or has side effects)."""

Recomputations = Sequence[Sequence[int]]
"""recomputations[k]: the node indices recomputed in stage k, ascending, each below k."""


@dataclass(frozen=True)
class Problem:
    """A DAG in a fixed topological order: index i is the i-th node of `nodes`, the original node ids."""

    nodes: tuple[Hashable, ...]
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    compute: tuple[float, ...]
    memory: tuple[int, ...]
    workspace: tuple[int, ...]
    limits: tuple[int, ...]  # how many times each node may be computed

    @classmethod
    def from_graph(
        cls, graph: nx.DiGraph, order: Sequence[Hashable] | None, compute: str, memory: str, max_computations: int,
        workspace: str | None = None,
    ) -> Problem:
        """Validate `graph` and `order` (default: a topological sort) and number the nodes by `order`; `workspace`
        names an optional node attribute (missing: 0)."""
        if not isinstance(graph, nx.DiGraph) or graph.is_multigraph():
            raise TypeError(f"graph must be a networkx.DiGraph, not {type(graph).__name__}")
        if not nx.is_directed_acyclic_graph(graph):
            raise ValueError(f"graph has a cycle: {nx.find_cycle(graph)}")
        order = list(nx.topological_sort(graph)) if order is None else list(order)
        _check_order(graph, order)
        index = {v: i for i, v in enumerate(order)}
        return cls(
            nodes=tuple(order),
            preds=tuple(tuple(sorted(index[u] for u in graph.predecessors(v))) for v in order),
            succs=tuple(tuple(sorted(index[w] for w in graph.successors(v))) for v in order),
            compute=tuple(_attribute(graph, v, compute, integral=False) for v in order),
            memory=tuple(_attribute(graph, v, memory, integral=True) for v in order),
            workspace=tuple(
                _attribute(graph, v, workspace, integral=True) if workspace in graph.nodes[v] else 0 for v in order
            ),
            limits=tuple(max_computations if graph.nodes[v].get(RECOMPUTABLE, True) else 1 for v in order),
        )

    @property
    def n(self) -> int:
        return len(self.nodes)

    @cached_property
    def base_compute(self) -> float:
        """Compute of the schedule without recomputation: every node once."""
        return math.fsum(self.compute)

    @cached_property
    def no_recompute_peak(self) -> int:
        """Peak of computing every node once in order, each output freed after its last consumer."""
        return self.peak(list(range(self.n)))

    @cached_property
    def lower_bound(self) -> int:
        """No schedule peaks below this: some step holds a node's inputs, its output and its workspace together."""
        return max(
            (self.memory[v] + self.workspace[v] + sum(self.memory[u] for u in self.preds[v]) for v in range(self.n)),
            default=0,
        )

    def peak(self, steps: Sequence[int]) -> int:
        """Simulated peak memory of `steps` (node indices)."""
        return max(memory_profile(self.preds.__getitem__, self.memory, steps, self.workspace), default=0)

    def total_compute(self, steps: Sequence[int]) -> float:
        return math.fsum(self.compute[v] for v in steps)


def staged_steps(recomputations: Recomputations) -> list[int]:
    """The steps of a schedule on the staged grid: each stage's recomputations, then the stage's node."""
    steps: list[int] = []
    for k, again in enumerate(recomputations):
        steps.extend(again)
        steps.append(k)
    return steps


def drop_unread_recomputations(problem: Problem, recomputations: Recomputations) -> list[list[int]]:
    """Remove recomputations whose output no step reads: they only cost compute and memory.

    Dropping one never changes which instance another step reads (nothing read the dropped one, so nothing
    between it and the next instance of its node reads that node). Repeats until none is left, since dropping a
    recomputation can leave its inputs' recomputations unread.
    """
    stages = [list(again) for again in recomputations]
    while True:
        last_read = trace(problem.preds.__getitem__, staged_steps(stages)).last_read
        unread, t = set(), 0
        for k, again in enumerate(stages):
            for v in again:
                if last_read[t] == t:
                    unread.add((k, v))
                t += 1
            t += 1
        if not unread:
            return stages
        stages = [[v for v in again if (k, v) not in unread] for k, again in enumerate(stages)]


def _check_order(graph: nx.DiGraph, order: list[Hashable]) -> None:
    if len(order) != graph.number_of_nodes() or set(order) != set(graph.nodes):
        missing = set(graph.nodes) - set(order)
        extra = set(order) - set(graph.nodes)
        raise ValueError(
            f"order must list every node of the graph exactly once (missing: {sorted(map(repr, missing))[:5]}, "
            f"unknown: {sorted(map(repr, extra))[:5]}, length {len(order)} for {graph.number_of_nodes()} nodes)"
        )
    position = {v: i for i, v in enumerate(order)}
    for u, v in graph.edges:
        if position[u] > position[v]:
            raise ValueError(f"order is not topological: {v!r} comes before its input {u!r}")


def _attribute(graph: nx.DiGraph, v: Hashable, name: str, integral: bool) -> float | int:
    attrs = graph.nodes[v]
    if name not in attrs:
        raise ValueError(f"node {v!r} has no attribute {name!r} (attributes: {sorted(attrs)})")
    value = attrs[name]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"node {v!r}: attribute {name!r} must be a finite non-negative number, got {value!r}")
    if integral:
        if not (isinstance(value, Integral) or float(value).is_integer()):
            raise ValueError(f"node {v!r}: attribute {name!r} is an output size and must be an integer, got {value!r}")
        return int(value)
    return value
