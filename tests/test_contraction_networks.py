"""Random einsum networks through the whole compiler (issue 3): equal to torch.einsum, and the planned cost
never above opt_einsum's 'auto' path under tcomp's own cost model."""
import string

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tcomp
from tcomp.ir import Network
from tcomp.plan import default_pairs, plan_network


@st.composite
def einsum_networks(draw):
    n_ops = draw(st.integers(2, 8))
    n_idx = draw(st.integers(1, 10))
    letters = string.ascii_lowercase[:n_idx]
    sizes = {}
    budget = 2 ** 16  # the product of all index sizes bounds every intermediate tensor
    for c in letters:
        sizes[c] = draw(st.integers(1, max(1, min(16, budget))))
        budget //= sizes[c]
    terms = []
    for _ in range(n_ops):
        k = draw(st.integers(1, min(4, n_idx)))
        terms.append("".join(draw(st.permutations(letters))[:k]))
    repeat = draw(st.booleans()) and n_ops >= 3  # reuse the first operand as the last one
    if repeat:
        terms[-1] = terms[0]
    used = sorted(set("".join(terms)))
    out = "".join(c for c in draw(st.permutations(used)) if draw(st.booleans()))
    broadcast = draw(st.booleans())
    shapes = []
    for t in terms:
        shapes.append(tuple(1 if broadcast and draw(st.integers(0, 5)) == 0 else sizes[c] for c in t))
    if repeat:
        shapes[-1] = shapes[0]
    return f"{','.join(terms)}->{out}", shapes, repeat


class Einsum(torch.nn.Module):
    def __init__(self, eq):
        super().__init__()
        self.eq = eq

    def forward(self, *ops):
        return torch.einsum(self.eq, *ops)


@settings(max_examples=300)
@given(einsum_networks(), st.integers(0, 2 ** 16))
def test_random_networks_match_einsum(net, seed):
    eq, shapes, repeat = net
    g = torch.Generator().manual_seed(seed)
    ops = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    if repeat:
        ops[-1] = ops[0]
    ref = torch.einsum(eq, *ops)
    model = Einsum(eq)
    compiled = tcomp.compile(model, tuple(ops), strict=True)
    out = compiled(*ops)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for op in compiled.program.ops:
        if isinstance(op, Network) and op.plan is not None:
            auto = plan_network(op, default_pairs(op, "auto"), batch=compiled.program.example_batch,
                                fold_constants=True)
            b = max(compiled.program.example_batch or 2, 2)
            assert op.plan.cost.time_at(b) <= auto.cost.time_at(b) * (1 + 1e-9)
