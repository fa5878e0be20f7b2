"""tcomp.contract.pathsearch: the benchmark metric, and the large-network path search (issue 3)."""
import itertools
import json
import math
import multiprocessing
import os
import random
import string
import subprocess
import sys
import time
import types
from collections import Counter

import numpy as np
import opt_einsum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.contract import pathsearch
from tcomp.contract.pathsearch import SearchResult, contraction_cost, search


# -- helpers -------------------------------------------------------------------------------------------------

def equation(inputs, output) -> str:
    return ",".join(inputs) + "->" + output


def arrays_for(inputs, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal([sizes[c] for c in term]) for term in inputs]


def executed_cost(inputs, output, sizes, pairs):
    """Brute force: contract real arrays pair by pair with numpy, charging each step the number of multiply-adds
    of its loop nest (every combination of the indices of both operands, read off the arrays' shapes), each
    result keeping only the indices some other live tensor or the output holds; returns (log10 of the total,
    the resulting tensor)."""
    live = list(zip(inputs, arrays_for(inputs, sizes)))
    total = 0
    for i, j in pairs:
        (idx_i, arr_i), (idx_j, arr_j) = live[i], live[j]
        del live[max(i, j)], live[min(i, j)]
        dims = {**dict(zip(idx_i, arr_i.shape)), **dict(zip(idx_j, arr_j.shape))}
        total += math.prod(dims.values())
        later = set(output).union(*(t for t, _ in live))
        keep = "".join(c for c in dims if c in later)
        live.append((keep, np.einsum(f"{idx_i},{idx_j}->{keep}", arr_i, arr_j)))
    (idx, result), = live
    return math.log10(total), np.einsum(f"{idx}->{output}", result)


def random_linear_path(n, rng):
    path = []
    while n > 1:
        path.append(tuple(sorted(rng.sample(range(n), 2))))
        n -= 1
    return path


def all_binary_costs(inputs, output, sizes):
    """The cost of every pairwise contraction order of a small network (brute force)."""
    def rec(n):
        if n == 1:
            yield []
            return
        for pair in itertools.combinations(range(n), 2):
            for rest in rec(n - 1):
                yield [pair] + rest
    return [contraction_cost(inputs, output, sizes, p) for p in rec(len(inputs))]


@st.composite
def networks(draw, min_tensors=2, max_tensors=14, max_indices=12):
    """Random networks over small indices (sizes 1-3): hyperedges, outer products, dangling and size-1 indices,
    scalar operands and empty outputs all occur."""
    n_idx = draw(st.integers(1, max_indices))
    letters = string.ascii_letters[:n_idx]
    sizes = {c: draw(st.integers(1, 3)) for c in letters}
    n = draw(st.integers(min_tensors, max_tensors))
    inputs = ["".join(draw(st.lists(st.sampled_from(letters), min_size=0, max_size=4, unique=True)))
              for _ in range(n)]
    used = sorted(set("".join(inputs)))
    output = "".join(draw(st.lists(st.sampled_from(used), unique=True, max_size=3))) if used else ""
    return inputs, output, sizes


# -- the metric ----------------------------------------------------------------------------------------------

