"""schedule: optimality against brute force, the budget always kept, and the error and time-out paths."""
import networkx as nx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from remat_helpers import (
    SHARED_GRAPHS, brute_force_min_compute, check_schedule_shape, dags, layered_graph, load_checkmate, make_graph,
)

from tcomp.remat.heuristic import greedy_schedule
from tcomp.remat.problem import Problem
from tcomp.remat import BudgetInfeasibleError, schedule, simulate

SMALL = make_graph([4, 5, 7, 1, 8], [1, 1, 5, 2, 8], [(0, 1), (0, 2), (0, 3), (1, 3), (2, 4)])


def peaks(graph, order=None):
    problem = Problem.from_graph(graph, order, "cost_cpu", "cost_ram", 2)
    return problem.lower_bound, problem.no_recompute_peak


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(dags(min_nodes=3, max_nodes=5), st.floats(0, 1), st.integers(1, 2))
def test_optimum_equals_brute_force(graph, where, max_computations):
    low, high = peaks(graph, range(graph.number_of_nodes()))
    assume(high > low)  # otherwise every budget is trivial: above the no-recompute peak or below any peak
    budget = int(low + where * (high - 1 - low))
    best = brute_force_min_compute(graph, budget, max_computations)
    order = range(graph.number_of_nodes())  # the order brute_force_min_compute enumerates in
    if best is None:
        with pytest.raises(BudgetInfeasibleError) as error:
            schedule(graph, budget, order=order, max_computations=max_computations, workers=1)
        assert error.value.proven and error.value.smallest_feasible > budget
        return
    result = schedule(graph, budget, order=order, max_computations=max_computations, workers=1)
    assert result.status == "optimal"
    assert result.total_compute == best
    assert result.peak_memory == simulate(graph, result.steps) <= budget
    check_schedule_shape(graph, order, list(result.steps), max_computations)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(dags(min_nodes=3, max_nodes=5, workspace=True), st.floats(0, 1))
def test_optimum_with_workspace_equals_brute_force(graph, where):
    order = range(graph.number_of_nodes())
    problem = Problem.from_graph(graph, order, "cost_cpu", "cost_ram", 2, "scratch")
    assume(problem.no_recompute_peak > problem.lower_bound)
    budget = int(problem.lower_bound + where * (problem.no_recompute_peak - 1 - problem.lower_bound))
    best = brute_force_min_compute(graph, budget, 2, workspace="scratch")
    if best is None:
        with pytest.raises(BudgetInfeasibleError):
            schedule(graph, budget, order=order, workspace="scratch", workers=1)
        return
    result = schedule(graph, budget, order=order, workspace="scratch", workers=1)
    assert (result.status, result.total_compute) == ("optimal", best)
    assert result.peak_memory == simulate(graph, result.steps, workspace="scratch") <= budget


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(min_nodes=6, max_nodes=20, max_size=100, max_cost=100), st.floats(0, 1), st.randoms(use_true_random=False))
def test_random_dags_keep_the_budget(graph, where, rng):
    order = list(nx.topological_sort(graph))
    nodes = list(graph.nodes)
    relabel = dict(zip(nodes, rng.sample(nodes, len(nodes))))  # ids that are not the order
    graph = nx.relabel_nodes(graph, relabel)
    order = [relabel[v] for v in order]
    low, high = peaks(graph, order)
    budget = low + where * (high - low)
    try:
        result = schedule(graph, budget, order=order, time_limit=0.5, workers=1)
    except BudgetInfeasibleError as error:
        assert error.smallest_feasible > budget or not error.proven
        return
    assert result.peak_memory == simulate(graph, result.steps) <= budget
    assert result.tdi >= 0
    assert result.total_compute == pytest.approx(sum(graph.nodes[v]["cost_cpu"] for v in result.steps))
    check_schedule_shape(graph, order, list(result.steps), 2)


def test_budget_above_the_no_recompute_peak_needs_no_recomputation():
    graph = layered_graph(40, seed=1)
    _, high = peaks(graph)
    result = schedule(graph, high)
    assert result.steps == tuple(nx.topological_sort(graph))
    assert (result.status, result.found_by, result.tdi, result.peak_memory) == ("optimal", "no-recompute", 0.0, high)


def test_feasibility_phase_when_the_heuristic_is_stuck():
    graph = layered_graph(12, seed=5)  # at 0.65 P the greedy repair gets stuck, yet a schedule exists
    _, high = peaks(graph)
    budget = int(0.65 * high)
    assert greedy_schedule(Problem.from_graph(graph, None, "cost_cpu", "cost_ram", 2), budget) is None
    result = schedule(graph, budget, workers=1)
    assert result.found_by == "cp-sat"
    assert result.peak_memory == simulate(graph, result.steps) <= budget
    check_schedule_shape(graph, list(nx.topological_sort(graph)), list(result.steps), 2)


def test_infeasibility_proven_by_the_solver():
    graph = layered_graph(12, seed=3)  # above the lower bound, but no schedule fits 0.7 P with 2 computations
    low, high = peaks(graph)
    budget = int(0.7 * high)
    assert budget >= low
    with pytest.raises(BudgetInfeasibleError, match="no schedule exists with this order") as error:
        schedule(graph, budget, workers=1)
    assert error.value.proven and error.value.smallest_feasible > budget


def test_time_out_returns_the_heuristic_schedule_as_feasible():
    graph = layered_graph(150, seed=3)
    low, high = peaks(graph)
    budget = int(0.85 * high)
    result = schedule(graph, budget, time_limit=1e-3)
    assert (result.status, result.found_by) == ("feasible", "heuristic")
    assert result.peak_memory == simulate(graph, result.steps) <= budget
    assert result.tdi > 0


