"""Comparing results: tolerances that fit the dtype, applied to whole output pytrees.

Exact passes only reassociate floating-point sums, so their error is a few units of the dtype's precision
relative to the output's scale. The comparison is therefore relative to the largest magnitude of each reference
tensor: ``max|out - ref| <= rtol(dtype) * max|ref|`` — robust to outputs with entries near zero. An infinity or a
NaN where the reference has the same is equal (eager overflowed too); one anywhere else is a mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

RTOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@dataclass
class Comparison:
    max_abs: float
    max_rel: float        # max |out - ref| / max(1e-12, max |ref|), per tensor, maximised
    ok: bool
    detail: str = ""


def compare(ref, out, rtol: float | None = None, values: bool = True) -> Comparison:
    """Compare two output pytrees leaf by leaf: structure, then each tensor's shape and dtype, then (with
    ``values``) tensors numerically and anything else by equality."""
    ref_leaves, ref_spec = pytree.tree_flatten(ref)
    out_leaves, out_spec = pytree.tree_flatten(out)
    if ref_spec != out_spec:
        return Comparison(float("inf"), float("inf"), False, f"output structure differs: {out_spec} vs {ref_spec}")
    max_abs = max_rel = 0.0
    ok = True
    detail = ""
    for k, (r, o) in enumerate(zip(ref_leaves, out_leaves)):
        if isinstance(r, torch.Tensor):
            if not isinstance(o, torch.Tensor) or r.shape != o.shape:
                return Comparison(float("inf"), float("inf"), False,
                                  f"output {k}: shape {getattr(o, 'shape', type(o))} vs {tuple(r.shape)}")
            if r.dtype != o.dtype:
                return Comparison(float("inf"), float("inf"), False, f"output {k}: dtype {o.dtype} vs {r.dtype}")
            if not values:
                continue
            if not r.is_floating_point() and not r.is_complex():
                if not torch.equal(r, o):
                    return Comparison(float("inf"), float("inf"), False, f"output {k}: integer values differ")
                continue
            rd, od = r.detach().double(), o.detach().double()
            same = (rd == od) | (rd.isnan() & od.isnan())  # the same infinity, or NaN where eager has NaN
            diff = torch.where(same, 0.0, (od - rd).abs())
            finite = rd[rd.isfinite()]
            scale = finite.abs().max().item() if finite.numel() else 0.0
            a = diff.max().item() if diff.numel() else 0.0
            if a != a:  # NaN
                return Comparison(float("nan"), float("nan"), False, f"output {k}: NaN")
            rel = a / max(scale, 1e-12)
            max_abs, max_rel = max(max_abs, a), max(max_rel, rel)
            tol = rtol if rtol is not None else RTOL.get(r.dtype, 1e-4)
            if a > tol * max(scale, 1e-6):
                ok = False
                detail = f"output {k}: max abs error {a:.3g} (scale {scale:.3g}, tolerance {tol:g})"
        elif values and r != o:
            return Comparison(float("inf"), float("inf"), False, f"output {k}: {o!r} != {r!r}")
    return Comparison(max_abs, max_rel, ok, detail)
