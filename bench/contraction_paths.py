"""Contraction paths for the shared large tensor networks: tcomp.contract.pathsearch against opt_einsum's own searches.

For each instance in ../shared/data/tensor-networks, the log10 cost (tcomp.contract.pathsearch.contraction_cost: the
sum, over the pairwise contractions, of the product of the sizes of all indices involved) and the planning time of
opt_einsum's greedy, random-greedy-128 (``RandomGreedy(max_repeats=128)``), dp (``DynamicProgramming()``, in a child
process stopped after ``--dp-limit`` seconds) and ``tcomp.contract.pathsearch.search(time_budget=--budget)``. Prints a
markdown table and writes bench/results/contraction_paths.json.

    python bench/contraction_paths.py                                   # everything: about 20 minutes
    python bench/contraction_paths.py --quick --instances peps,sycamore  # no dp
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import time
from pathlib import Path

import opt_einsum

from tcomp.contract.pathsearch import contraction_cost, search

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tensor-networks"
INSTANCES = {
    "peps": "peps_cluster_r2_D10_a.json",
    "rand_50_5": "rand_50_5_a.json",
    "rtree_100": "rtree_100_a.json",
    "mps_mpo": "mps_mpo_L100_chi64_D5.json",
    "randreg_200": "randreg_200_3_a.json",
    "cubic": "cubic_6x6x10.json",
    "sycamore": "sycamore_n53_m20_s0_e0_pABCDCDAB.json",
    "qucirc": "qucirc_rrzz_n56_d13.json",
}
BASELINES = ("greedy", "random-greedy-128", "dp")


def load(path: Path) -> tuple[list[tuple], tuple, dict]:
    """An instance with its index names mapped to opt_einsum symbols (opt_einsum's searches want those)."""
    d = json.loads(path.read_text())
    symbol: dict = {}
    for term in d["inputs"]:
        for name in term:
            symbol.setdefault(name, opt_einsum.get_symbol(len(symbol)))
    inputs = [tuple(symbol[i] for i in term) for term in d["inputs"]]
    return inputs, tuple(symbol[i] for i in d["output"]), {symbol[k]: v for k, v in d["size_dict"].items()}


def timed(optimizer, inputs, output, sizes) -> tuple[list, float]:
    start = time.perf_counter()
    path = optimizer([set(t) for t in inputs], set(output), sizes)
    return path, time.perf_counter() - start


def timed_with_limit(optimizer, inputs, output, sizes, limit: float) -> tuple[list | None, float]:
    """``timed`` in a forked worker process, terminated after ``limit`` seconds (path None then)."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(timed, (optimizer, inputs, output, sizes))
        try:
            return pending.get(timeout=limit)
        except multiprocessing.TimeoutError:
            pool.terminate()
            return None, limit


def run_instance(name: str, args) -> dict:
    inputs, output, sizes = load(args.data / INSTANCES[name])
    row: dict = {"instance": name, "tensors": len(inputs), "indices": len(sizes)}

    def scored(path, seconds) -> dict:
        if path is None:
            return {"log10_cost": None, "seconds": seconds, "status": f"> {args.dp_limit:g} s"}
        return {"log10_cost": contraction_cost(inputs, output, sizes, path), "seconds": seconds}

    row["greedy"] = scored(*timed(opt_einsum.paths.greedy, inputs, output, sizes))
    row["random-greedy-128"] = scored(*timed(opt_einsum.RandomGreedy(max_repeats=128), inputs, output, sizes))
    row["dp"] = None if args.quick else scored(*timed_with_limit(opt_einsum.DynamicProgramming(), inputs, output,
                                                                 sizes, args.dp_limit))
    result = search(inputs, output, sizes, time_budget=args.budget, seed=args.seed)
    trials = [(method, None if math.isnan(cost) else cost, seconds) for method, cost, seconds in result.trials]
    row["tcomp"] = {"log10_cost": result.log10_cost, "seconds": result.seconds, "method": result.method,
                    "trials": trials}  # a dp stopped at the deadline has cost nan: null in JSON
    floor = min(row[b]["log10_cost"] for b in BASELINES if row[b] and row[b]["log10_cost"] is not None)
    row["floor"] = floor
    row["at_or_below_floor"] = result.log10_cost <= floor + 1e-9
    return row


def cell(entry: dict | None) -> str:
    if entry is None:
        return "not run"
    if entry["log10_cost"] is None:
        return entry["status"]
    return f"{entry['log10_cost']:.2f} ({entry['seconds']:.2f} s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=",".join(INSTANCES), help=f"comma-separated, of {list(INSTANCES)}")
    parser.add_argument("--budget", type=float, default=10.0, help="tcomp's planning budget per instance, s")
    parser.add_argument("--dp-limit", type=float, default=120.0, help="opt_einsum dp is stopped after this, s")
    parser.add_argument("--quick", action="store_true", help="skip opt_einsum's dp")
    parser.add_argument("--seed", type=int, default=0, help="tcomp's search seed")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "contraction_paths.json")
    args = parser.parse_args(argv)
    names = args.instances.split(",")
    unknown = set(names) - set(INSTANCES)
    if unknown:
        parser.error(f"unknown instances {sorted(unknown)}; choose from {list(INSTANCES)}")

    load_before = os.getloadavg()
    rows = []
    for name in names:
        rows.append(run_instance(name, args))
        row = rows[-1]
        print(f"{name}: " + ", ".join(f"{k} {cell(row[k])}" for k in (*BASELINES, "tcomp")), flush=True)

    print()
    print(f"log10 cost (planning time). tcomp: pathsearch.search(time_budget={args.budget:g}, seed={args.seed}); "
          f"dp stopped after {args.dp_limit:g} s. {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average before/after {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}.")
    print()
    print("| instance | tensors | greedy | random-greedy-128 | dp | tcomp | tcomp's best tree from | ≤ floor |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['instance']} | {row['tensors']} | " + " | ".join(cell(row[k]) for k in (*BASELINES, "tcomp"))
              + f" | {row['tcomp']['method']} | {'yes' if row['at_or_below_floor'] else 'NO'} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "budget": args.budget, "dp_limit": args.dp_limit, "seed": args.seed, "cpu_count": os.cpu_count(),
        "machine": platform.platform(), "opt_einsum": opt_einsum.__version__,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows,
    }, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
