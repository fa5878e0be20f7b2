"""select_through: integer indexing of a contraction's result becomes a contraction of indexed operands — the
stacked result is never built, forward and gradients equal eager (SiteChain is captured at aten level, so its
selections are ``aten.select``; Selector's are ``getitem``), and a result that is also read whole, has a tensor in
its epilogue, is written in place, or would be split into pieces that cost more, is left alone."""
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, ops_of, pipeline, report_of

from tcomp.ir import Network
from tcomp.passes import contraction_order, fuse_networks, select_through

PASSES = [select_through.PASS, fuse_networks.PASS, contraction_order.PASS]


class SiteChain(nn.Module):
    """torchmps-style: one einsum builds every site's matrix, then the chain reads them one site at a time."""

    def __init__(self, sites=5, chi=4, d=2):
        super().__init__()
        self.cores = nn.Parameter(torch.randn(sites, chi, d, chi) / chi ** 0.5)
        self.start = nn.Parameter(torch.randn(chi))

    def forward(self, features):  # [B, sites, d]
        mats = torch.einsum("bsd,sldr->sblr", features, self.cores)
        v = self.start.expand(features.shape[0], -1)
        for k in range(mats.shape[0]):
            v = torch.einsum("bl,blr->br", v, mats[k])
        return v


def stacked_networks(c, rank: int) -> list[Network]:
    return [op for op in ops_of(c, Network) if op.out.shape is not None and len(op.out.shape) == rank]


def test_a_site_stack_read_one_site_at_a_time_is_never_built(use_passes):
    use_passes(PASSES)
    model, x = SiteChain(), torch.randn(3, 5, 2)
    c = compiled(model, x)
    assert_forward_equal(model, c, x)
    details = report_of(c, "select_through").details
    assert details["networks"] == 1 and details["selections"] == 5 and details["removed"] >= 1
    assert not stacked_networks(c, 4)  # no [sites, B, χ, χ] tensor
    assert_gradients_equal(model, x)


def test_the_chain_is_planned_as_outer_products_and_gemms(use_passes):
    """After the push, each site's feature, core and running vector are one network; the plan multiplies the
    vector by the feature (an outer product) and then runs one GEMM with the core — no batched matrix-vector."""
    use_passes(PASSES)
    model, x = SiteChain(sites=6, chi=8), torch.randn(16, 6, 2)
    c = compiled(model, x)
    kinds = [s.kind for op in ops_of(c, Network) if op.plan is not None for s in op.plan.steps]
    assert kinds.count("gemm") == 6 and not any(s.batch for op in ops_of(c, Network) if op.plan
                                                for s in op.plan.steps if s.kind == "gemm")
    assert_forward_equal(model, c, x)


class ReadWhole(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, 5))

    def forward(self, x):  # [B, 4]
        t = torch.einsum("bi,sio->sbo", x, self.w)
        return t[0] + t[2], t.sum(0)


def test_a_result_also_read_whole_is_left_alone(use_passes):
    use_passes(PASSES)
    model, x = ReadWhole(), torch.randn(2, 4)
    c = compiled(model, x)
    assert report_of(c, "select_through").details["selections"] == 0
    assert stacked_networks(c, 3)
    assert_forward_equal(model, c, x)


class BiasedStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x):  # [B, 4] -> output features 1 and -1 of the biased product
        y = self.lin(x)
        return y[:, 1] * 2, y[:, -1]


def test_a_product_with_its_bias_in_the_epilogue_is_left_alone(use_passes):
    """The bias add is part of the Linear's epilogue (a tensor the selection would have to index too)."""
    use_passes(PASSES)
    model, x = BiasedStack(), torch.randn(3, 4)
    c = compiled(model, x)
    assert report_of(c, "select_through").details["networks"] == 0
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


class WrittenInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, 5))

    def forward(self, x):
        t = torch.einsum("bi,sio->sbo", x, self.w)
        a = t[0]
        a.mul_(2)  # writes t through the view
        return t[0, :] + t[1]


def test_nothing_is_pushed_in_a_program_that_writes_in_place(use_passes):
    use_passes(PASSES)
    model, x = WrittenInPlace(), torch.randn(2, 4)
    c = compiled(model, x)
    assert report_of(c, "select_through").details.get("networks", 0) == 0
    assert_forward_equal(model, c, x)


class InputProjection(nn.Module):
    """An RNN's input projection for every time step at once, read one step at a time by an add: splitting the
    one GEMM into a GEMM per step would not pay, and nothing merges the pieces."""

    def __init__(self, steps=8, d=16, h=32):
        super().__init__()
        self.steps = steps
        self.w_in = nn.Parameter(torch.randn(d, h) / d ** 0.5)
        self.w_h = nn.Parameter(torch.randn(h, h) / h ** 0.5)

    def forward(self, xs):  # [B, T, d]
        proj = torch.einsum("bti,ih->bth", xs, self.w_in)
        h = torch.zeros_like(proj[:, 0])
        for t in range(self.steps):
            h = torch.tanh(proj[:, t] + h @ self.w_h)
        return h


def test_a_split_that_does_not_pay_is_kept_whole(use_passes):
    use_passes(PASSES)
    model, x = InputProjection(), torch.randn(64, 8, 16)
    c = compiled(model, x)
    details = report_of(c, "select_through").details
    assert details["kept_by_cost"] == 1 and details["networks"] == 0
    assert_forward_equal(model, c, x)


class Selector(nn.Module):
    def __init__(self, eq: str, shapes, keys):
        super().__init__()
        self.eq, self.keys = eq, keys
        self.w = nn.Parameter(torch.randn(*shapes[1]))

    def forward(self, x):
        t = torch.einsum(self.eq, x, self.w)
        return tuple(t[k] for k in self.keys)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_selections_equal_eager(data):
    """Random two-operand products (a shared, summed index and free indices on both sides), read only through
    random integer keys (ints and full slices, negative positions included)."""
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=4, max_size=4))
    letters = "abcd"  # a, b: x's free indices; c: w's free index; d: summed
    x_ix, w_ix = "ad" + ("b" if sizes[1] > 1 else ""), "dc"
    out = "".join(data.draw(st.permutations([i for i in "abc" if i in x_ix + w_ix])))
    shape = {i: s for i, s in zip(letters, sizes)}
    keys = []
    for _ in range(data.draw(st.integers(1, 3))):
        depth = data.draw(st.integers(1, len(out)))
        key = []
        for i in out[:depth]:
            if data.draw(st.booleans()):
                key.append(data.draw(st.integers(-shape[i], shape[i] - 1)))
            else:
                key.append(slice(None))
        if not any(isinstance(k, int) for k in key):
            key[0] = 0
        keys.append(tuple(key) if len(key) > 1 else key[0])
    model = Selector(f"{x_ix},{w_ix}->{out}", [None, tuple(shape[i] for i in w_ix)], keys)
    x = torch.randn(*(shape[i] for i in x_ix))
    with pipeline(PASSES):
        c = compiled(model, x)
    assert_forward_equal(model, c, x)
    fixes_batch = any(isinstance(k, int) for key in keys
                      for i, k in zip(out, key if isinstance(key, tuple) else (key,)) if i == "a")
    if not fixes_batch:  # the batch index a is symbolic: a key fixing it is refused; any other is pushed unless
        details = report_of(c, "select_through").details  # the pieces together cost more than the whole
        assert details["networks"] + details["kept_by_cost"] == 1