def test_contraction_cost_by_hand():
    # ab,bc,cd->ad with a=2, b=3, c=4, d=5
    inputs, output, sizes = ["ab", "bc", "cd"], "ad", dict(a=2, b=3, c=4, d=5)
    assert contraction_cost(inputs, output, sizes, [(0, 1), (0, 1)]) == pytest.approx(math.log10(24 + 40))
    assert contraction_cost(inputs, output, sizes, [(1, 2), (0, 1)]) == pytest.approx(math.log10(60 + 30))
    # a three-operand step is taken pairwise, left to right: (bc·cd) = 60 -> bd, then ab·bd = 30
    assert contraction_cost(inputs, output, sizes, [(1, 2, 0)]) == pytest.approx(math.log10(60 + 30))
    # a hyperedge: b is held by three tensors, so it survives the first contraction (ab·b = 6 -> ab, ab·bc = 24)
    assert contraction_cost(["ab", "b", "bc"], "a", dict(a=2, b=3, c=4), [(0, 1), (0, 1)]) == \
        pytest.approx(math.log10(6 + 24))
    # without the output holding a, it is summed in the first step (ab·b = 6 -> b, b·bc = 12)
    assert contraction_cost(["ab", "b", "bc"], "", dict(a=2, b=3, c=4), [(0, 1), (0, 1)]) == \
        pytest.approx(math.log10(6 + 12))
    # within a longer step, an index stays while a later operand of the step holds it: ab·c = 24 keeps b and c,
    # bc·cd = 60 keeps b, b·b = 3
    sizes4 = dict(a=2, b=3, c=4, d=5)
    assert contraction_cost(["ab", "c", "cd", "b"], "", sizes4, [(0, 1, 2, 3)]) == \
        pytest.approx(math.log10(24 + 60 + 3))
    # a single-operand step sums what no other tensor holds (abc = 24 -> c), then c·cd = 20
    assert contraction_cost(["abc", "cd"], "", sizes4, [(0,), (0, 1)]) == pytest.approx(math.log10(24 + 20))
    # a single-operand step costs its operand's size; one tensor with no step costs nothing
    assert contraction_cost(["ab"], "a", dict(a=2, b=3), [(0,)]) == pytest.approx(math.log10(6))
    assert contraction_cost(["ab"], "a", dict(a=2, b=3), []) == float("-inf")


def test_contraction_cost_exact_for_huge_sizes():
    # 1e35 · 1e35 overflows no float here: the sum is an exact integer
    sizes = {"a": 10**35, "b": 10**35, "c": 2}
    cost = contraction_cost(["ab", "bc", "c"], "", sizes, [(0, 1), (0, 1)])
    assert cost == pytest.approx(math.log10(2 * 10**70 + 10**35 * 2))
    named = contraction_cost([("left", "mid"), ("mid", "right")], ("left",), {"left": 10**200, "mid": 7,
                                                                               "right": 10**200}, [(0, 1)])
    assert named == pytest.approx(400 + math.log10(7))


@settings(max_examples=60)
@given(networks(max_tensors=7, max_indices=8), st.randoms(use_true_random=False))
def test_contraction_cost_matches_executed_contraction(network, rng):
    inputs, output, sizes = network
    path = random_linear_path(len(inputs), rng)
    cost, result = executed_cost(inputs, output, sizes, path)
    assert contraction_cost(inputs, output, sizes, path) == pytest.approx(cost, rel=1e-12)
    expected = np.einsum(equation(inputs, output), *arrays_for(inputs, sizes))
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(expected).max(initial=0)))


@pytest.mark.parametrize("path, message", [
    ([(0, 3)], "not a set of distinct positions"),
    ([(1, 1)], "not a set of distinct positions"),
    ([()], "not a set of distinct positions"),
    ([(0, 1)], "leaves 2 terms"),
])
def test_contraction_cost_rejects_bad_paths(path, message):
    with pytest.raises(ValueError, match=message):
        contraction_cost(["ab", "bc", "cd"], "", dict(a=2, b=2, c=2, d=2), path)


@pytest.mark.parametrize("inputs, output, sizes, error, message", [
    ([], "", {}, ValueError, "inputs is empty"),
    ("ab", "", dict(a=2, b=2), TypeError, "list of index strings"),
    (["ab", 3], "", dict(a=2, b=2), TypeError, r"inputs\[1\]"),
    (["ab"], "c", dict(a=2, b=2), ValueError, "appear in no input"),
    (["ab"], "aa", dict(a=2, b=2), ValueError, "repeats an index"),
    (["ab"], "", dict(a=2), ValueError, "'b' has no size"),
    (["ab"], "", dict(a=2, b=0), ValueError, "at least 1"),
    (["ab"], "", dict(a=2, b=2.5), TypeError, "must be an integer"),
])
def test_bad_networks_are_rejected(inputs, output, sizes, error, message):
    with pytest.raises(error, match=message):
        contraction_cost(inputs, output, sizes, [(0,)])
    with pytest.raises(error, match=message):
        search(inputs, output, sizes, time_budget=1)


def test_search_rejects_bad_options():
    with pytest.raises(ValueError, match="time_budget"):
        search(["ab"], "", dict(a=2, b=2), time_budget=0)
    with pytest.raises(ValueError, match="max_trials"):
        search(["ab"], "", dict(a=2, b=2), max_trials=-1)


