"""The Monarch layer benchmark (issue 3): a 4096×4096 Linear replaced by its Monarch network (64 blocks), batch
256, executed through tcomp's lowering, against the dense layer, a naive ``torch.einsum`` of the same network,
and a hand-written layout (Dao et al.'s two ``bmm`` with transposes).

    python bench/monarch_layer.py [--width 4096] [--blocks 64] [--batch 256] [--rounds 15] [--json PATH]

Times are medians of round-robin calls in one process (torch.no_grad, fp32); ratios are to the dense layer.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

import tcomp
from tcomp.ir import Network
from tcomp.approx.factorize import monarch
from tcomp.timing import in_turns
from tcomp.ir.symbolic import evaluate


class MonarchEinsum(torch.nn.Module):
    """``y = x Wᵀ`` with W = Monarch(L, R), written as one einsum over the factor network (the naive form)."""

    def __init__(self, left: torch.Tensor, right: torch.Tensor, blocks: int):
        super().__init__()
        self.left = torch.nn.Parameter(left)     # L[j, o, i]
        self.right = torch.nn.Parameter(right)   # R[i, j, k]
        self.blocks = blocks

    def forward(self, x):
        xb = x.reshape(x.shape[0], self.blocks, -1)                       # x[b, i, k]
        y = torch.einsum("bik,ijk,joi->boj", xb, self.right, self.left)   # y[b, o, j]
        return y.reshape(x.shape[0], -1)


def hand_written(x, left, right):
    """Dao et al.'s blockdiag_butterfly_multiply layout: bmm, transpose, bmm."""
    b = x.shape[0]
    nb = right.shape[0]
    xb = x.reshape(b, nb, -1).transpose(0, 1)                  # [i, b, k]
    t = torch.bmm(xb, right.transpose(1, 2))                   # [i, b, j]
    t = t.transpose(0, 2).contiguous()                         # [j, b, i]  (the one permutation copy)
    y = torch.bmm(t, left.transpose(1, 2))                     # [j, b, o]
    return y.permute(1, 2, 0).reshape(b, -1)                   # [b, (o j)]


def run(width: int, blocks: int, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    dense_w = torch.randn(width, width) / width ** 0.5
    fn = monarch(dense_w, blocks=blocks)
    left, right = fn.factors                                   # "joi", "ijk"
    w_monarch = fn.dense()
    x = torch.randn(batch, width)
    model = MonarchEinsum(left.clone(), right.clone(), blocks).eval()
    compiled = tcomp.compile(model, x, strict=True)
    with torch.no_grad():
        ref = x @ w_monarch.t()
        for name, out in (("einsum", model(x)), ("tcomp", compiled(x)), ("hand", hand_written(x, left, right))):
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            assert err < 1e-4, f"{name}: relative error {err}"
        times = in_turns({
            "dense": lambda: F.linear(x, dense_w),
            "einsum": lambda: model(x),
            "tcomp": lambda: compiled(x),
            "hand-written": lambda: hand_written(x, left, right),
        }, rounds=rounds, per_round=3)
    net = next(op for op in compiled.program.ops if isinstance(op, Network))
    dense_flops = 2 * batch * width * width
    return {"width": width, "blocks": blocks, "batch": batch, "times_ms": {k: v * 1e3 for k, v in times.items()},
            "speedup_vs_dense": {k: times["dense"] / v for k, v in times.items()},
            "flop_reduction": dense_flops / evaluate(net.plan.cost.flops, batch),
            "plan": net.plan.format(net), "code": compiled.code, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--blocks", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json")
    a = p.parse_args(argv)
    r = run(a.width, a.blocks, a.batch, a.rounds)
    print(f"Monarch {a.width}x{a.width}, {a.blocks} blocks, batch {a.batch}, {r['threads']} threads "
          f"(FLOP reduction {r['flop_reduction']:.1f}x)")
    print("| variant | median ms | × dense |\n|---|---|---|")
    for k, t in r["times_ms"].items():
        print(f"| {k} | {t:.3f} | {r['speedup_vs_dense'][k]:.2f}× |")
    print("\ntcomp's plan:\n" + r["plan"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
