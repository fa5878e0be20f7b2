"""What the corpus benchmarks share (bench/tn_corpus.py, bench/real_models.py, bench/fuzz.py): a case's stages run
with their exceptions and warnings recorded, relative errors, the compile report as a dict, forward times taken in
turns, summary statistics and the repository's state."""
from __future__ import annotations

import math
import statistics
import subprocess
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.utils._pytree as pytree

ROOT = Path(__file__).resolve().parents[1]


def error_text(e: BaseException) -> str:
    """The exception's type, first line and where it was raised."""
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" (at {Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}{where}"


def _warnings(caught) -> list[str]:
    """The warnings, each once, without the deprecation notices of torch's own internals."""
    seen = {f"{w.category.__name__}: {str(w.message).splitlines()[0][:300]}": None for w in caught
            if not issubclass(w.category, DeprecationWarning)}
    return list(seen)


def stage(rec: dict, name: str, fn: Callable):
    """``fn()``, its exception recorded under ``rec["errors"][name]`` (then None: a case never aborts the run) and
    its warnings under ``rec["warnings"][name]``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a case never aborts the run
            rec["errors"][name] = error_text(e)
            return None
        finally:
            if _warnings(caught):
                rec["warnings"][name] = _warnings(caught)


def rel_err(y, ref) -> float:
    """The largest over the output's tensors of max |y - ref| / max |ref| (inf for another structure or shape, NaN
    or inf)."""
    ys = [t for t in pytree.tree_leaves(y) if isinstance(t, torch.Tensor)]
    refs = [t for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
    if len(ys) != len(refs) or not refs:
        return math.inf
    worst = 0.0
    for a, b in zip(ys, refs):
        if a.shape != b.shape:
            return math.inf
        a, b = a.detach().double(), b.detach().double()
        if not torch.isfinite(a).all():
            return math.inf
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if b.numel() else 0.0)
    return worst


def report(compiled) -> dict:
    """The compile report's status, backend, capture, FLOPs at the example and compile time."""
    try:
        r = compiled.report
        return {"status": r.status, "fallback_reason": r.fallback_reason, "backend": r.backend,
                "capture": r.capture, "flops_before": r.flops_at("before"), "flops_after": r.flops_at("after"),
                "compile_time_s": round(r.compile_time_s, 3)}
    except Exception as e:  # noqa: BLE001 - a report we cannot read is itself worth recording
        return {"error": error_text(e)}


def time_variants(fns: dict[str, Callable[[], object]], rounds: int, round_s: float) -> dict[str, float]:
    """Median seconds per call of each function: warm-up, then ``rounds`` rounds in which the functions take turns,
    each timed over enough calls to last ``round_s``."""
    calls = {}
    with torch.inference_mode():
        for name, f in fns.items():
            for _ in range(3):
                f()
            n, start = 0, time.perf_counter()
            while True:
                f()
                n += 1
                spent = time.perf_counter() - start
                if spent >= round_s / 4 or n >= 10_000:
                    break
            calls[name] = max(1, math.ceil(round_s * n / max(spent, 1e-9)))
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, f in fns.items():
                start = time.perf_counter()
                for _ in range(calls[name]):
                    f()
                times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "worst": min(values), "best": max(values)}


def git_state() -> str:
    """The commit, and whether the working tree differs from it (others may be editing tcomp meanwhile)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain") else "")
