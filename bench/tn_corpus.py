"""tcomp on a seeded corpus of unseen tensor-network models (issue 17, item 4): speed against eager and torch.compile.

Case ``k`` is ``corpus_model(--seed + k)`` from tests/tn_corpus/families.py (MPS, tree, PEPS, MERA, TT/Tucker/CP
layers, bilinear/trilinear couplings, equivariant tensor products, einsum attention, each in several code styles),
built in float32. For each case: ``tcomp.compile(model, inputs)`` (tcomp's defaults) against eager (max relative
error), the same in float64, the compile time of tcomp and of ``torch.compile`` (default Inductor; its first call),
and the median forward time of eager, ``torch.compile`` and tcomp, taking turns in one process after warm-up, under
``torch.inference_mode()`` (``--rounds`` rounds, each of enough calls to last ``--round-ms``). An exception is
recorded with its case and never stops the run. Prints a line per case and a summary (per family: median and worst
speedup of tcomp over eager and over torch.compile; compile times; failures) and writes it all as JSON with the
machine's description.

    python bench/tn_corpus.py --models 200 --seed 0 --json bench/results/tn_corpus.json
    python bench/tn_corpus.py --models 50 --threads 2 --families mps,tree,peps --limit-seconds 1800
    TCOMP_DEFAULT_BACKEND=eager nice -n 10 python bench/tn_corpus.py --models 3 --json /tmp/tn_corpus.json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import tcomp  # noqa: E402
from tcomp.cache import machine_description  # noqa: E402
from runs import error_text, git_state, rel_err, report, stage, stats, time_variants  # noqa: E402
from tests.tn_corpus.families import FAMILIES, corpus_model, draw  # noqa: E402

VARIANTS = ("eager", "torch.compile", "tcomp")
MISMATCH32, MISMATCH64 = 1e-3, 1e-8     # relative errors past which a result is counted wrong












def run_case(seed: int, args) -> dict:
    """Everything measured on case ``seed``; a stage that raises is recorded under ``errors`` and the rest goes on."""
    rec: dict = {"seed": seed, "errors": {}, "warnings": {}}
    case = corpus_model(seed)
    rec.update(family=case.family, style=case.style, description=case.description, batch=case.sizes["batch"],
               sizes={k: v for k, v in case.sizes.items()}, params=sum(p.numel() for p in case.model.parameters()),
               estimated_flops=case.cost["flops"])
    torch._dynamo.reset()   # the corpus models share forward code: keep each case clear of the recompile limit

    # float64: tcomp against eager
    m64, x64 = case.model.eval(), case.inputs
    with torch.inference_mode():
        ref64 = m64(*x64)

    def float64():
        compiled = tcomp.compile(copy.deepcopy(m64), x64)
        rec["tcomp64_report"] = report(compiled)
        with torch.inference_mode():
            rec["err64"] = rel_err(compiled(*x64), ref64)
    stage(rec, "tcomp_float64", float64)

    # float32
    m32 = copy.deepcopy(m64).float().eval()
    x32 = tuple(x.float() for x in x64)
    with torch.inference_mode():
        ref32 = m32(*x32)
    rec["eager32_vs_eager64"] = rel_err(ref32, ref64)
    fns = {"eager": m32}

    def tcomp32():
        start = time.perf_counter()
        compiled = tcomp.compile(m32, x32)
        rec["tcomp_compile_s"] = time.perf_counter() - start
        rec["tcomp_report"] = report(compiled)
        with torch.inference_mode():
            start = time.perf_counter()
            y = compiled(*x32)
            rec["tcomp_first_call_s"] = time.perf_counter() - start
        rec["err32"] = rel_err(y, ref32)
        return compiled
    compiled = stage(rec, "tcomp_float32", tcomp32)

    def inductor():
        tc = torch.compile(m32)
        with torch.inference_mode():
            start = time.perf_counter()
            y = tc(*x32)
            rec["torch_compile_s"] = time.perf_counter() - start
        rec["torch_compile_err32"] = rel_err(y, ref32)
        return tc
    tc = stage(rec, "torch_compile", inductor)
    if tc is not None:
        fns["torch.compile"] = tc
    if compiled is not None:
        fns["tcomp"] = compiled
    calls = {name: (lambda f=f: f(*x32)) for name, f in fns.items()}
    times = stage(rec, "timing", lambda: time_variants(calls, args.rounds, args.round_ms / 1e3))
    if times:
        rec["time_s"] = times
        if "tcomp" in times:
            rec["speedup_vs_eager"] = times["eager"] / times["tcomp"]
            if "torch.compile" in times:
                rec["speedup_vs_torch_compile"] = times["torch.compile"] / times["tcomp"]
    rec["failed"], rec["fallback"] = failure(rec), fallback(rec)
    return rec


def failure(rec: dict) -> str | None:
    """Why the case failed (an exception anywhere, or tcomp's result differing from eager's), or None."""
    if rec["errors"]:
        return "error: " + "; ".join(f"{k}: {v}" for k, v in rec["errors"].items())
    if rec.get("err32", 0) > MISMATCH32 or rec.get("err64", 0) > MISMATCH64:
        return f"wrong result: err32 {rec.get('err32', 0):.2e}, err64 {rec.get('err64', 0):.2e}"
    return None


def fallback(rec: dict) -> str | None:
    """Why tcomp ran the model eagerly (its report's status and reason), or None."""
    for key in ("tcomp_report", "tcomp64_report"):
        status = rec.get(key, {}).get("status")
        if status not in (None, "compiled"):
            return f"{'float32' if key == 'tcomp_report' else 'float64'} {status}: {rec[key].get('fallback_reason')}"
    return None


def case_line(i: int, n: int, rec: dict) -> str:
    t = rec.get("time_s", {})
    ms = ", ".join(f"{k} {1e3 * t[k]:.3g} ms" for k in VARIANTS if k in t)

    def x(key):
        return f"x{rec[key]:.2f}" if key in rec else "-"

    def s(key):
        return f"{rec[key]:.1f}s" if key in rec else "-"
    line = (f"[{i}/{n}] seed {rec['seed']} {rec['family']}/{rec['style']} b={rec['batch']}: {ms or 'no timings'}; "
            f"tcomp/eager {x('speedup_vs_eager')}, tcomp/torch.compile {x('speedup_vs_torch_compile')}; compile "
            f"tcomp {s('tcomp_compile_s')} torch.compile {s('torch_compile_s')}; err32 {rec.get('err32', math.nan):.1e}"
            f" err64 {rec.get('err64', math.nan):.1e}")
    if rec.get("failed"):
        line += f"\n    FAILED {rec['failed']}"
    if rec.get("fallback"):
        line += f"\n    FALLBACK {rec['fallback']}"
    return line




def summarize(records: list[dict]) -> dict:
    out = {"families": {}}
    for fam in sorted({r["family"] for r in records}):
        rs = [r for r in records if r["family"] == fam]
        out["families"][fam] = {
            "cases": len(rs), "failures": sum(bool(r.get("failed")) for r in rs),
            "fallbacks": sum(bool(r.get("fallback")) for r in rs),
            "vs_eager": stats([r["speedup_vs_eager"] for r in rs if "speedup_vs_eager" in r]),
            "vs_torch_compile": stats([r["speedup_vs_torch_compile"] for r in rs if "speedup_vs_torch_compile" in r])}
    out["overall"] = {
        "cases": len(records), "failures": sum(bool(r.get("failed")) for r in records),
        "fallbacks": sum(bool(r.get("fallback")) for r in records),
        "vs_eager": stats([r["speedup_vs_eager"] for r in records if "speedup_vs_eager" in r]),
        "vs_torch_compile": stats([r["speedup_vs_torch_compile"] for r in records
                                    if "speedup_vs_torch_compile" in r])}
    for key in ("tcomp_compile_s", "torch_compile_s"):
        v = [r[key] for r in records if key in r]
        out[key] = {"n": len(v), "median": statistics.median(v), "max": max(v)} if v else {"n": 0}
    out["failed_cases"] = [{"seed": r["seed"], "case": r["description"], "why": r["failed"]}
                           for r in records if r.get("failed")]
    out["fallback_cases"] = [{"seed": r["seed"], "case": r["description"], "why": r["fallback"]}
                             for r in records if r.get("fallback")]
    return out


def summary_text(summary: dict) -> str:
    def fmt(st):
        return f"median x{st['median']:.2f} worst x{st['worst']:.2f}" if st["n"] else "-"
    lines = [f"{'family':16s} {'cases':>5s} {'fail':>4s} {'eager':>5s}  {'tcomp/eager':32s} tcomp/torch.compile"]
    for fam, f in [*summary["families"].items(), ("overall", summary["overall"])]:
        lines.append(f"{fam:16s} {f['cases']:5d} {f['failures']:4d} {f['fallbacks']:5d}  {fmt(f['vs_eager']):32s} "
                     f"{fmt(f['vs_torch_compile'])}")
    lines.append("(fail: an exception or a result differing from eager's; eager: tcomp fell back to eager)")
    for key, name in (("tcomp_compile_s", "tcomp"), ("torch_compile_s", "torch.compile")):
        c = summary[key]
        if c["n"]:
            lines.append(f"compile time {name}: median {c['median']:.2f} s, max {c['max']:.2f} s")
    for f in summary["failed_cases"]:
        lines.append(f"  failed seed {f['seed']}: {f['case']}\n      {f['why']}")
    for f in summary["fallback_cases"]:
        lines.append(f"  eager fallback seed {f['seed']}: {f['case']}\n      {f['why']}")
    return "\n".join(lines)


def select_seeds(start: int, count: int, families: set[str] | None) -> list[int]:
    """The first ``count`` seeds from ``start`` whose case is of one of ``families`` (a seed is the same case with
    or without the filter)."""
    seeds, seed = [], start
    while len(seeds) < count:
        if families is None or draw(seed)[0].name in families:
            seeds.append(seed)
        seed += 1
    return seeds




def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="case k is corpus seed --seed + k (skipping other families)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--families", default=None, help=f"comma-separated, of: {','.join(sorted(FAMILIES))}")
    ap.add_argument("--limit-seconds", type=float, default=None, help="start no new case after this long")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-ms", type=float, default=20.0, help="each timed round lasts at least this long")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    families = set(args.families.split(",")) if args.families else None
    if families and families - set(FAMILIES):
        ap.error(f"unknown families {sorted(families - set(FAMILIES))}; known: {sorted(FAMILIES)}")
    seeds = select_seeds(args.seed, args.models, families)
    git, machine = git_state(), machine_description()
    backend = os.environ.get("TCOMP_DEFAULT_BACKEND")
    print(f"{len(seeds)} corpus cases from seed {args.seed}, tcomp {tcomp.__version__} at {git}, torch "
          f"{torch.__version__}{f', TCOMP_DEFAULT_BACKEND={backend}' if backend else ''}\non {machine}", flush=True)
    records, start = [], time.perf_counter()
    for i, seed in enumerate(seeds, 1):
        if args.limit_seconds is not None and time.perf_counter() - start > args.limit_seconds:
            print(f"--limit-seconds reached after {i - 1} of {len(seeds)} cases", flush=True)
            break
        try:
            rec = run_case(seed, args)
        except Exception as e:  # noqa: BLE001 - building the case itself failed: record it and go on
            rec = {"seed": seed, "family": "?", "style": "?", "description": f"seed {seed}", "batch": "?",
                   "errors": {"case": error_text(e)}}
            rec["failed"], rec["fallback"] = failure(rec), None
        records.append(rec)
        print(case_line(i, len(seeds), rec), flush=True)
    seconds = time.perf_counter() - start
    summary = summarize(records)
    print(f"\nsummary: {len(records)} cases in {seconds:.0f} s (speedup = time of the other / time of tcomp)")
    print(summary_text(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join(["python", "bench/tn_corpus.py", *sys.argv[1:]]), "seed": args.seed,
            "models": args.models, "families": sorted(families) if families else None, "threads": args.threads,
            "rounds": args.rounds, "round_ms": args.round_ms, "seconds": round(seconds, 1),
            "tcomp": tcomp.__version__, "git": git, "torch": torch.__version__, "machine": machine,
            "TCOMP_DEFAULT_BACKEND": backend, "summary": summary, "cases": records,
        }, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return int(bool(summary["overall"]["failures"]))


if __name__ == "__main__":
    sys.exit(main())
