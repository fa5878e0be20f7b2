"""The fast seeded fuzzing subset (issue 18, item 6): random einsum networks and random small models compiled with
``backend="eager"`` equal eager in float64, forward and gradients, at the example batch and at another one.

The long mode is ``python bench/fuzz.py``. The first tests check the generators themselves: a network written as a
chain of pairwise einsums or matmuls computes its one-einsum form, and the same seed gives the same case.
"""
import pytest
import torch

import tcomp

from .check import Tally, check, eager_gradients_wrong, run_trial
from .models import model_trial
from .networks import (FAMILIES, STYLES, NetworkModule, network_inputs, network_trial, random_network,
                       written_case)

NETWORK_SEEDS = range(60)
MODEL_SEEDS = range(30)
MAX_FALLBACK_SHARE = 0.005
TWOS = dict.fromkeys("abcdefghijklmnopqr", 2)
FOUND_BY_LONG_RUNS = [  # each fell back to eager: tcomp emitted code that raised
    # size-1 indices: a reshape to the wrong shape
    ("abcd,ef,,gfh,iac,jgbhd->jie", dict(zip("abcdefghi", (1, 1, 4, 3, 3, 3, 2, 4, 3))), "WxWWWx", "j", 3, 5,
     "einsum", {}),
    ("jab,cdefga,j,jdfb,jhg,jieh->jci", TWOS, "xxxxxx", "j", 2, 7, "pairwise", {}),
    # one tensor as two operands: a bmm of the wrong shapes
    ("abc,ade,jdfg,jbgh,jfhi,jcei->j", TWOS, "xxxxxx", "j", 2, 4, "einsum", {1: 0}),
    # a lattice of 18 bonds: index names past Z in an emitted einsum
    ("sabcd,efdg,higc,sbjkl,sfmln,ionk,sjapq,meqr,ohrp->", TWOS, "xWWxxWxxx", "s", 1, 7, "pairwise", {}, False, 24),
]


def _tally(trial, seeds) -> Tally:
    tally = Tally()
    for seed in seeds:
        tally.add(*run_trial(trial, seed))
    return tally


def test_network_styles_compute_the_einsum():
    for seed in range(200):
        case = random_network(seed)
        g = torch.Generator().manual_seed(seed)
        model = NetworkModule(case, g)
        inputs = network_inputs(case, case.batch, g)
        reference = torch.einsum(case.equation, *model.operands(inputs))
        torch.testing.assert_close(model(*inputs), reference, rtol=1e-12, atol=1e-12)


def test_generators_are_seeded_and_cover_every_kind():
    cases = [random_network(seed) for seed in NETWORK_SEEDS]
    assert cases == [random_network(seed) for seed in NETWORK_SEEDS]
    assert {c.family for c in cases} == set(FAMILIES) and {c.style for c in cases} == set(STYLES)
    for trial in (network_trial, model_trial):
        (text, model, example, fresh), (text2, model2, example2, fresh2) = trial(7), trial(7)
        assert text == text2
        for a, b in zip([*model.state_dict().values(), *example, *fresh],
                        [*model2.state_dict().values(), *example2, *fresh2]):
            assert torch.equal(a, b)


def test_a_finite_difference_arbitrates_gradients():
    """The arbiter of a gradient mismatch sides with the right gradients, whichever side has them."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()).double()
    params, x = list(model.parameters()), torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(2, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    right = list(torch.autograd.grad(model(x), [*params, x], cotangent))
    wrong = [right[0] * 1.5, *right[1:]]
    x = x.detach()
    assert eager_gradients_wrong(model, params, (x,), 5, wrong, right)
    assert not eager_gradients_wrong(model, params, (x,), 5, right, wrong)


@pytest.mark.parametrize("found", FOUND_BY_LONG_RUNS, ids=lambda f: f[0])
def test_networks_long_runs_found_compile_and_match(found):
    case = written_case(*found)
    g = torch.Generator().manual_seed(0)
    model = NetworkModule(case, g)
    outcome = check(model, network_inputs(case, case.batch, g), network_inputs(case, case.fresh_batch, g), 0)
    assert outcome.status == "ok" and not outcome.fallbacks, (outcome.detail, outcome.fallbacks)


def test_random_networks_match_eager():
    tally = _tally(network_trial, NETWORK_SEEDS)
    assert tally.statuses["invalid"] == 0, tally.failures
    assert tally.statuses["mismatch"] == tally.statuses["crash"] == 0, tally.failures
    assert tally.fell_back <= MAX_FALLBACK_SHARE * tally.cases, tally.reason_examples


def test_random_models_match_eager():
    tally = _tally(model_trial, MODEL_SEEDS)
    assert tally.statuses["invalid"] == 0, tally.failures
    assert tally.statuses["mismatch"] == tally.statuses["crash"] == 0, tally.failures
    assert tally.fell_back == 0, tally.reason_examples


def test_a_batch_norm_after_a_permute_at_batch_one_has_eagers_gradients():
    """At batch 1 tcomp used to hand BatchNorm2d a reshaped view whose size-1 dims had strides eager never gives it,
    and eager's CPU batch-norm backward is wrong for those (gradcheck fails on it): a relabel is now emitted as the
    view eager made (emit's ``_eager_view``)."""
    description, model, example, fresh = model_trial(200564)  # found by the long run of 2026-12-07
    compiled = tcomp.compile(model, fresh, backend="eager")
    x = fresh[0].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: model(t), (x,), raise_exception=False)
    assert torch.autograd.gradcheck(lambda t: compiled(t), (x,), raise_exception=False)
