"""The greedy repair heuristic and the staged-grid helpers it shares with the CP-SAT model."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remat_helpers import dags, layered_graph, make_graph, naive_peak

from tcomp.remat.heuristic import greedy_schedule
from tcomp.remat.problem import Problem, drop_unread_recomputations, staged_steps


def problem_of(graph, max_computations=2):
    return Problem.from_graph(graph, range(graph.number_of_nodes()), "cost_cpu", "cost_ram", max_computations)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(min_nodes=4, max_nodes=25, max_size=50), st.floats(0, 1), st.integers(1, 3))
def test_a_repaired_schedule_is_on_the_grid_and_within_budget(graph, where, max_computations):
    problem = problem_of(graph, max_computations)
    budget = int(problem.lower_bound + where * (problem.no_recompute_peak - problem.lower_bound))
    found = greedy_schedule(problem, budget)
    if budget >= problem.no_recompute_peak:
        assert found == [[]] * problem.n  # nothing to repair
    if found is None:
        return
    assert all(again == sorted(set(again)) and all(v < k for v in again) for k, again in enumerate(found))
    steps = staged_steps(found)
    assert max(steps.count(v) for v in range(problem.n)) <= max_computations
    assert naive_peak(graph, steps) <= budget


def test_repair_recomputes_to_fit_a_tighter_budget():
    graph = layered_graph(80, seed=11)
    problem = problem_of(graph)
    budget = int(0.85 * problem.no_recompute_peak)
    found = greedy_schedule(problem, budget)
    steps = staged_steps(found)
    assert len(steps) > problem.n and problem.peak(steps) <= budget


def test_staged_steps_puts_recomputations_before_each_stage_node():
    assert staged_steps([[], [], [0], [0, 2]]) == [0, 1, 0, 2, 0, 2, 3]


def test_unread_recomputations_are_dropped_transitively():
    # 0 -> 1 -> 2 -> 3; recomputing 0 and 1 in stage 3 is useless since 3 reads only 2
    graph = make_graph([1, 1, 1, 1], [1, 1, 1, 1], [(0, 1), (1, 2), (2, 3)])
    problem = problem_of(graph)
    assert drop_unread_recomputations(problem, [[], [], [], [0, 1]]) == [[], [], [], []]
    # but a recomputation 2 reads is kept, with its input
    assert drop_unread_recomputations(problem, [[], [], [0, 1], []]) == [[], [], [0, 1], []]
