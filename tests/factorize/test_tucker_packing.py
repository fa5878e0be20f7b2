"""The Tucker packing integer program (CP-SAT) against brute force and the greedy baseline."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import (greedy_packing, mode_singular_values, packing_cost, tucker,
                                    tucker_packing)


def brute_force(singular_values, mode_sizes, budget, multiplier):
    """The best retained energy over every rank tuple within the budget."""
    best = -1.0
    for ranks in itertools.product(*(range(1, len(s) + 1) for s in singular_values)):
        if packing_cost(ranks, mode_sizes, multiplier) <= budget:
            best = max(best, sum(sum(v * v for v in s[:r]) for s, r in zip(singular_values, ranks)))
    return best


spectra = st.lists(st.floats(0.0, 10.0), min_size=1, max_size=6).map(lambda v: sorted(v, reverse=True))


@settings(max_examples=40, deadline=None)
@given(singular_values=st.lists(spectra, min_size=1, max_size=3), multiplier=st.integers(1, 9),
       extra=st.integers(0, 60), slack=st.integers(0, 3), data=st.data())
def test_optimum_equals_brute_force(singular_values, multiplier, extra, slack, data):
    mode_sizes = [len(s) + data.draw(st.integers(0, slack)) for s in singular_values]
    budget = packing_cost([1] * len(mode_sizes), mode_sizes, multiplier) + extra
    packing = tucker_packing(singular_values, mode_sizes, budget, multiplier)
    greedy = greedy_packing(singular_values, mode_sizes, budget, multiplier)
    assert packing.optimal
    assert packing.cost == packing_cost(packing.ranks, mode_sizes, multiplier) <= budget
    assert greedy.cost <= budget
    optimum = brute_force(singular_values, mode_sizes, budget, multiplier)
    assert packing.retained == pytest.approx(optimum, rel=1e-9, abs=1e-9)
    assert packing.retained >= greedy.retained - 1e-9


def test_beats_greedy_on_a_conv_spectrum():
    weight = torch.randn(32, 24, 3, 3, generator=torch.Generator().manual_seed(0))
    weight = weight * torch.logspace(0, -2, 32)[:, None, None, None]  # a decaying output spectrum
    singular_values = [mode_singular_values(weight, 0), mode_singular_values(weight, 1)]
    budget = 2000
    packing = tucker_packing(singular_values, [32, 24], budget, 9)
    greedy = greedy_packing(singular_values, [32, 24], budget, 9)
    assert packing.optimal and packing.retained >= greedy.retained
    # The discarded energy bounds the truncated HOSVD's error: error² ≤ Σ_n (total − retained_n).
    core, factors = tucker(weight.double(), [*packing.ranks, None, None])
    total = float(weight.double().norm() ** 2)
    assert total - float(core.norm() ** 2) <= 2 * total - packing.retained + 1e-6 * total


@pytest.mark.parametrize("args, message", [
    (([[3.0, 1.0]], [2], 1), "below 3"),
    (([[3.0, 1.0]], [1], 10), "2 singular values for a mode of size 1"),
    (([[1.0, 3.0]], [2], 10), "non-increasing"),
    (([[3.0, -1.0]], [2], 10), "non-negative"),
    (([[3.0], [2.0]], [1], 10), "2 lists of singular values for 1 modes"),
])
def test_invalid_instances_are_a_clear_error(args, message):
    for solve in (tucker_packing, greedy_packing):
        with pytest.raises(ValueError, match=message):
            solve(*args)
    with pytest.raises(ValueError, match="core_multiplier"):
        tucker_packing([[1.0]], [1], 10, 0)
