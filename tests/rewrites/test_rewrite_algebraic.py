"""algebraic: relabel round trips and neutral scalar ops disappear, weight-only elementwise ops are cached, scalar
factors next to a Network are folded into its weight — results and gradients equal eager, parameters followed."""
import copy

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, ops_of, pipeline, report_of

from tcomp.ir import Call, Network, Pointwise
from tcomp.passes import algebraic, contraction_order, fuse_networks
from tcomp.codegen.folded import CachedFunction

PASSES = [algebraic.PASS, fuse_networks.PASS, contraction_order.PASS]


def _cached_calls(c) -> list[Call]:
    return [op for op in ops_of(c, Call) if op.kind == "module" and isinstance(op.module, CachedFunction)]


class RoundTrips(nn.Module):
    def forward(self, x):
        a = x.transpose(1, 2).transpose(1, 2)
        b = x.reshape(x.shape[0], -1).reshape(x.shape)
        c = x.permute(2, 0, 1).permute(1, 2, 0).contiguous()
        return torch.tanh(a) + torch.sigmoid(b) + torch.cos(c)


def test_relabel_round_trips_are_removed(use_passes):
    use_passes([algebraic.PASS])
    model = RoundTrips()
    x = torch.randn(2, 3, 4)
    c = compiled(model, x)
    assert report_of(c, "algebraic").details["relabel round trip(s)"] == 4  # the last: contiguous() of x
    assert not ops_of(c, Network)
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


class Neutral(nn.Module):
    def forward(self, x, n):
        y = (x * 1) + 0
        y = (1 * y - 0) / 1
        return torch.relu(y ** 1), n / 1  # an integer tensor divided by 1 is a float tensor: kept


def test_neutral_scalar_ops_are_removed_when_they_keep_shape_and_dtype(use_passes):
    use_passes([algebraic.PASS])
    model = Neutral()
    x, n = torch.randn(3, 4), torch.arange(6).reshape(2, 3)
    c = compiled(model, x, n)
    assert report_of(c, "algebraic").details["scalar identit(ies)"] == 6
    assert [op.fn for op in ops_of(c, Pointwise)] == ["relu", "div"]
    out, ref = c(x, n), model(x, n)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1]) and out[1].dtype == ref[1].dtype


def test_an_output_never_becomes_an_alias(use_passes):
    use_passes([algebraic.PASS])

    class M(nn.Module):
        def forward(self, x):
            return x * 1, x.t().t()

    x = torch.randn(3, 3)
    out = compiled(M(), x)(x)
    assert all(o is not x and torch.equal(o, x) for o in out)


class ScaledLinear(nn.Module):
    """Attention-style scalings: an output scaled, an input divided, and a weight-only expression."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8, bias=False)
        self.log_scale = nn.Parameter(torch.randn(8, 8) * 0.1)
        self.proj = nn.Parameter(torch.randn(8, 8) * 0.3)

    def forward(self, x):
        q = self.q(x) * 0.125
        k = self.k(x / 4.0)
        w = torch.exp(self.log_scale) * self.proj * 2.0
        return q + k @ w


def test_scalar_factors_fold_into_cached_weights(use_passes):
    use_passes(PASSES)
    model = ScaledLinear().eval()
    x = torch.randn(5, 8)
    c = compiled(model, x)
    details = report_of(c, "algebraic").details
    # q's output scale into q.weight and q.bias, k's input divisor into k.weight, the 2.0 into exp(log_scale)
    assert details["constant factor(s) folded into weights"] == 3
    assert details["weight-only op(s) cached"] == 1
    assert not [op for op in ops_of(c, Pointwise) if op.fn in ("mul", "div")]
    assert {v.name for op in _cached_calls(c) for v in op.inputs()} >= {"q.weight", "q.bias", "k.weight",
                                                                        "log_scale"}
    assert set(c.state_dict()) == set(model.state_dict())
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


def test_folded_weights_follow_the_parameters(use_passes):
    use_passes(PASSES)
    model = ScaledLinear().eval()
    reference = copy.deepcopy(model)
    x = torch.randn(5, 8)
    c = compiled(model, x)
    opt, opt_ref = torch.optim.Adam(model.parameters(), 0.05), torch.optim.Adam(reference.parameters(), 0.05)
    for _ in range(2):
        for m, o in ((c, opt), (reference, opt_ref)):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
    assert_forward_equal(reference, c, x)
    state = {k: torch.randn_like(v) for k, v in reference.state_dict().items()}
    c.load_state_dict(state)
    reference.load_state_dict(state)
    assert_forward_equal(reference, c, x)


class InPlace(nn.Module):
    def forward(self, x):
        y = x * 1
        y.add_(1)
        return x, y


def test_a_program_that_writes_in_place_is_left_alone(use_passes):
    use_passes([algebraic.PASS])
    x = torch.randn(3)
    c = compiled(InPlace(), x)
    out = c(x.clone())
    assert "in place" in report_of(c, "algebraic").notes[0]
    assert torch.equal(out[1], x + 1) and torch.equal(out[0], x)


class Permutes(nn.Module):
    def __init__(self, perms):
        super().__init__()
        self.perms = perms

    def forward(self, x):
        y = x
        for p in self.perms:
            y = y.permute(*p)
        return torch.tanh(y)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.permutations(range(4)), min_size=1, max_size=4), st.booleans())
def test_random_permutation_chains(perms, close_the_loop):
    """No relabel is left exactly when the composed permutation is the identity."""
    if close_the_loop:
        total = list(range(4))
        for p in perms:
            total = [total[i] for i in p]
        perms = perms + [[total.index(i) for i in range(4)]]
    model = Permutes([tuple(p) for p in perms])
    x = torch.randn(2, 3, 4, 5)
    composed = x
    for p in perms:
        composed = composed.permute(*p)
    with pipeline([algebraic.PASS]):
        c = compiled(model, x)
        identity = composed.shape == x.shape and torch.equal(composed, x)
        assert (not ops_of(c, Network)) == identity
        assert_forward_equal(model, c, x)
