"""The long fuzzing run (issue 18, item 6): random einsum networks and random small models against eager in float64.

Network ``k`` and model ``k`` are drawn from seed ``--seed + k`` by the generators of tests/fuzz (the CI subset,
tests/fuzz/test_fuzz.py, is seeds 0-59 and 0-29); each is compiled with ``tcomp.compile(backend="eager")`` and its
outputs and gradients, at the example batch and at another one, are compared with eager (tests/fuzz/check.py).
Prints progress and a summary (counts, the fallback reasons with a case of each, the first failures) and writes
the counts as JSON. ``--minutes`` stops starting new cases after that long and reports what ran.

    python bench/fuzz.py --networks 10000 --models 1000 --seed 0 --json bench/results/fuzz.json
    nice -n 10 python bench/fuzz.py --networks 500 --models 100 --workers 2 --minutes 40
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import tcomp  # noqa: E402
from tcomp.cache import machine_description  # noqa: E402
from runs import git_state  # noqa: E402
from tests.fuzz.check import Tally, run_trial  # noqa: E402
from tests.fuzz.models import model_trial  # noqa: E402
from tests.fuzz.networks import network_trial  # noqa: E402

TRIALS = {"networks": network_trial, "models": model_trial}


def _worker_init() -> None:
    torch.set_num_threads(1)  # the cases are tiny: one thread per worker process


def _run(job: tuple[str, int]):
    kind, seed = job
    return kind, seed, *run_trial(TRIALS[kind], seed)


def _jobs(counts: dict[str, int], seed: int) -> list[tuple[str, int]]:
    """Every case as (kind, seed), the kinds interleaved in proportion so that a run cut short has run each kind's
    share."""
    keyed = [((k + 0.5) / n, kind, seed + k) for kind, n in counts.items() for k in range(n)]
    return [(kind, s) for _, kind, s in sorted(keyed)]


def _results(jobs: list, workers: int):
    """The outcomes of ``jobs`` in order, from ``workers`` processes (one: this process)."""
    if workers <= 1:
        yield from map(_run, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, _worker_init)
    finished = False
    try:
        yield from pool.imap(_run, jobs, chunksize=4)
        finished = True
    finally:
        pool.close() if finished else pool.terminate()  # cut short (--minutes): the queued cases are dropped
        pool.join()


def run(counts: dict[str, int], args, deadline: float) -> tuple[dict[str, Tally], float]:
    """Run the cases (until ``deadline``), printing progress and each failure; the tallies and the seconds taken."""
    tallies = {kind: Tally(keep=args.keep) for kind in counts}
    jobs = _jobs(counts, args.seed)
    start = last_print = time.perf_counter()
    with contextlib.closing(_results(jobs, args.workers)) as results:
        for done, (kind, seed, description, outcome) in enumerate(results, 1):
            tallies[kind].add(description, outcome)
            if outcome.status != "ok":
                print(f"  {outcome.status.upper()} {kind} seed {seed}: {outcome.detail.strip()}", flush=True)
            now = time.perf_counter()
            if now - last_print > args.print_every or done == len(jobs):
                rate = done / (now - start)
                print(f"[{now - start:6.0f} s] {done}/{len(jobs)} ({rate:.2f}/s, eta "
                      f"{(len(jobs) - done) / rate / 60:.1f} min)  "
                      + "; ".join(f"{kind}: {t.summary()}" for kind, t in tallies.items()), flush=True)
                last_print = now
            if now > deadline:
                print(f"--minutes reached after {done} of {len(jobs)} cases", flush=True)
                break
    return tallies, time.perf_counter() - start




def report(kind: str, tally: Tally) -> str:
    lines = [f"{kind}: {tally.summary()}"]
    for reason, n in tally.reasons.most_common():
        lines.append(f"  fallback x{n}: {reason}\n      e.g. {tally.reason_examples[reason].splitlines()[0]}")
    for f in tally.failures:
        lines.append(f"  {f['status']}: {f['case']}\n      {f['detail'].strip()}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=10000)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="case k of each kind is drawn from seed + k")
    ap.add_argument("--workers", type=int, default=1, help="processes (one torch thread each)")
    ap.add_argument("--minutes", type=float, default=None, help="stop starting new cases after this long")
    ap.add_argument("--keep", type=int, default=10, help="failures kept per kind in the summary and JSON")
    ap.add_argument("--print-every", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("TCOMP_DEFAULT_BACKEND", "eager")
    deadline = time.perf_counter() + 60 * args.minutes if args.minutes else float("inf")
    _worker_init()
    counts = {kind: n for kind, n in (("networks", args.networks), ("models", args.models)) if n > 0}
    git = git_state()
    print(f"{counts} from seed {args.seed}, {args.workers} worker(s), tcomp at {git}\non {machine_description()}",
          flush=True)
    tallies, seconds = run(counts, args, deadline)
    cases = sum(t.cases for t in tallies.values())
    print(f"\nsummary: {cases} cases in {seconds:.0f} s ({cases / seconds:.2f}/s)")
    for kind, tally in tallies.items():
        print(report(kind, tally))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join(["python", "bench/fuzz.py", *sys.argv[1:]]), "seed": args.seed,
            "requested": counts, "workers": args.workers, "seconds": round(seconds, 1),
            "cases_per_s": round(cases / seconds, 3),
            "tcomp": tcomp.__version__, "git": git, "torch": torch.__version__,
            "machine": machine_description(),
            **{kind: tally.to_dict() for kind, tally in tallies.items()},
        }, indent=1) + "\n")
        print(f"wrote {args.json}")
    return int(any(tally.failed for tally in tallies.values()))


if __name__ == "__main__":
    sys.exit(main())
