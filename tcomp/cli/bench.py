"""``tcomp bench``: eager vs torch.compile vs tcomp, in one process.

Latency is the median of repeated calls after warm-up, measured round-robin (the variants take turns, a few calls
each, so that machine noise hits all of them alike); ratios are to eager in the same process. Errors are the
maximum absolute error and the maximum error relative to the output's largest magnitude, against eager.
Inference runs under ``torch.no_grad()``; compile time is the wall time of compiling plus the first call.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

import tcomp
from tcomp.numerics import compare
from tcomp.timing import in_turns, sync_for

from .targets import Target


@dataclass
class VariantResult:
    name: str
    median_ms: float | None = None
    ratio: float | None = None              # eager time / this time (higher is faster)
    compile_s: float | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    error: str | None = None


@dataclass
class BenchResult:
    model: str
    input_shapes: list
    variants: list[VariantResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def bench_target(target: Target, *, torch_compile: bool = True, inductor: bool = True,
                 tcomp_options: dict | None = None, rounds: int = 7, progress: bool = True) -> BenchResult:
    model, inputs = target.model, target.inputs
    res = BenchResult(target.name, [list(t.shape) if isinstance(t, torch.Tensor) else repr(t) for t in inputs])
    with torch.no_grad():
        ref = model(*inputs)
        runners: dict[str, Callable] = {"eager": lambda: model(*inputs)}
        compiled: dict[str, VariantResult] = {"eager": VariantResult("eager", compile_s=0.0, max_abs_err=0.0,
                                                                      max_rel_err=0.0)}
        if torch_compile:
            _progress(f"  {target.name}: torch.compile (cold compile)...", progress)
            compiled["torch.compile"] = _compile_variant("torch.compile", lambda: torch.compile(model), inputs, ref,
                                                         runners)
        opts = dict(tcomp_options or {})
        backends = ("eager", "inductor") if inductor else ("eager",)
        for backend in backends:
            name = f"tcomp ({backend})"
            _progress(f"  {target.name}: tcomp.compile, {backend} backend...", progress)
            compiled[name] = _compile_variant(
                name, lambda: tcomp.compile(model, inputs, backend=backend, **opts), inputs, ref, runners)
        _progress(f"  {target.name}: timing {', '.join(runners)}...", progress)
        times = in_turns(runners, rounds=rounds, per_round=3, sync=sync_for(inputs))
    eager_t = times["eager"]
    for name, v in compiled.items():
        if name in times:
            v.median_ms = times[name] * 1e3
            v.ratio = eager_t / times[name]
        res.variants.append(v)
    if torch_compile or inductor:
        torch._dynamo.reset()
    return res


def _compile_variant(name: str, make: Callable, inputs: tuple, ref, runners: dict) -> VariantResult:
    v = VariantResult(name)
    t0 = time.perf_counter()
    try:
        fn = make()
        out = fn(*inputs)
    except Exception as err:  # noqa: BLE001 - a failing variant is reported, the others still run
        v.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
        return v
    v.compile_s = time.perf_counter() - t0
    c = compare(ref, out)
    v.max_abs_err, v.max_rel_err = c.max_abs, c.max_rel
    runners[name] = lambda: fn(*inputs)
    return v


def format_table(results: list[BenchResult]) -> str:
    names = []
    for r in results:
        for v in r.variants:
            if v.name not in names:
                names.append(v.name)
    tcomp_names = [n for n in names if n.startswith("tcomp")]
    versus = "torch.compile" in names and bool(tcomp_names)
    header = ["model"] + [f"{n} ms (×eager)" for n in names] + (["best tcomp ×torch.compile"] if versus else []) + \
        ["tcomp max abs / rel err"] + [f"compile s ({', '.join(n for n in names if n != 'eager')})"]
    rows = [header]
    for r in results:
        by = {v.name: v for v in r.variants}
        row = [r.model]
        for n in names:
            v = by.get(n)
            if v is None:
                row.append("-")
            elif v.error:
                row.append("failed")
            else:
                row.append(f"{v.median_ms:.2f} ({v.ratio:.2f}×)")
        if versus:
            row.append(_versus_torch_compile(by, tcomp_names))
        errs = [by[n] for n in tcomp_names if by.get(n) and by[n].max_abs_err is not None]
        row.append(f"{max(v.max_abs_err for v in errs):.1e} / {max(v.max_rel_err for v in errs):.1e}" if errs
                   else "-")
        row.append(" / ".join(f"{by[n].compile_s:.1f}" if by.get(n) and by[n].compile_s is not None else "-"
                              for n in names if n != "eager"))
        rows.append(row)
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(header))]
    lines = ["| " + " | ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    errors = [f"{r.model} / {v.name}: {v.error}" for r in results for v in r.variants if v.error]
    if errors:
        lines.append("")
        lines += [f"failed: {e}" for e in errors]
    return "\n".join(lines)


def _versus_torch_compile(by: dict[str, VariantResult], tcomp_names: list[str]) -> str:
    """The fastest tcomp variant's speed relative to torch.compile (above 1: tcomp is faster); variants whose
    output differs from eager's by more than 1e-3 relative are not candidates."""
    reference = by.get("torch.compile")
    timed = [by[n] for n in tcomp_names if by.get(n) and by[n].median_ms and (by[n].max_rel_err or 0) <= 1e-3]
    if reference is None or not reference.median_ms or not timed:
        return "-"
    best = min(timed, key=lambda v: v.median_ms)
    return f"{reference.median_ms / best.median_ms:.2f}× ({best.name.removeprefix('tcomp ').strip('()')})"