# -- the search ----------------------------------------------------------------------------------------------

@settings(max_examples=25)
@given(networks())
def test_search_path_is_valid_and_never_worse_than_greedy(network):
    inputs, output, sizes = network
    result = search(inputs, output, sizes, time_budget=0.3, max_trials=16)
    assert isinstance(result, SearchResult)
    assert result.log10_cost == contraction_cost(inputs, output, sizes, result.path)
    greedy = opt_einsum.paths.greedy([set(t) for t in inputs], set(output), sizes)
    assert result.log10_cost <= contraction_cost(inputs, output, sizes, greedy) + 1e-12
    arrays = arrays_for(inputs, sizes)
    got = opt_einsum.contract(equation(inputs, output), *arrays, optimize=result.path)
    expected = opt_einsum.contract(equation(inputs, output), *arrays, optimize="greedy")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(expected).max(initial=0)))


@settings(max_examples=30)
@given(networks(min_tensors=3, max_tensors=6, max_indices=6))
def test_small_networks_are_solved_exactly(network):
    inputs, output, sizes = network
    # dp sums an index held by one tensor alone before any pairwise step, which the metric does not count:
    # exactness holds for networks where the output holds every such index
    held = Counter(c for term in inputs for c in term)
    output += "".join(c for c, k in held.items() if k == 1 and c not in output)
    result = search(inputs, output, sizes, time_budget=5)
    assert result.log10_cost == pytest.approx(min(all_binary_costs(inputs, output, sizes)), abs=1e-12)


def test_search_handles_edge_cases():
    cases = [
        (["ab"], "a", dict(a=2, b=3)),                           # one tensor
        (["ab", "bc"], "", dict(a=2, b=3, c=4)),                 # two, empty output
        (["ab", "", "b"], "a", dict(a=2, b=3)),                  # a scalar operand
        (["a", "b", "c", "d"], "abcd", dict(a=2, b=3, c=4, d=1)),  # outer products only, a size-1 index
        (["abc", "ab", "ac", "bc", "a"] * 3, "a", dict(a=2, b=3, c=1)),  # hyperedges, repeated terms
        (["ab", "bc", "cd", "de", "ea", "ax", "by", "cz"] * 2, "", dict(a=2, b=1, c=3, d=2, e=1, x=2, y=3, z=1)),
    ]
    for inputs, output, sizes in cases:
        result = search(inputs, output, sizes, time_budget=0.5, max_trials=8)
        arrays = arrays_for(inputs, sizes)
        got = opt_einsum.contract(equation(inputs, output), *arrays, optimize=result.path)
        np.testing.assert_allclose(got, np.einsum(equation(inputs, output), *arrays), rtol=1e-9, atol=1e-9)


def test_search_accepts_long_index_names():
    ring = [(f"bond{k}", f"bond{(k + 1) % 12}", f"phys{k}") for k in range(12)]
    sizes = {**{f"bond{k}": 4 for k in range(12)}, **{f"phys{k}": 2 for k in range(12)}}
    result = search(ring, ("phys0",), sizes, time_budget=1, max_trials=8)
    assert result.log10_cost == contraction_cost(ring, ("phys0",), sizes, result.path)


def lattice(rows, cols, bond=2):
    """A 2D grid of tensors with one index per edge (a scalar network, like the benchmark's lattices)."""
    inputs = [[] for _ in range(rows * cols)]
    for r, c in itertools.product(range(rows), range(cols)):
        for dr, dc in ((0, 1), (1, 0)):
            if r + dr < rows and c + dc < cols:
                name = f"e{r}_{c}_{dr}"
                inputs[r * cols + c].append(name)
                inputs[(r + dr) * cols + c + dc].append(name)
    sizes = {name: bond for term in inputs for name in term}
    return inputs, (), sizes


