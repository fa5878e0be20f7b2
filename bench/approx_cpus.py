"""Approximate compilation on this CPU and on an AVX2 one (issue 19): what ``tcomp.compile(tolerance=...)`` chooses,
its held-out error and its speed against eager and torch.compile, with the CPU's own arithmetic — bf16 where its
GEMMs are fast (AVX512-BF16), int8 (``tcomp.codegen.quantized``) where that is faster than float32.

Models, built and seeded here: the issue's 64→1024→1024→10 MLP trained on scikit-learn's digits (its images
flattened; a 1400/397 split), and a 1024-wide MLP with random full-rank weights (which no low-rank factorization
approximates, so only reduced precision can pay). Calibration: training images (digits) or seeded Gaussian batches;
the held-out error is measured on other data. Each run happens twice, as two processes: on the machine as it is,
and with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (an AVX2 laptop: no AVX512, no bf16 dot products).
Times: medians in one process, eager / torch.compile / tcomp taking turns, under ``torch.inference_mode()``.

    python bench/approx_cpus.py --json bench/results/approx_cpus.json [--threads 1] [--tolerance 0.01]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import tcomp  # noqa: E402
from runs import rel_err, time_variants  # noqa: E402
from tcomp.cache import machine_description  # noqa: E402

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def digits_mlp(seed: int = 0):
    """The issue's MLP trained on the digits (8 epochs of Adam): model, calibration batches, held-out inputs."""
    from digits import digits_data

    images, labels, train, test = digits_data(seed)
    x = images.reshape(len(images), -1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(8):
        for batch in train[torch.randperm(len(train), generator=g)].split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), labels[batch]).backward()
            optimizer.step()
    accuracy = (model(x[test]).argmax(1) == labels[test]).float().mean().item()
    return model.eval(), list(x[train].split(128)), x[test], {"eager_accuracy": accuracy, "labels": labels[test]}


def random_mlp(seed: int = 0, d: int = 1024):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 16)).eval()
    return model, [torch.randn(128, d, generator=g) for _ in range(8)], torch.randn(397, d, generator=g), {}


MODELS = {"digits_mlp": digits_mlp, "random_mlp_1024": random_mlp}


def run_here(args) -> dict:
    torch.set_num_threads(args.threads)
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": machine_description(),
           "env": {k: os.environ.get(k) for k in AVX2}, "models": {}}
    for name, make in MODELS.items():
        model, calibration, held_out, extra = make()
        start = time.perf_counter()
        compiled = tcomp.compile(model, calibration[0], tolerance=args.tolerance, calibration=calibration,
                                 metric="relative_l2")
        seconds = time.perf_counter() - start
        selection = compiled._tcomp_artifacts[0].selection  # before another batch size recompiles (re-applies it)
        notes = [n for p in compiled.report.passes if p.name in ("precision", "select") for n in p.notes]
        tc = torch.compile(model)
        x = held_out[:64]
        with torch.inference_mode():
            tc(x)
            err = rel_err(compiled(held_out), model(held_out))
            times = time_variants({"eager": lambda: model(x), "torch.compile": lambda: tc(x),
                                   "tcomp": lambda: compiled(x)}, args.rounds, 0.05)
            rec = {"compile_s": seconds, "held_out_error": err, "times_s": times,
                   "eager_over_tcomp": times["eager"] / times["tcomp"],
                   "torch_compile_over_tcomp": times["torch.compile"] / times["tcomp"],
                   "chosen": {k: o.name for k, o in selection.sites.items()} if selection else {},
                   "throughout": selection.throughout.name if selection and selection.throughout else None,
                   "notes": notes}
            if "labels" in extra:
                rec["accuracy"] = (compiled(held_out).argmax(1) == extra["labels"]).float().mean().item()
                rec["eager_accuracy"] = extra["eager_accuracy"]
        out["models"][name] = rec
    return out


def line(label: str, name: str, rec: dict) -> str:
    acc = f", accuracy {rec['accuracy']:.3f} (eager {rec['eager_accuracy']:.3f})" if "accuracy" in rec else ""
    return (f"{label:>10s} {name:16s} eager/tcomp x{rec['eager_over_tcomp']:.2f}, torch.compile/tcomp "
            f"x{rec['torch_compile_over_tcomp']:.2f}, held-out error {rec['held_out_error']:.4f}{acc}; chosen "
            f"{rec['chosen'] or 'nothing'}; compile {rec['compile_s']:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.here:
        print(json.dumps(run_here(args)))
        return 0
    runs = {}
    cache = os.environ.get("TCOMP_CACHE_DIR") or tempfile.mkdtemp(prefix="tcomp-approx-cpus-")  # measured afresh
    for label, env in (("native", {}), ("avx2", AVX2)):
        command = [sys.executable, __file__, "--here", "--threads", str(args.threads), "--tolerance",
                   str(args.tolerance), "--rounds", str(args.rounds)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, **env, "TCOMP_CACHE_DIR": cache})
        if done.returncode:
            print(f"{label}: exited with {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            continue
        runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{label}: torch capability {runs[label]['cpu_capability']} on {runs[label]['machine']}")
        for name, rec in runs[label]["models"].items():
            print(line(label, name, rec))
            for note in rec["notes"]:
                print(f"{'':>12s}{note}")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", "bench/approx_cpus.py", *sys.argv[1:]]),
                                         "tolerance": args.tolerance, "threads": args.threads, "runs": runs},
                                        indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
