"""ViT-tiny and ResNet-50 (random init) compiled approximately: FLOPs, latency and error against the tolerance.

Issue 4's check at scale: the approximate pipeline (each option measured on this device, each option's
end-to-end sensitivity, the multiple-choice knapsack on CP-SAT, verification on held-out calibration batches)
runs on full-size models. The weights are random (seeded), so their spectra are flat: low-rank and structured
options are rarely worth their error, and what the selection can take is mostly reduced precision. The figures
show that compilation completes, what it chose, and that the error measured on batches it never saw stays
within the tolerance.

For each model and tolerance (relative L2 error of the output): compile time, sites changed and their options,
FLOPs before and after (the report's count at the example batch), the selection's own held-out error, the
relative L2 error on separate evaluation batches, and the median latency of a batch against eager float32
(round-robin, one process). Option measurements persist on disk (tcomp's calibration cache), so a second
tolerance compiles faster than the first.

    python bench/approx_scale.py [--models vit_tiny,resnet50] [--tolerances 0.01 0.05] [--batch 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import tcomp
from tcomp.timing import in_turns
from tcomp.zoo import get_entry

ROOT = Path(__file__).resolve().parents[1]


def relative_l2(compiled, model, batches) -> float:
    """‖y − ŷ‖ / ‖y‖ over all evaluation batches together."""
    num = den = 0.0
    with torch.no_grad():
        for x in batches:
            y, y_hat = model(x), compiled(x)
            num += (y_hat.float() - y).pow(2).sum().item()
            den += y.pow(2).sum().item()
    return (num / den) ** 0.5


def run_model(name: str, tolerances: list[float], batch: int, calibration_batches: int, rounds: int) -> list[dict]:
    entry = get_entry(name)
    torch.manual_seed(0)
    model = entry.build().eval()
    generator = torch.Generator().manual_seed(1)
    shape = (batch, *entry.example_inputs(batch=1)[0].shape[1:])

    def batches(n: int) -> list[torch.Tensor]:
        return [torch.randn(shape, generator=generator) for _ in range(n)]

    calibration, evaluation = batches(calibration_batches), batches(4)
    example = evaluation[0]
    rows = []
    for tol in tolerances:
        started = time.perf_counter()
        compiled = tcomp.compile(model, example, tolerance=tol, calibration=calibration, backend="eager")
        compile_s = time.perf_counter() - started
        select = next((p for p in compiled.report.passes if p.name == "select"), None)
        if select is None:  # the compile fell back to eager (a TcompWarning says why)
            raise SystemExit(f"tcomp fell back to eager at tolerance {tol}: {compiled.report.notes}")
        chosen = [r["chosen"] for r in select.details.get("layers", []) if r["chosen"] != "dense"]
        with torch.no_grad():
            times = in_turns({"eager": lambda: model(example), "tcomp": lambda: compiled(example)},
                             rounds=rounds, per_round=1)
        row = {"model": name, "batch": batch, "tolerance": tol, "compile_s": compile_s,
               "sites": len(select.details.get("layers", [])), "sites_changed": len(chosen),
               "choices": {c: chosen.count(c) for c in sorted(set(chosen))},
               "flops_before": compiled.report.flops_at("before"), "flops_after": compiled.report.flops_at("after"),
               "selection_held_out_error": select.details.get("held_out_error"),
               "evaluation_error": relative_l2(compiled, model, evaluation),
               "eager_ms": times["eager"] * 1e3, "tcomp_ms": times["tcomp"] * 1e3,
               "speedup": times["eager"] / times["tcomp"]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vit_tiny,resnet50")
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--calibration-batches", type=int, default=8, help="random batches (3/4 fit, 1/4 verify)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (median)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "approx_scale.json")
    a = p.parse_args(argv)
    rows = [r for name in a.models.split(",")
            for r in run_model(name, a.tolerances, a.batch, a.calibration_batches, a.rounds)]
    print("| model | tolerance | sites changed | options | GFLOPs before → after | held-out error (selection / "
          "evaluation) | eager ms | tcomp ms | speedup | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        options = ", ".join(f"{k} ×{v}" for k, v in r["choices"].items()) or "—"
        held = r["selection_held_out_error"]
        print(f"| {r['model']} (B={r['batch']}) | {r['tolerance']} | {r['sites_changed']}/{r['sites']} | {options} | "
              f"{r['flops_before'] / 1e9:.1f} → {r['flops_after'] / 1e9:.1f} | "
              f"{held if held is None else f'{held:.4f}'} / {r['evaluation_error']:.4f} | {r['eager_ms']:.0f} | "
              f"{r['tcomp_ms']:.0f} | {r['speedup']:.2f}× | {r['compile_s']:.0f} |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, indent=1))
    print(f"\nwritten to {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
