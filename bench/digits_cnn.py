"""Convolution compression on a CNN really trained on scikit-learn's digits (trained here, seeded; no fine-tuning).

Part 1 — the curve: the 32→64 3×3 convolution replaced by its Tucker-2 (HOSVD + one HOOI sweep, core shape by
Tucker packing at a parameter budget) or CP (ALS with the norm bound) approximation, at several budgets: the
layer's MAC reduction, test accuracy, and agreement with the original model (relative logit error, KL divergence
of the predicted distributions, prediction agreement).

Part 2 — tcomp.compile(tolerance=...) on the whole model with the training images as calibration: what the
selection chose, FLOPs before/after, test accuracy, held-out error.

    python bench/digits_cnn.py [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

import tcomp
from digits import accuracy, train_digits_cnn
from tcomp.approx.factorize import cp, mode_singular_values, tucker2, tucker_packing


class FactoredConv(torch.nn.Module):
    """A conv run as its factors: Tucker-2 (1×1, k×k core, 1×1) or CP (1×1, depthwise k×1, 1×k, 1×1)."""

    def __init__(self, conv: torch.nn.Conv2d, fn):
        super().__init__()
        self.fn, self.conv = fn, conv

    def forward(self, x):
        c = self.conv
        if self.fn.method == "tucker2":
            p, core, q = self.fn.factors  # P[c,r], core[r,s,h,w], Q[s,o]
            y = F.conv2d(x, p.t()[:, :, None, None])
            y = F.conv2d(y, core.permute(1, 0, 2, 3), padding=c.padding, stride=c.stride)
            return F.conv2d(y, q.t()[:, :, None, None], c.bias)
        a, b, h, w = self.fn.factors  # A[o,r], B[c,r], H[h,r], W[w,r]
        r = a.shape[1]
        y = F.conv2d(x, b.t()[:, :, None, None])
        y = F.conv2d(y, h.t().reshape(r, 1, -1, 1), padding=(c.padding[0], 0), groups=r)
        y = F.conv2d(y, w.t().reshape(r, 1, 1, -1), padding=(0, c.padding[1]), groups=r)
        return F.conv2d(y, a[:, :, None, None], c.bias)


def macs_per_pixel(conv: torch.nn.Conv2d, fn=None) -> int:
    o, c, kh, kw = conv.weight.shape
    if fn is None:
        return o * c * kh * kw
    if fn.method == "tucker2":
        r, s = fn.sizes["r"], fn.sizes["s"]
        return c * r + r * s * kh * kw + s * o
    r = fn.sizes["r"]
    return c * r + r * kh + r * kw + r * o


def agreement(model, original, data) -> dict:
    images, labels, _, test = data
    with torch.no_grad():
        ref, out = original(images[test]), model(images[test])
    kl = F.kl_div(out.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean").item()
    return {"accuracy": accuracy(model, data), "relative_logit_error": ((out - ref).norm() / ref.norm()).item(),
            "kl": kl, "prediction_agreement": (out.argmax(1) == ref.argmax(1)).float().mean().item()}


def curve(model, data) -> list[dict]:
    conv = model[2]
    w = conv.weight.detach()
    o, c, kh, kw = w.shape
    rows = []
    sv = [mode_singular_values(w, 0).tolist(), mode_singular_values(w, 1).tolist()]
    for frac in (0.5, 0.35, 0.25, 0.18, 0.12, 0.08):
        packing = tucker_packing(sv, [o, c], int(w.numel() * frac), core_multiplier=kh * kw)
        fn = tucker2(w, *packing.ranks, hooi_iters=1)
        rows.append(("tucker2", f"ranks {packing.ranks}", fn))
    for rank in (64, 48, 32, 24, 16):
        rows.append(("cp", f"rank {rank}", cp(w, rank, iters=100, generator=torch.Generator().manual_seed(0))))
    out = []
    for method, params, fn in rows:
        variant = torch.nn.Sequential(*[FactoredConv(conv, fn) if k == 2 else m for k, m in enumerate(model)])
        row = {"method": method, "params": params, "conv_mac_reduction": macs_per_pixel(conv) / macs_per_pixel(conv, fn)}
        row.update(agreement(variant, model, data))
        out.append(row)
    return out


def compiled_sweep(model, data, tolerances) -> list[dict]:
    images, labels, train, test = data
    calibration = [images[b] for b in train.split(200)]
    rows = []
    for tol in tolerances:
        compiled = tcomp.compile(model, calibration[0], tolerance=tol, calibration=calibration, backend="eager")
        select = next(p for p in compiled.report.passes if p.name == "select")
        row = {"tolerance": tol, "chosen": [r["chosen"] for r in select.details.get("layers", [])
                                             if r["chosen"] != "dense"],
               "held_out_error": select.details.get("held_out_error"),
               "flops_before": compiled.report.flops_at("before"), "flops_after": compiled.report.flops_at("after")}
        row.update(agreement(compiled, model, data))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2])
    p.add_argument("--json")
    a = p.parse_args(argv)
    model, data = train_digits_cnn()
    base = accuracy(model, data)
    print(f"digits CNN: test accuracy {base:.4f} on {len(data[3])} held-out images")
    rows = curve(model, data)
    print("\n| conv2 | parameters | MAC reduction | accuracy | Δ points | rel. logit err | KL | agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['params']} | {r['conv_mac_reduction']:.1f}× | {r['accuracy']:.4f} | "
              f"{(r['accuracy'] - base) * 100:+.2f} | {r['relative_logit_error']:.3f} | {r['kl']:.4f} | "
              f"{r['prediction_agreement']:.3f} |")
    sweep = compiled_sweep(model, data, a.tolerances)
    print("\n| tcomp tolerance | chosen | held-out err | FLOPs before → after | accuracy | rel. logit err |")
    print("|---|---|---|---|---|---|")
    for r in sweep:
        print(f"| {r['tolerance']} | {', '.join(r['chosen']) or 'dense'} | {r['held_out_error']:.4f} | "
              f"{r['flops_before']:,} → {r['flops_after']:,} | {r['accuracy']:.4f} | {r['relative_logit_error']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"base_accuracy": base, "curve": rows, "compiled": sweep}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
