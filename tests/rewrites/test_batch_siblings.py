"""batch_siblings (issue 17, horizontal batching): independent isomorphic Networks run as one batched Network —
equal to eager forward and backward, and only where independence allows it."""
import torch
import torch.nn as nn

import tcomp
from tcomp.ir import Network


def _batched(compiled):
    return [op for op in compiled.program.ops if isinstance(op, Network) and "siblings batched" in op.origin]


class Siblings(nn.Module):
    """``k`` pairs of features contracted with weights of their own (a tree network's lowest level), then mixed;
    ``shared`` makes every pair read the same left input; ``chain`` feeds each result into the next pair."""

    def __init__(self, k=6, d=3, bond=4, shared=False, chain=False):
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.randn(d, d, bond, dtype=torch.float64) / d) for _ in range(k))
        self.shared, self.chain = shared, chain
        self.head = nn.Parameter(torch.randn(k * bond, 2, dtype=torch.float64))

    def forward(self, x):  # x: [B, 2k, d]
        outs, carry = [], None
        for i, w in enumerate(self.w):
            left = x[:, 0] if self.shared else x[:, 2 * i]
            if self.chain and carry is not None:
                left = carry[:, : left.shape[1]]
            carry = torch.einsum("bi,bj,ijk->bk", left, x[:, 2 * i + 1], w)
            outs.append(carry)
        return torch.cat(outs, -1) @ self.head


def _check(model, x, x2):
    compiled = tcomp.compile(model, x, strict=True, backend="eager")
    for inputs in (x, x2):
        torch.testing.assert_close(compiled(inputs), model(inputs), rtol=1e-10, atol=1e-12)
    params = list(model.parameters())
    g_ref = torch.autograd.grad(model(x).square().sum(), params)
    g_out = torch.autograd.grad(compiled(x).square().sum(), params)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    return compiled


def test_siblings_run_as_one_batched_network_with_eagers_results_and_gradients():
    torch.manual_seed(0)
    x, x2 = torch.randn(5, 12, 3, dtype=torch.float64), torch.randn(9, 12, 3, dtype=torch.float64)
    compiled = _check(Siblings(), x, x2)
    batched = _batched(compiled)
    assert len(batched) == 1 and batched[0].out.shape[0] == 6
    assert "batched 6 siblings" in compiled.explain()


def test_a_shared_operand_is_read_once_not_stacked():
    torch.manual_seed(0)
    compiled = _check(Siblings(shared=True), torch.randn(5, 12, 3, dtype=torch.float64),
                      torch.randn(2, 12, 3, dtype=torch.float64))
    (batched,) = _batched(compiled)
    n = batched.out_dims[0]
    assert sum(n not in dims for dims in batched.operand_dims) == 1  # x[:, 0], broadcast over the siblings


def test_a_chain_is_not_batched():
    """Each step reads the one before: no two of them can run together."""
    torch.manual_seed(0)
    compiled = _check(Siblings(chain=True, d=4), torch.randn(5, 12, 4, dtype=torch.float64),
                      torch.randn(3, 12, 4, dtype=torch.float64))
    assert not _batched(compiled)


def test_a_program_that_writes_in_place_is_left_alone():
    """An operand written in place between two siblings: the batched Network would read the new value for both."""

    class WritesBetween(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.ParameterList(nn.Parameter(torch.randn(3, 3, 4, dtype=torch.float64)) for _ in range(2))

        def forward(self, x):
            a, b = x[:, 0].clone(), x[:, 1].clone()
            first = torch.einsum("bi,bj,ijk->bk", a, b, self.w[0])
            a.mul_(2.0)
            second = torch.einsum("bi,bj,ijk->bk", b, a, self.w[1])
            return first + second

    torch.manual_seed(0)
    x, x2 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)
    compiled = _check(WritesBetween(), x, x2)
    assert not _batched(compiled)
