"""Random small models (chains of contractions, reshapes, transposes, scalings, pointwise ops and residual adds)
compiled with all exact passes: equal to eager at the example batch and at another batch size, and gradients
equal in float64."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tcomp

OPS = ("linear", "linear_nobias", "transpose", "split", "merge", "relu", "scale", "einsum_w", "residual", "sum_keep",
       "matmul_self", "gelu")


class RandomModel(nn.Module):
    """Applies a list of ops to x of shape [B, d1, d2]; every op keeps a 3-D shape [B, p, q]."""

    def __init__(self, ops, d1, d2, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ops = ops
        self.params = nn.ParameterList()
        self.plan = []
        p, q = d1, d2
        for op in ops:
            if op in ("linear", "linear_nobias"):
                out = 2 + (len(self.params) * 7 + q) % 9
                self.params.append(nn.Parameter(torch.randn(out, q, generator=g, dtype=torch.float64) / q ** 0.5))
                bias = None
                if op == "linear":
                    self.params.append(nn.Parameter(torch.randn(out, generator=g, dtype=torch.float64)))
                    bias = len(self.params) - 1
                self.plan.append((op, len(self.params) - 1 - (bias is not None), bias))
                q = out
            elif op == "einsum_w":
                out = 3
                self.params.append(nn.Parameter(torch.randn(p, q, out, generator=g, dtype=torch.float64) / q))
                self.plan.append((op, len(self.params) - 1, None))
                q = out
            elif op == "transpose":
                self.plan.append((op, None, None))
                p, q = q, p
            elif op == "split" and q % 2 == 0:
                self.plan.append((op, None, None))  # [B,p,q] -> [B,p*2,q/2]
                p, q = p * 2, q // 2
            elif op == "merge" and p % 2 == 0:
                self.plan.append((op, None, None))  # [B,p,q] -> [B,p/2,2q]
                p, q = p // 2, q * 2
            elif op == "matmul_self":
                self.plan.append((op, None, None))  # x @ x^T: [B,p,p]
                q = p
            elif op in ("relu", "scale", "residual", "sum_keep", "gelu"):
                self.plan.append((op, None, None))

    def forward(self, x):
        for op, w, b in self.plan:
            if op in ("linear", "linear_nobias"):
                x = F.linear(x, self.params[w], self.params[b] if b is not None else None)
            elif op == "einsum_w":
                x = torch.einsum("bpq,pqr->bpr", x, self.params[w])
            elif op == "transpose":
                x = x.transpose(1, 2)
            elif op == "split":
                x = x.reshape(x.shape[0], x.shape[1] * 2, x.shape[2] // 2)
            elif op == "merge":
                x = x.reshape(x.shape[0], x.shape[1] // 2, -1)
            elif op == "matmul_self":
                x = x @ x.transpose(-1, -2) / x.shape[-1]
            elif op == "relu":
                x = torch.relu(x)
            elif op == "gelu":
                x = F.gelu(x)
            elif op == "scale":
                x = x * 0.5
            elif op == "residual":
                x = x + x.flip(1)
            elif op == "sum_keep":
                x = x.sum(2, keepdim=True) * x
        return x


@settings(max_examples=150)
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=7), st.integers(1, 5), st.integers(2, 6),
       st.integers(2, 6), st.integers(0, 1000))
def test_random_models_match_eager(ops, batch, d1, d2, seed):
    model = RandomModel(ops, d1, d2, seed).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d1, d2, generator=g, dtype=torch.float64)
    compiled = tcomp.compile(model, x, strict=True)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-10, atol=1e-10)
    x2 = torch.randn(batch + 3, d1, d2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(compiled(x2), model(x2), rtol=1e-10, atol=1e-10)
    params = list(model.parameters())
    if params:
        ref = torch.autograd.grad(model(x).square().sum(), params)
        out = torch.autograd.grad(compiled(x).square().sum(), params)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
