"""Shared helpers of the rematerialization tests: graph generators, a brute-force optimum, a naive simulator."""
from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import networkx as nx
from hypothesis import strategies as st

SHARED_GRAPHS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "remat-graphs"


def make_graph(sizes, costs, edges, workspace=None) -> nx.DiGraph:
    graph = nx.DiGraph()
    for v, (size, cost) in enumerate(zip(sizes, costs)):
        graph.add_node(v, cost_ram=size, cost_cpu=cost)
        if workspace is not None:
            graph.nodes[v]["scratch"] = workspace[v]
    graph.add_edges_from(edges)
    return graph


@st.composite
def dags(draw, min_nodes=2, max_nodes=5, max_size=9, max_cost=9, workspace=False):
    """Random DAGs on nodes 0..n-1 (ascending ids are a topological order) with integer sizes and costs, and
    with `workspace`, an integer attribute "scratch" of temporaries."""
    n = draw(st.integers(min_nodes, max_nodes))
    sizes = draw(st.lists(st.integers(1, max_size), min_size=n, max_size=n))
    costs = draw(st.lists(st.integers(0, max_cost), min_size=n, max_size=n))
    scratch = draw(st.lists(st.integers(0, max_size), min_size=n, max_size=n)) if workspace else None
    pairs = [(u, v) for v in range(n) for u in range(v)]
    edges = [e for e, keep in zip(pairs, draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs))))
             if keep]
    return make_graph(sizes, costs, edges, scratch)


def layered_graph(n: int, seed: int, width: int = 6, fan_in: int = 3) -> nx.DiGraph:
    """A random layered DAG like the random_layered instances: each node reads a few nodes of recent layers."""
    rng = random.Random(seed)
    graph = nx.DiGraph()
    for v in range(n):
        graph.add_node(v, cost_ram=rng.randint(10, 100), cost_cpu=rng.randint(1, 50))
        layer = v // width
        earlier = [u for u in range(max(0, (layer - 3) * width), layer * width)]
        for u in rng.sample(earlier, min(len(earlier), rng.randint(1, fan_in))):
            graph.add_edge(u, v)
    return graph


def staged_schedules(n: int, max_computations: int):
    """Every schedule on the staged grid of n nodes (ids 0..n-1) computing no node more than allowed."""
    for masks in itertools.product(*(range(1 << k) for k in range(n))):
        steps = []
        for k, mask in enumerate(masks):
            steps.extend(j for j in range(k) if mask >> j & 1)
            steps.append(k)
        if max(steps.count(v) for v in range(n)) <= max_computations:
            yield steps


def brute_force_min_compute(
    graph: nx.DiGraph, budget: int, max_computations: int, workspace: str | None = None
) -> float | None:
    """The least total compute of a staged schedule within budget (nodes 0..n-1 in order), None if none fits."""
    best = math.inf
    for steps in staged_schedules(graph.number_of_nodes(), max_computations):
        if naive_peak(graph, steps, workspace=workspace) <= budget:
            best = min(best, sum(graph.nodes[v]["cost_cpu"] for v in steps))
    return None if best == math.inf else best


def naive_peak(graph: nx.DiGraph, steps, memory: str = "cost_ram", workspace: str | None = None) -> int:
    """The peak straight from the definition: at step t, every earlier instance some step >= t still reads
    (a step reads the latest instance of each input), plus the output and workspace of step t. Cubic."""
    read_from = []  # read_from[t]: the steps whose outputs step t reads
    for t, v in enumerate(steps):
        read_from.append({max(s for s in range(t) if steps[s] == u) for u in graph.predecessors(v)})
    peak = 0
    for t, v in enumerate(steps):
        live = [s for s in range(t) if any(s in read_from[r] for r in range(t, len(steps)))]
        scratch = graph.nodes[v].get(workspace, 0) if workspace else 0
        peak = max(peak, graph.nodes[v][memory] + scratch + sum(graph.nodes[steps[s]][memory] for s in live))
    return peak


def load_checkmate(name: str) -> nx.DiGraph:
    return nx.node_link_graph(json.loads((SHARED_GRAPHS / name).read_text()), edges="links")


def check_schedule_shape(graph: nx.DiGraph, order, steps, max_computations: int) -> None:
    """Every node computed, none more than allowed, first computations in `order`, inputs computed before."""
    assert set(steps) == set(graph.nodes)
    assert max(steps.count(v) for v in set(steps)) <= max_computations
    first = list(dict.fromkeys(steps))
    assert first == list(order)
    seen = set()
    for v in steps:
        assert set(graph.predecessors(v)) <= seen
        seen.add(v)
