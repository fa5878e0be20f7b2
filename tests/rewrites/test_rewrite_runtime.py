"""tcomp.codegen.folded.CachedFunction: computed once, recomputed when an input changes, differentiated exactly, never
aliasing an input; Compose builds one cache of the original parameters for two rewrites of a weight."""
import functools

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.codegen.folded import CachedFunction, Compose, FoldedConstant, describe


def _counting(fn):
    calls = []

    def wrapped(*xs):
        calls.append(1)
        return fn(*xs)

    return wrapped, calls


def test_cached_until_an_input_changes_in_place():
    w = nn.Parameter(torch.randn(3, 4))
    s = torch.rand(3) + 0.5
    fn, calls = _counting(lambda w, s: w * s[:, None])
    cached = CachedFunction(fn)
    with torch.no_grad():
        first = cached(w, s)
        assert cached(w, s) is first and len(calls) == 1
        w.add_(1.0)                      # an optimizer step / load_state_dict: the version counter moves
        second = cached(w, s)
        assert len(calls) == 2 and torch.equal(second, w * s[:, None])
        s.mul_(2.0)                      # a buffer updated in place
        assert torch.equal(cached(w, s), w * s[:, None]) and len(calls) == 3


def test_a_new_tensor_or_dtype_recomputes():
    fn, calls = _counting(lambda w: w * 2)
    cached = CachedFunction(fn)
    w = torch.randn(4)
    cached(w)
    assert torch.equal(cached(w.double()), w.double() * 2) and len(calls) == 2
    other = torch.randn(4)
    assert torch.equal(cached(other), other * 2) and len(calls) == 3


def test_result_never_aliases_an_input():
    w = torch.randn(2, 3)
    out = CachedFunction(lambda t: t.reshape(3, 2))(w)
    w.add_(1.0)
    assert not torch.equal(out.reshape(2, 3), w)  # a view would have changed with w


@settings(max_examples=30)
@given(rows=st.integers(1, 5), cols=st.integers(1, 5), seed=st.integers(0, 10_000), calls=st.integers(1, 3))
def test_gradients_equal_the_uncached_function(rows, cols, seed, calls):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.randn(rows, dtype=torch.float64, generator=g, requires_grad=True)

    def fn(w, s):
        return torch.tanh(w) * s[:, None]

    cached = CachedFunction(fn)
    for _ in range(calls):  # the cache is hit on later calls; the backward must not depend on it
        loss = (cached(w, s) ** 2).sum()
    expected = torch.autograd.grad((fn(w, s) ** 2).sum(), (w, s))
    got = torch.autograd.grad(loss, (w, s))
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_compose_applies_the_outer_function_to_the_inner_result_with_extra_inputs():
    inner = functools.partial(torch.mul, other=3.0)
    composed = Compose(lambda t, b: t + b, inner, 1)
    x, b = torch.randn(4), torch.randn(4)
    assert torch.equal(composed(x, b), x * 3.0 + b)
    assert describe(composed).endswith("mul(other=3.0)")


def test_folded_constant_is_a_cached_contraction():
    a = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(4, 5))
    fold = FoldedConstant("ij,jk->ik", [(3, 4), (4, 5)])
    with torch.no_grad():
        first = fold(a, b)
        assert fold(a, b) is first and first.is_contiguous()
    assert isinstance(fold, CachedFunction)
    (grad_a,) = torch.autograd.grad(fold(a, b).sum(), (a,))
    assert torch.allclose(grad_a, b.detach().sum(1).expand(3, 4))


def test_a_call_on_fake_tensors_or_under_a_fake_mode_is_not_cached():
    """dtype propagation runs the emitted program under a FakeTensorMode with the real parameters: that call must
    not leave a FakeTensor in the cache for the next real call."""
    from torch._subclasses.fake_tensor import FakeTensorMode, is_fake

    f = CachedFunction(lambda w: w * 2)
    w = torch.randn(3)
    with FakeTensorMode(allow_non_fake_inputs=True):
        assert is_fake(f(w))
    out = f(w)
    assert not is_fake(out) and torch.equal(out, w * 2)
