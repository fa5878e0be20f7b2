"""Where tcomp's cost model is right and where it is wrong: for every Network of the chosen zoo models with more
than one candidate contraction tree, each candidate's plan is timed alone (its ops emitted as a small program, the
fastest of repeated runs) and compared with the model's predicted time. Reports, per network, the predicted best
and the measured best plan, and the cases where they disagree by more than the noise margin.

    python bench/cost_model_check.py [models ...] [--batch N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys

import tcomp
from tcomp.codegen.emit import emit
from tcomp.codegen.runnable import random_inputs
from tcomp.contract.plan import plan_network
from tcomp.contract.search import best_plan, candidate_trees
from tcomp.cost import machine_model
from tcomp.ir import Network, subprogram
from tcomp.timing import fastest_time
from tcomp.zoo import get_entry

MODELS = ("tt_net", "mps_classifier", "peps", "equivariant_tp", "monarch_mlp", "vit_tiny")


def time_plan(net: Network, plan, at: dict, repeats: int = 7) -> float:
    prog = subprogram([net.replace(plan=plan)], at)
    return fastest_time(emit(prog), random_inputs(prog, at), repeats)


def check(name: str, batch: int | None) -> list[dict]:
    entry = get_entry(name)
    model = entry.build()
    x = entry.example_inputs(batch=batch)
    compiled = tcomp.compile(model, x, backend="eager", passes=["select_through", "fuse_networks"])
    program = compiled.program
    at = program.example
    rows = []
    for op in program.ops:
        if not isinstance(op, Network) or len(op.operands) < 3:
            continue
        cands = candidate_trees(op, at)
        if len(cands) < 2:
            continue
        results = []
        for method, pairs in cands:
            plan = plan_network(op, pairs, at=at, fold_constants=True, method=method)
            results.append({"method": method, "predicted_ms": plan.cost.time_at(at, machine_model()) * 1e3,
                            "measured_ms": time_plan(op, plan, at) * 1e3})
        chosen = best_plan(op, at).method  # ties broken as tcomp does
        pred = next(r for r in results if r["method"] == chosen)
        meas = min(results, key=lambda r: r["measured_ms"])
        rows.append({"model": name, "network": op.out.name, "equation": op.grouped_equation()[:80],
                     "candidates": results, "predicted_best": pred["method"], "measured_best": meas["method"],
                     "loss_if_predicted": pred["measured_ms"] / meas["measured_ms"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=list(MODELS))
    p.add_argument("--batch", type=int)
    p.add_argument("--json")
    a = p.parse_args(argv)
    rows = [r for m in a.models for r in check(m, a.batch)]
    print("| model | network | candidates | predicted best | measured best | predicted plan's time / best |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['network']} | {len(r['candidates'])} | {r['predicted_best']} | "
              f"{r['measured_best']} | {r['loss_if_predicted']:.2f}× |")
    wrong = [r for r in rows if r["loss_if_predicted"] > 1.15]
    print(f"\n{len(rows)} networks with several candidate trees; the predicted plan is >15% slower than the "
          f"measured best on {len(wrong)}:")
    for r in wrong:
        print(f"  {r['model']}/{r['network']} {r['equation']}: " + ", ".join(
            f"{c['method']} predicted {c['predicted_ms']:.3f} ms measured {c['measured_ms']:.3f} ms"
            for c in r["candidates"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
