"""epilogue: elementwise ops after a Network become its epilogue — activations, residual adds, scalar adds,
casts — keeping results and gradients equal and the addmm bias fusion; nothing is attached where it cannot be."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, ops_of, pipeline

from tcomp.ir import Network, Pointwise
from tcomp.passes import contraction_order, epilogue, fuse_networks

PASSES = [epilogue.PASS, fuse_networks.PASS, contraction_order.PASS]


class Block(nn.Module):
    """Linear + bias + GELU, then linear + residual add + ReLU; the residual subtracted the other way round."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.out = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        h = F.gelu(self.up(x), approximate="tanh")
        h = F.relu(self.down(h) + x)
        return x - self.out(h) + 1.0


class Cast(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4, bias=False)
        self.fc_bias = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x).double(), self.fc_bias(x).to(torch.float64)


class NotAttachable(nn.Module):
    """A network result read twice, one that is a program output, and a scalar multiply (fuse_networks' job)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        y = torch.relu(h) + torch.sigmoid(h)
        z = self.b(y)
        return z, torch.tanh(z), self.b(x) * 3.0


def _x():
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(0))


def test_activations_and_residuals_join_the_epilogue(use_passes):
    use_passes(PASSES)
    model = Block().eval()
    c = compiled(model, _x())
    epilogues = [[e.fn for e in net.epilogue] for net in ops_of(c, Network)]
    assert ["add", "gelu"] in epilogues
    assert ["add", "add", "relu"] in epilogues
    assert ["sub", "add"] in epilogues                # x - acc, then + 1.0
    assert not ops_of(c, Pointwise)
    steps = {e.fn: e for net in ops_of(c, Network) for e in net.epilogue}
    assert steps["gelu"].kwargs == {"approximate": "tanh"}
    assert steps["relu"].kwargs == {}  # F.relu's inplace=False is not carried into the epilogue
    assert c.code.count("torch.addmm") == 2           # the leading bias add is still fused into the GEMM
    assert_forward_equal(model, c, _x())
    assert_gradients_equal(model, _x())


def test_a_cast_joins_the_epilogue_unless_a_bias_add_leads_it(use_passes):
    use_passes(PASSES)
    model = Cast().eval()
    c = compiled(model, _x())
    epilogues = sorted([e.fn for e in net.epilogue] for net in ops_of(c, Network))
    assert epilogues == [["add"], ["to"]]
    out = c(_x())
    assert all(t.dtype == torch.float64 for t in out)
    assert_forward_equal(model, c, _x())


class OuterThenCast(nn.Module):
    def forward(self, x, y):
        return torch.einsum("bi,bj->bij", x, y).to(torch.bfloat16)


def test_a_cast_epilogue_leaves_the_contraction_in_its_operands_dtype(use_passes):
    """Only activations, and the epilogue casts the result to bf16: the product is computed in fp32 and then
    cast (bit-equal to eager), not computed in bf16."""
    use_passes(PASSES)
    model, x, y = OuterThenCast(), torch.randn(4, 8), torch.randn(4, 5)
    c = compiled(model, x, y)
    assert [e.fn for net in ops_of(c, Network) for e in net.epilogue] == ["to"]
    assert torch.equal(c(x, y), model(x, y))


def test_nothing_attached_where_results_are_shared(use_passes):
    use_passes(PASSES)
    model = NotAttachable().eval()
    c = compiled(model, _x())
    assert not next(r for r in c.report.passes if r.name == "epilogue").changed
    assert {op.fn for op in ops_of(c, Pointwise)} >= {"relu", "sigmoid", "tanh"}
    assert_forward_equal(model, c, _x())


_UNARY = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "exp": torch.exp, "neg": torch.neg}


class Chain(nn.Module):
    def __init__(self, steps):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.steps = steps

    def forward(self, x):
        h = self.fc(x)
        for kind, arg in self.steps:
            if kind == "unary":
                h = _UNARY[arg](h)
            elif kind == "residual":
                h = h + x if arg else x - h
            else:
                h = h + arg
        return h


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("unary"), st.sampled_from(sorted(_UNARY))),
                          st.tuples(st.just("residual"), st.booleans()),
                          st.tuples(st.just("scalar"), st.floats(-2, 2, allow_nan=False))), min_size=1, max_size=4))
def test_random_pointwise_chains_fold_into_one_network(steps):
    model = Chain(steps).eval()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(len(steps)))
    with pipeline(PASSES):
        c = compiled(model, x)
        (net,) = ops_of(c, Network)
        assert len(net.epilogue) == 1 + len(steps)
        assert not ops_of(c, Pointwise)
        assert_forward_equal(model, c, x)


@pytest.mark.parametrize("inplace", [True, False])
def test_in_place_ops_are_never_attached(inplace, use_passes):
    use_passes(PASSES)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return F.relu(self.fc(x), inplace=inplace)

    model = M().eval()
    x = torch.randn(2, 4)
    c = compiled(model, x)
    assert bool(ops_of(c, Pointwise)) == inplace
    assert_forward_equal(model, c, x)