def test_optimisation_improves_on_the_heuristic():
    graph = layered_graph(50, seed=0)
    _, high = peaks(graph)
    budget = int(0.75 * high)
    problem = Problem.from_graph(graph, None, "cost_cpu", "cost_ram", 2)
    hint = greedy_schedule(problem, budget)
    hint_compute = problem.total_compute([v for k, again in enumerate(hint) for v in (*again, k)])
    result = schedule(graph, budget, time_limit=60, workers=1)
    assert (result.status, result.found_by) == ("optimal", "cp-sat")
    assert result.total_compute < hint_compute
    assert result.peak_memory == simulate(graph, result.steps) <= budget


def test_budget_below_the_lower_bound_reports_the_smallest_feasible_budget():
    graph = layered_graph(30, seed=2)
    low, _ = peaks(graph)
    with pytest.raises(BudgetInfeasibleError, match=r"smallest budget found feasible is \d+") as error:
        schedule(graph, low - 1)
    err = error.value
    assert err.proven and err.budget == low - 1 and err.lower_bound == low
    assert f"{err.smallest_feasible}" in str(err)
    assert schedule(graph, err.smallest_feasible, time_limit=5).peak_memory <= err.smallest_feasible


def test_one_computation_per_node_cannot_go_below_the_no_recompute_peak():
    graph = layered_graph(12, seed=4)
    low, high = peaks(graph)
    assert high - 1 >= low
    with pytest.raises(BudgetInfeasibleError, match="at most 1 computations per node") as error:
        schedule(graph, high - 1, max_computations=1, workers=1)
    assert error.value.proven and error.value.smallest_feasible == high


def test_a_node_marked_not_recomputable_is_computed_once():
    graph = layered_graph(30, seed=0)
    _, high = peaks(graph)
    budget = int(0.8 * high)
    free = schedule(graph, budget, workers=1, time_limit=20)
    again = {v for v in free.steps if free.steps.count(v) > 1}
    assert again
    for v in again:
        graph.nodes[v]["recomputable"] = False
    pinned = schedule(graph, budget, workers=1, time_limit=20)
    assert pinned.status == "optimal" and pinned.total_compute > free.total_compute
    assert all(pinned.steps.count(v) == 1 for v in again)
    assert pinned.peak_memory == simulate(graph, pinned.steps) <= budget


def test_float_compute_costs():
    graph = make_graph([4, 5, 7, 1, 8], [0.5, 1.25, 2.0, 0.75, 3.5], [(0, 1), (0, 2), (0, 3), (1, 3), (2, 4)])
    for v in graph:
        graph.nodes[v]["flops"] = graph.nodes[v].pop("cost_cpu")
    result = schedule(graph, 15, compute="flops", workers=1)
    assert result.status == "optimal" and result.peak_memory <= 15
    integral = make_graph([4, 5, 7, 1, 8], [2, 5, 8, 3, 14], [(0, 1), (0, 2), (0, 3), (1, 3), (2, 4)])
    assert result.total_compute * 4 == brute_force_min_compute(integral, 15, 2)


def test_zero_compute_everywhere():
    graph = make_graph([4, 5, 7, 1, 8], [0] * 5, [(0, 1), (0, 2), (0, 3), (1, 3), (2, 4)])
    result = schedule(graph, 15, workers=1)
    assert result.total_compute == 0 and result.tdi == 0 and result.peak_memory <= 15


@pytest.mark.skipif(not SHARED_GRAPHS.is_dir(), reason="shared benchmark graphs not available")
def test_checkmate_fcn8_reaches_the_published_optimum():
    graph = load_checkmate("fcn_8_vgg_32_416x608x3_train_nx.json")
    problem = Problem.from_graph(graph, sorted(graph), "cost_cpu", "cost_ram", 2)
    assert problem.no_recompute_peak == 13_484_795_520  # P in the data README
    result = schedule(graph, 0.9 * problem.no_recompute_peak, order=sorted(graph), time_limit=60)
    assert result.status == "optimal"
    assert result.tdi == pytest.approx(0.000294, abs=5e-6)  # README: 0.03% (optimal)
    assert simulate(graph, result.steps) <= 0.9 * problem.no_recompute_peak


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda g: g.add_edge(4, 0), ValueError, "cycle"),
        (lambda g: g.nodes[2].pop("cost_ram"), ValueError, "node 2 has no attribute 'cost_ram'"),
        (lambda g: g.nodes[2].update(cost_ram=2.5), ValueError, "must be an integer"),
        (lambda g: g.nodes[2].update(cost_cpu=-1), ValueError, "non-negative"),
        (lambda g: g.nodes[2].update(cost_cpu=float("nan")), ValueError, "finite"),
    ],
)
def test_bad_graphs_are_rejected(mutate, error, message):
    graph = SMALL.copy()
    mutate(graph)
    with pytest.raises(error, match=message):
        schedule(graph, 15)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="networkx.DiGraph"):
        schedule(nx.MultiDiGraph(SMALL), 15)
    with pytest.raises(ValueError, match="every node of the graph exactly once"):
        schedule(SMALL, 15, order=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not topological: 0 comes before its input"):
        schedule(make_graph([1, 1], [1, 1], [(1, 0)]), 15, order=[0, 1])
    for kwargs, message in [
        (dict(budget=-1), "budget"), (dict(budget=float("inf")), "budget"), (dict(budget="10"), "budget"),
        (dict(budget=15, max_computations=0), "max_computations"),
        (dict(budget=15, time_limit=0), "time_limit"), (dict(budget=15, workers=0), "workers"),
    ]:
        with pytest.raises(ValueError, match=message):
            schedule(SMALL, **kwargs)
