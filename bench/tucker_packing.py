"""Tucker packing (CP-SAT) vs the greedy HOSVD rank choice at equal parameter budget.

For each tensor and budget: the ranks each method picks, the truncated-HOSVD reconstruction error they give
(relative Frobenius), and the time each takes to choose (the mode singular values are computed once, outside the
timing). Floor (issue 4): the packing's error is at most greedy's on every case. Cases:

- synthetic tensors ``G ×_n (Q_n·diag(s_n))`` with a Gaussian core, random orthogonal ``Q_n`` and decaying mode
  spectra ``s_{n,i} = (1+i)^{-α_n}`` that decay at different rates per mode (so the modes compete for budget);
- the conv weights of a small CNN trained here on scikit-learn's digits (seeded), Tucker-2 on the channel modes;
- the 4-D conv weights (kernel larger than 1×1) of any state dict given with ``--weights``.

Run: ``python bench/tucker_packing.py [--weights model.pt] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from digits import train_digits_cnn
from tcomp.approx.factorize import greedy_packing, mode_singular_values, packing_cost, tucker, tucker_packing
from tcomp.approx.factorize.tucker import reconstruct

BUDGET_FRACTIONS = (0.05, 0.1, 0.25)


def synthetic_tensor(shape: tuple[int, ...], decays: tuple[float, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tensor = torch.randn(*shape, generator=g, dtype=torch.float64)
    for mode, (size, decay) in enumerate(zip(shape, decays)):
        basis, _ = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=torch.float64))
        spectrum = torch.arange(1, size + 1, dtype=torch.float64) ** -decay
        tensor = torch.tensordot(basis * spectrum, tensor, dims=([1], [mode])).movedim(0, mode)
    return tensor


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(name: str, tensor: torch.Tensor, modes: list[int], budget_fraction: float, time_limit: float,
            repeats: int) -> dict | None:
    """One case: packing vs greedy on the factored ``modes`` of ``tensor`` at a fraction of its size."""
    tensor = tensor.detach().to(torch.float64)
    singular_values = [mode_singular_values(tensor, mode) for mode in modes]
    mode_sizes = [tensor.shape[mode] for mode in modes]
    multiplier = math.prod(size for mode, size in enumerate(tensor.shape) if mode not in modes)
    budget = int(budget_fraction * tensor.numel())
    if budget < packing_cost([1] * len(modes), mode_sizes, multiplier):
        return None
    packing = tucker_packing(singular_values, mode_sizes, budget, multiplier, time_limit=time_limit)
    greedy = greedy_packing(singular_values, mode_sizes, budget, multiplier)
    packing_time = median_seconds(
        lambda: tucker_packing(singular_values, mode_sizes, budget, multiplier, time_limit=time_limit), repeats)
    greedy_time = median_seconds(lambda: greedy_packing(singular_values, mode_sizes, budget, multiplier),
                                 max(repeats, 20))

    def error(ranks):
        full_ranks: list[int | None] = [None] * tensor.dim()
        for mode, rank in zip(modes, ranks):
            full_ranks[mode] = rank
        core, factors = tucker(tensor, full_ranks)
        return float((reconstruct(core, factors) - tensor).norm() / tensor.norm())

    return {"case": name, "shape": list(tensor.shape), "budget": budget, "budget_fraction": budget_fraction,
            "packing_ranks": list(packing.ranks), "greedy_ranks": list(greedy.ranks),
            "packing_params": packing.cost, "greedy_params": greedy.cost, "optimal": packing.optimal,
            "packing_error": error(packing.ranks), "greedy_error": error(greedy.ranks),
            "packing_seconds": packing_time, "greedy_seconds": greedy_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a state dict (.pt) whose 4-D conv weights are added as cases")
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT time limit per solve (s)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cases = [
        ("synthetic 64x48x32", synthetic_tensor((64, 48, 32), (0.5, 1.0, 2.0), 0), [0, 1, 2]),
        ("synthetic 40x40x40", synthetic_tensor((40, 40, 40), (1.5, 1.0, 0.5), 1), [0, 1, 2]),
        ("synthetic 24x20x16x12", synthetic_tensor((24, 20, 16, 12), (0.3, 0.8, 1.2, 2.0), 2), [0, 1, 2, 3]),
        ("synthetic conv 128x64x3x3", synthetic_tensor((128, 64, 3, 3), (0.7, 1.4, 0.0, 0.0), 3), [0, 1]),
    ]
    cnn, _ = train_digits_cnn()
    cases += [(f"digits CNN {name}", weight, [0, 1]) for name, weight in cnn.state_dict().items()
              if weight.dim() == 4 and weight.shape[1] > 1]
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        cases += [(name, weight, [0, 1]) for name, weight in state.items()
                  if isinstance(weight, torch.Tensor) and weight.dim() == 4 and weight.shape[2:] != (1, 1)]

    rows = []
    print("| case | budget | packing ranks | greedy ranks | packing error | greedy error | packing ms | greedy ms "
          "| time ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, tensor, modes in cases:
        for fraction in BUDGET_FRACTIONS:
            row = compare(name, tensor, modes, fraction, args.time_limit, args.repeats)
            if row is None:
                continue
            rows.append(row)
            ratio = row["packing_seconds"] / row["greedy_seconds"]
            print(f"| {name} | {fraction:.0%} | {tuple(row['packing_ranks'])}{'' if row['optimal'] else ' (limit)'} "
                  f"| {tuple(row['greedy_ranks'])} | {row['packing_error']:.4f} | {row['greedy_error']:.4f} "
                  f"| {1e3 * row['packing_seconds']:.1f} | {1e3 * row['greedy_seconds']:.2f} | {ratio:.0f}x |")
    worse = [r for r in rows if r["packing_error"] > r["greedy_error"] * (1 + 1e-9)]
    better = sum(r["packing_error"] < r["greedy_error"] * (1 - 1e-9) for r in rows)
    ratios = [r["packing_seconds"] / r["greedy_seconds"] for r in rows]
    print(f"\n{len(rows)} cases: packing error lower on {better}, equal on {len(rows) - better - len(worse)}, "
          f"higher on {len(worse)}; packing takes {statistics.median(ratios):.0f}x greedy's time (median; "
          f"range {min(ratios):.0f}-{max(ratios):.0f}x)")
    print("floor (packing error <= greedy error on every case):", "met" if not worse else "MISSED")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    if worse:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
