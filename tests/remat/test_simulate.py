"""simulate: the memory accounting every schedule is checked against."""
import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from remat_helpers import dags, make_graph, naive_peak

from tcomp.remat import ScheduleError, simulate


def test_chain_counts_inputs_and_output():
    chain = make_graph([1, 2, 4], [1, 1, 1], [(0, 1), (1, 2)])
    # step 0: a; step 1: a (read) + b; step 2: b (read) + c
    assert simulate(chain, [0, 1, 2]) == 6


def test_recomputed_instance_replaces_the_old_one():
    # a chain 0 -> 1 -> 2 -> 3 -> 4 where 4 also reads 0, which is big
    graph = make_graph([5, 1, 10, 1, 1], [1, 1, 1, 1, 1], [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)])
    assert simulate(graph, [0, 1, 2, 3, 4]) == 5 + 1 + 10  # 0 stays live until 4 reads it
    # recomputing 0 just before 4: the first instance dies after step 1 (its last read), so the peak is 1 + 10
    assert simulate(graph, [0, 1, 2, 3, 0, 4]) == 11


def test_an_output_nobody_reads_counts_only_at_its_step():
    graph = make_graph([3, 7, 1], [1, 1, 1], [(0, 2)])
    assert simulate(graph, [0, 1, 2]) == 3 + 7  # 1 is a sink: gone after its step
    assert simulate(graph, [1, 0, 2]) == 7


def test_workspace_counts_only_while_its_node_is_computed():
    graph = make_graph([1, 2, 4], [1, 1, 1], [(0, 1), (1, 2)], workspace=[0, 10, 3])
    # step 1: 0 + 1 + its 10 of workspace = 13; step 2: 1 + 2 + 3 = 9
    assert simulate(graph, [0, 1, 2], workspace="scratch") == 13
    assert simulate(graph, [0, 1, 2]) == 6


def test_reading_a_node_not_yet_computed_is_an_error():
    graph = make_graph([1, 1], [1, 1], [(0, 1)])
    with pytest.raises(ScheduleError, match="reads 0, but no earlier step computes 0"):
        simulate(graph, [1, 0])


def test_unknown_node_and_missing_attribute_are_errors():
    graph = make_graph([1, 1], [1, 1], [(0, 1)])
    with pytest.raises(ScheduleError, match="not a node"):
        simulate(graph, [0, 5])
    with pytest.raises(ValueError, match="no attribute 'bytes'"):
        simulate(graph, [0, 1], memory="bytes")


def test_empty_schedule_has_no_memory():
    assert simulate(nx.DiGraph(), []) == 0


@st.composite
def graphs_with_valid_steps(draw):
    graph = draw(dags(max_nodes=6, workspace=True))
    steps, done = [], set()
    for v in range(graph.number_of_nodes()):
        for _ in range(draw(st.integers(0, 2))):  # recompute some already computed nodes before v
            ready = sorted(u for u in done if set(graph.predecessors(u)) <= done)
            if ready:
                steps.append(draw(st.sampled_from(ready)))
        steps.append(v)
        done.add(v)
    return graph, steps


@settings(max_examples=150, deadline=None)
@given(graphs_with_valid_steps())
def test_simulate_matches_the_definition(case):
    graph, steps = case
    assert simulate(graph, steps) == naive_peak(graph, steps)
    assert simulate(graph, steps, workspace="scratch") == naive_peak(graph, steps, workspace="scratch")
