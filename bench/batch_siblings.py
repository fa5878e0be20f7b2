"""batch_siblings on corpus models (docs/passes/batch_siblings.md): eager, tcomp, and tcomp with the pass off.

Ratios in one process: 1 thread, float32, ``torch.inference_mode()``, the three variants taking turns, the median of
9 rounds of at least 20 ms each.

    python bench/batch_siblings.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import tcomp  # noqa: E402
from tcomp.cache import machine_description  # noqa: E402
from tests.tn_corpus.families import corpus_model  # noqa: E402

CASES = [(106, "tree", "einsum"), (103, "tree", "tensordot"), (40000, "tree", "einsum"), (40000, "mera", "einsum")]


def _calls_for(fn, xs, seconds: float = 0.02) -> int:
    n = 1
    while True:
        t = time.perf_counter()
        for _ in range(n):
            fn(*xs)
        if time.perf_counter() - t > seconds:
            return n
        n *= 2


def main() -> None:
    torch.set_num_threads(1)
    print(machine_description(), "1 thread")
    for seed, family, style in CASES:
        case = corpus_model(seed, family=family, style=style)
        model = case.model.float()
        xs = tuple(x.float() for x in case.inputs)
        variants = {"eager": model, "batched": tcomp.compile(model, xs, backend="eager"),
                    "apart": tcomp.compile(model, xs, backend="eager", passes={"batch_siblings": False})}
        groups = [n for p in variants["batched"].report.passes if p.name == "batch_siblings" for n in p.notes
                  if n.startswith("batched")]
        with torch.inference_mode():
            calls = {k: _calls_for(f, xs) for k, f in variants.items()}
            times: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(9):
                for k, f in variants.items():
                    t = time.perf_counter()
                    for _ in range(calls[k]):
                        f(*xs)
                    times[k].append((time.perf_counter() - t) / calls[k])
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        print(f"{case.description}\n    eager {med['eager']:.0f} us, batched {med['batched']:.0f} us, apart "
              f"{med['apart']:.0f} us; {len(groups)} group(s) batched")


if __name__ == "__main__":
    main()
