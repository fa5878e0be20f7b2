"""Rematerialization on the shared Checkmate / Moccasin graphs: tcomp's solver against Checkmate's MILP.

For each instance and budget (a fraction of the no-recompute peak P), runs `tcomp.remat.schedule` and the
Checkmate MILP (bench/checkmate_milp.py, SCIP) with the same time limit, re-simulates both schedules, and prints a
markdown table next to the published 16-core results (Moccasin poster, ICML 2023) and the 2-core measurements of
the published formulation (../shared/data/README.md). Results also go to bench/results/remat.json.

    python bench/remat.py                                  # everything, 600 s per solver and budget: hours
    python bench/remat.py --instances CM1,n100 --time-limit 30 --no-milp     # a quick run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import networkx as nx

from tcomp.remat.problem import Problem
from tcomp.remat import BudgetInfeasibleError, schedule, simulate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "remat-graphs"
sys.path.insert(0, str(ROOT / "bench"))
from checkmate_milp import solve_checkmate_milp  # noqa: E402  (a sibling bench script)

INSTANCES = {
    "n100": "random_layered_n100_w0.27_nlv0.75_ed0.2_scd0.14.json",
    "CM1": "fcn_8_vgg_32_416x608x3_train_nx.json",
    "CM2": "ResNet50_256_224x224x3_train_nx.json",
    "RLG2": "random_layered_n250_w0.43_nlv0.75_ed0.2_scd0.14.json",
    "RLG4": "random_layered_n1000_w0.31_nlv0.75_ed0.2_scd0.14.json",
}
PUBLISHED = {  # (Checkmate MILP, Moccasin) on 16 cores; then the published formulation measured on 2 cores
    ("RLG2", 0.9): ("0.9% / 685 s", "0.9% / 55 s", "0.90% at 264 s (first at 139 s)"),
    ("RLG2", 0.8): ("no solution", "4.9% / 640 s", "none within 300 s"),
    ("RLG4", 0.9): ("no solution", "0.7% / 3613 s", ""),
    ("RLG4", 0.8): ("no solution", "3.4% / 3612 s", ""),
    ("CM1", 0.9): ("0.0% / 6.3 s", "0.0% / 3.1 s", "0.03% (optimal)"),
    ("CM1", 0.8): ("0.1% / 5.6 s", "0.1% / 3.1 s", "0.14% (optimal)"),
    ("CM2", 0.9): ("0.1% / 434 s", "0.2% / 65 s", "0.31% at 300 s, 0.108% at 319 s (first after 120 s)"),
    ("CM2", 0.8): ("0.3% / 485 s", "0.3% / 69 s", ""),
    ("n100", 0.9): ("", "", "0.79% at 8 s (optimal)"),
}


def load_instance(name: str, data: Path) -> tuple[nx.DiGraph, list, str, str]:
    """The graph, its order and its compute / memory attribute names (see ../shared/data/README.md)."""
    d = json.loads((data / INSTANCES[name]).read_text())
    if name in ("CM1", "CM2"):
        graph = nx.node_link_graph(d, edges="links")
        return graph, sorted(graph), "cost_cpu", "cost_ram"
    graph = nx.node_link_graph(d, edges="links", source="0", target="1")
    return graph, d["graph"]["order"], "duration", "out_cost"


def run_tcomp(graph, order, budget, compute, memory, time_limit, workers) -> dict:
    try:
        result = schedule(graph, budget, order=order, compute=compute, memory=memory,
                          time_limit=time_limit, workers=workers)
    except BudgetInfeasibleError as error:
        return {"status": "infeasible" if error.proven else "no schedule", "error": str(error)}
    peak = simulate(graph, result.steps, memory=memory)
    assert peak == result.peak_memory <= budget, "tcomp returned a schedule over budget"
    return {
        "status": result.status, "found_by": result.found_by, "tdi": result.tdi, "peak": peak,
        "time_to_first": result.time_to_first, "time_to_best": result.time_to_best, "solve_time": result.solve_time,
        "recomputations": result.recomputations,
    }


def run_milp(graph, order, budget, compute, memory, time_limit) -> dict:
    result = solve_checkmate_milp(graph, order, budget, compute, memory, time_limit)
    row = {
        "status": result.status, "tdi": result.tdi, "peak": result.peak_memory,
        "time_to_first": result.time_to_first, "time_to_best": result.time_to_best,
        "build_time": result.build_time, "solve_time": result.solve_time,
        "variables": result.variables, "constraints": result.constraints,
    }
    if result.peak_memory is not None and result.peak_memory > budget:
        row["status"] = "over budget"
    return row


def seconds(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f} s" if x < 10 else f"{x:.0f} s"


def describe(row: dict | None) -> str:
    if row is None:
        return "not run"
    if row.get("tdi") is None:
        return row["status"]
    return (f"{row['tdi']:.3%} ({row['status']}); peak {row['peak'] / row['budget']:.4f}·B; "
            f"first {seconds(row['time_to_first'])}, best {seconds(row['time_to_best'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=",".join(INSTANCES), help=f"comma-separated, of {list(INSTANCES)}")
    parser.add_argument("--budgets", default="0.9,0.8", help="fractions of the no-recompute peak P")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per solver, instance and budget")
    parser.add_argument("--workers", type=int, default=None, help="CP-SAT workers (default: one per core)")
    parser.add_argument("--no-milp", action="store_true", help="skip the Checkmate MILP baseline")
    parser.add_argument("--milp-max-nodes", type=int, default=400,
                        help="skip the MILP on larger graphs (its model grows as n·|E|)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "remat.json")
    args = parser.parse_args(argv)
    names = args.instances.split(",")
    unknown = set(names) - set(INSTANCES)
    if unknown:
        parser.error(f"unknown instances {sorted(unknown)}; choose from {list(INSTANCES)}")
    fractions = [float(f) for f in args.budgets.split(",")]

    rows = []
    load_before = os.getloadavg()
    for name in names:
        graph, order, compute, memory = load_instance(name, args.data)
        peak = Problem.from_graph(graph, order, compute, memory).no_recompute_peak
        for fraction in fractions:
            budget = int(fraction * peak)
            row = {"instance": name, "nodes": graph.number_of_nodes(), "edges": graph.number_of_edges(),
                   "P": peak, "fraction": fraction, "budget": budget}
            row["tcomp"] = run_tcomp(graph, order, budget, compute, memory, args.time_limit, args.workers)
            if args.no_milp:
                row["milp"] = None
            elif graph.number_of_nodes() > args.milp_max_nodes:
                row["milp"] = {"status": f"skipped (over {args.milp_max_nodes} nodes)"}
            else:
                row["milp"] = run_milp(graph, order, budget, compute, memory, args.time_limit)
            for solver in ("tcomp", "milp"):
                if row[solver] is not None:
                    row[solver]["budget"] = budget
            rows.append(row)
            print(f"{name} {fraction}·P: tcomp {describe(row['tcomp'])} | MILP {describe(row['milp'])}", flush=True)

    print()
    print(f"Time limit {args.time_limit:g} s per solver; {os.cpu_count()} cores; "
          f"load average before/after {load_before[0]:.1f}/{os.getloadavg()[0]:.1f}")
    print()
    print("| instance, budget | tcomp, this machine | Checkmate MILP (SCIP), this machine "
          "| published Checkmate, 16 cores | published Moccasin, 16 cores | published formulation, 2 cores |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        published = PUBLISHED.get((row["instance"], row["fraction"]), ("", "", ""))
        print(f"| {row['instance']}, {row['fraction']}·P | {describe(row['tcomp'])} | {describe(row['milp'])} | "
              + " | ".join(cell or "—" for cell in published) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "time_limit": args.time_limit, "workers": args.workers, "cpu_count": os.cpu_count(),
        "machine": platform.platform(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows,
    }, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