DETERMINISM_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("pathsearch", sys.argv[1])  # without tcomp's torch import
pathsearch = sys.modules["pathsearch"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pathsearch)
inputs, output, sizes, seed = json.loads(sys.argv[2])
result = pathsearch.search(inputs, output, sizes, time_budget=20, seed=seed, max_trials=24)
print(json.dumps([result.path, result.method, result.seconds]))
"""


def test_search_is_deterministic_for_a_seed_across_processes():
    # string index names hash differently in each process (PYTHONHASHSEED); the path must not depend on it
    inputs, output, sizes = lattice(4, 4)
    runs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, pathsearch.__file__,
                              json.dumps([inputs, output, sizes, 3])], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        path, method, seconds = json.loads(run.stdout)
        assert seconds < 20, "the search must converge before the deadline for this test to mean anything"
        runs.append((path, method))
    assert runs[0] == runs[1]


def test_reconfiguration_improves_a_bad_tree_and_keeps_it_consistent():
    inputs, output, sizes = lattice(5, 5)
    net = pathsearch._network(inputs, output, sizes)
    bad = pathsearch._Tree.from_path(net, random_linear_path(len(inputs), random.Random(0)))
    before = bad.total()
    assert pathsearch._reconfigure(bad, 8, time.perf_counter() + 30)
    assert bad.total() < before
    assert math.log10(bad.total()) == pytest.approx(contraction_cost(inputs, output, sizes, bad.path()), rel=1e-12)


def test_search_respects_its_budget_and_stops_dp():
    rng = random.Random(1)
    n = 120  # a random 3-regular graph: dp does not finish in a second
    while True:
        stubs = [v for v in range(n) for _ in range(3)]
        rng.shuffle(stubs)
        edges = list(zip(stubs[::2], stubs[1::2]))
        if all(a != b for a, b in edges) and len({frozenset(e) for e in edges}) == len(edges):
            break
    inputs = [[] for _ in range(n)]
    for k, (a, b) in enumerate(edges):
        inputs[a].append(f"e{k}")
        inputs[b].append(f"e{k}")
    sizes = {f"e{k}": 2 for k in range(len(edges))}
    start = time.perf_counter()
    result = search(inputs, (), sizes, time_budget=1.0)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0 + 0.5  # the slack covers one greedy trial or one sub-tree dp started near the deadline
    assert any(method.startswith("dp (stopped") for method, _, _ in result.trials)
    assert not multiprocessing.active_children()


def test_cotengra_is_used_when_installed(monkeypatch):
    inputs, output, sizes = lattice(3, 4)
    calls = []

    class HyperOptimizer:
        def __init__(self, **options):
            calls.append(options)

        def __call__(self, inputs, output, size_dict):
            return opt_einsum.paths.greedy(inputs, output, size_dict)

    monkeypatch.setitem(sys.modules, "cotengra", types.SimpleNamespace(HyperOptimizer=HyperOptimizer))
    result = search(inputs, output, sizes, time_budget=2, max_trials=4)
    assert calls and calls[0]["max_time"] == pytest.approx(pathsearch.COTENGRA_SHARE * 2)
    assert calls[0]["minimize"] == "flops"
    assert "cotengra" in [method for method, _, _ in result.trials]


def test_the_search_is_an_opt_einsum_path_optimizer():
    """Registered as optimize="tcomp", and usable as a PathOptimizer instance: same result as another path, a path
    no costlier than greedy's; a memory limit is refused, not ignored."""
    import numpy as np
    import opt_einsum
    from opt_einsum.testing import rand_equation

    import tcomp  # noqa: F401 - importing tcomp registers the search
    from tcomp.contract.pathsearch import PathSearch

    eq, shapes = rand_equation(12, 3, seed=1)
    arrays = [np.random.default_rng(0).standard_normal(s) for s in shapes]
    np.testing.assert_allclose(opt_einsum.contract(eq, *arrays, optimize="tcomp"),
                               opt_einsum.contract(eq, *arrays, optimize="greedy"), rtol=1e-10)
    ours = opt_einsum.contract_path(eq, *arrays, optimize=PathSearch(time_budget=0.5))[1].opt_cost
    assert ours <= opt_einsum.contract_path(eq, *arrays, optimize="greedy")[1].opt_cost
    with pytest.raises(ValueError, match="memory_limit"):
        opt_einsum.contract_path(eq, *arrays, optimize=PathSearch(), memory_limit=1000)
