"""The tensor-network corpus generator's own correctness (tests/tn_corpus/families.py), a fast seeded subset: the
cases run and have the right shapes, the styles of a family compute the same function and the same gradients from
the same parameters, ``make_inputs`` works at other batches, a seed determines its case, and the sizes keep to the
caps. (Compiling the corpus is bench/tn_corpus.py's and other tests' business: tcomp is not called here.)"""
import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from tests.tn_corpus.families import (FAMILIES, MAX_BATCH, MAX_ELEMENTS, MAX_FLOPS, MAX_PARAMS, build, corpus_model,
                                      draw, input_maker, shared_parameters)

SEEDS = range(40)
FAMILY_NAMES = sorted(FAMILIES)


def _family_seeds(family: str, n: int, start: int = 10_000) -> list[int]:
    """Seeds whose family-``family`` sizes are used by the style tests (any seed gives sizes for any family)."""
    return [start + 97 * i for i in range(n)]


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9) -> None:
    scale = max(b.abs().max().item(), 1e-300)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("seed", SEEDS)
def test_case_runs(seed):
    case = corpus_model(seed)
    assert case.family in FAMILIES and case.style in FAMILIES[case.family].styles
    assert "\n" not in case.description and case.family in case.description and case.style in case.description
    assert all(x.dtype == torch.float64 and x.shape[0] == case.sizes["batch"] for x in case.inputs)
    assert all(p.dtype == torch.float64 for p in case.model.parameters())
    with torch.no_grad():
        y = case.model(*case.inputs)
    assert y.shape == case.output_shape()
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_has_styles(family):
    fam = FAMILIES[family]
    assert len(fam.styles) >= 3 and len(set(fam.styles)) == len(fam.styles)
    assert type(fam.module(fam.styles[0], *_shared(family, 10_000)[:2])).__doc__


def _shared(family: str, seed: int, batch: int = 2):
    fam, _, sizes = draw(seed, family)
    return sizes, shared_parameters(fam, sizes, seed), input_maker(fam, sizes, seed)(batch)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_styles_agree(family):
    """All styles built from the same shared parameters give the same outputs (float64)."""
    for seed in _family_seeds(family, 3):
        sizes, params, xs = _shared(family, seed)
        outs = {}
        with torch.no_grad():
            for style in FAMILIES[family].styles:
                outs[style] = build(family, style, sizes, params)(*xs)
        ref_style, ref = next(iter(outs.items()))
        for style, y in outs.items():
            assert y.shape == ref.shape, (seed, style)
            try:
                _close(y, ref)
            except AssertionError as e:
                raise AssertionError(f"seed {seed}: {family}/{style} differs from {ref_style} ({sizes})") from e


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_style_gradients_agree(family):
    """The gradients of the inputs and of every shared parameter agree across styles."""
    for seed in _family_seeds(family, 2, start=20_000):
        _check_gradients(family, seed)


def _check_gradients(family: str, seed: int) -> None:
    sizes, params, xs = _shared(family, seed)
    weights = None
    grads = {}
    for style in FAMILIES[family].styles:
        model = build(family, style, sizes, params)
        inputs = [x.clone().requires_grad_() for x in xs]
        y = model(*inputs)
        if weights is None:
            weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
        (y * weights).sum().backward()
        grads[style] = ([x.grad for x in inputs], model.shared_grads())
    ref_style, (ref_x, ref_p) = next(iter(grads.items()))
    for style, (gx, gp) in grads.items():
        for a, b in zip(gx, ref_x):
            _close(a, b)
        assert gp.keys() == ref_p.keys(), (style, ref_style)
        for key in gp:
            a, b = gp[key], ref_p[key]
            for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
                try:
                    _close(u, v)
                except AssertionError as e:
                    raise AssertionError(f"{family}/{style} gradient of {key} differs from {ref_style}") from e


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_make_inputs(family):
    case = corpus_model(30_000, family=family)
    assert all(torch.equal(a, b) for a, b in zip(case.make_inputs(case.sizes["batch"]), case.inputs))
    for batch in (1, 7):
        xs = case.make_inputs(batch)
        assert all(torch.equal(a, b) for a, b in zip(xs, case.make_inputs(batch)))
        with torch.no_grad():
            y = case.model(*xs)
        assert y.shape == case.output_shape(batch) and torch.isfinite(y).all()


def test_seed_determines_case_and_leaves_global_rngs_alone():
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    for seed in (3, 17):
        a, b = corpus_model(seed), corpus_model(seed)
        assert a.description == b.description
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert torch.equal(torch.random.get_rng_state(), torch_state) and random.getstate() == py_state
    assert corpus_model(3).description != corpus_model(4).description


def test_style_override_keeps_the_function():
    """``corpus_model(seed, style=s)`` gives, for every style, the same sizes (but the batch) and parameters."""
    for seed in (5, 6):
        fam, _, sizes = draw(seed)
        for style in fam.styles:
            case = corpus_model(seed, style=style)
            assert case.family == fam.name and case.style == style
            assert {k: v for k, v in case.sizes.items() if k != "batch"} == \
                   {k: v for k, v in sizes.items() if k != "batch"}
            assert case.model.shared().keys() == corpus_model(seed).model.shared().keys()


def test_sizes_cover_the_ranges():
    seen, styles, batches = set(), set(), []
    for seed in range(300):
        fam, style, s = draw(seed)
        seen.add(fam.name)
        styles.add((fam.name, style))
        batches.append(s["batch"])
        assert 1 <= s["batch"] <= MAX_BATCH
        if fam.name == "mps":
            assert 4 <= s["sites"] <= 32 and 2 <= s["bond"] <= 64
        if fam.name == "tree":
            assert 4 <= s["leaves"] <= 16 and 2 <= s["bond"] <= 64
        flops, elements, params = fam.style_cost(s, style)
        assert flops * s["batch"] <= MAX_FLOPS and elements * s["batch"] <= MAX_ELEMENTS and params <= MAX_PARAMS
    assert seen == set(FAMILIES)
    assert len(styles) >= 0.8 * sum(len(f.styles) for f in FAMILIES.values())
    assert min(batches) == 1 and max(batches) >= 256


class _Largest(TorchDispatchMode):
    """Records the largest tensor any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


@pytest.mark.parametrize("seed", range(0, 40, 2))
def test_measured_cost_within_caps(seed):
    case = corpus_model(seed)
    assert sum(p.numel() for p in case.model.parameters()) <= MAX_PARAMS
    largest, flops = _Largest(), FlopCounterMode(display=False)
    with torch.no_grad(), largest, flops:
        case.model(*case.inputs)
    assert largest.largest <= MAX_ELEMENTS, case.description
    assert flops.get_total_flops() <= MAX_FLOPS, case.description


@pytest.mark.parametrize("seed", [1, 2, 8, 11, 21])
def test_float32(seed):
    case = corpus_model(seed)
    with torch.no_grad():
        ref = case.model(*case.inputs)
        y = case.model.to(torch.float32)(*(x.float() for x in case.inputs))
    assert y.dtype == torch.float32
    _close(y.double(), ref, rtol=1e-4)
