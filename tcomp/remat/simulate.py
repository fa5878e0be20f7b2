"""Memory simulation of a schedule (the accounting of Checkmate, Jain et al. MLSys 2020, and Moccasin).

Each step computes one instance of a node. A step reads the most recent instance of each of its inputs; an instance
stays live from the step that computes it to the last step that reads it. The memory at a step is the sum over the
instances live at it plus the output being computed, plus the node's workspace (temporaries that exist only while
it is computed; none unless given); the peak is the largest of these. Linear in the number of steps plus the edges
they read.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from .result import ScheduleError


@dataclass(frozen=True)
class Trace:
    """The instances a schedule creates and which of them each step reads.

    Instance t is the output of step t. last_read[t]: the last step that reads instance t (t itself when none
    does). reads[t]: the instances step t reads, one per input, in input order.
    """

    last_read: tuple[int, ...]
    reads: tuple[tuple[int, ...], ...]


def trace(inputs: Callable[[Hashable], Iterable[Hashable]], steps: Sequence[Hashable]) -> Trace:
    """Follow `steps`, where `inputs(v)` lists the inputs of node v; raises ScheduleError on a read of nothing."""
    latest: dict[Hashable, int] = {}
    last_read: list[int] = []
    reads: list[tuple[int, ...]] = []
    for t, v in enumerate(steps):
        read = []
        for u in inputs(v):
            instance = latest.get(u)
            if instance is None:
                raise ScheduleError(f"step {t} computes {v!r}, which reads {u!r}, but no earlier step computes {u!r}")
            last_read[instance] = t
            read.append(instance)
        reads.append(tuple(read))
        latest[v] = t
        last_read.append(t)
    return Trace(tuple(last_read), tuple(reads))


def memory_profile(
    inputs: Callable[[Hashable], Iterable[Hashable]], memory: Mapping[Hashable, int] | Sequence[int],
    steps: Sequence[Hashable], workspace: Mapping[Hashable, int] | Sequence[int] | None = None,
) -> list[int]:
    """The memory in use at each step of `steps` (see the module docstring)."""
    return profile_of(trace(inputs, steps), memory, steps, workspace)


def profile_of(
    tr: Trace, memory: Mapping[Hashable, int] | Sequence[int], steps: Sequence[Hashable],
    workspace: Mapping[Hashable, int] | Sequence[int] | None = None,
) -> list[int]:
    """The memory in use at each step, from the steps' trace."""
    delta = [0] * (len(steps) + 1)  # an instance counts at the steps after its own, up to its last read
    for t, v in enumerate(steps):
        if tr.last_read[t] > t:
            delta[t + 1] += memory[v]
            delta[tr.last_read[t] + 1] -= memory[v]
    profile, live = [], 0
    for t, v in enumerate(steps):
        live += delta[t]
        profile.append(live + memory[v] + (workspace[v] if workspace is not None else 0))
    return profile


def simulate(
    graph: nx.DiGraph, steps: Sequence[Hashable], memory: str = "cost_ram", workspace: str | None = None
) -> int:
    """Peak memory of running `steps` (node ids of `graph`) with node output sizes from attribute `memory` and,
    if `workspace` names an attribute, temporaries while a node is computed (nodes without it have none)."""
    for t, v in enumerate(steps):
        if v not in graph:
            raise ScheduleError(f"step {t} names {v!r}, which is not a node of the graph")
    sizes = {v: _size(graph, v, memory) for v in set(steps)}
    extra = None if workspace is None else {v: graph.nodes[v].get(workspace, 0) for v in set(steps)}
    return max(memory_profile(graph.predecessors, sizes, steps, extra), default=0)


def _size(graph: nx.DiGraph, v: Hashable, memory: str) -> int:
    if memory not in graph.nodes[v]:
        raise ValueError(f"node {v!r} has no attribute {memory!r} (its output size)")
    return graph.nodes[v][memory]
