"""Healing: distil the factors of an approximated program against the original model, no labels needed.

The loss on each calibration batch is the relative squared error of the program's outputs against the original
model's, plus ``layer_weight`` times the same error of every replaced site's output against the exact program's
output of that site on the same inputs (the per-layer term keeps each factorization close to its layer, not only
the end result). Only the parameters introduced by the approximation (factors, their biases) are trained, with
Adam; the original model's parameters are left alone.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree
from tqdm.auto import tqdm

from .calibration import Calibration, ProgramRunner


@dataclass
class HealConfig:
    steps: int = 200
    lr: float = 1e-3
    layer_weight: float = 1.0
    progress: bool = True
    budget_factor: float = 3.0   # how much looser the selection's error budget is before healing

    def replace(self, **kw) -> "HealConfig":
        return dataclasses.replace(self, **kw)


def _rel_sq(out, ref) -> torch.Tensor:
    losses = []
    for o, r in zip(pytree.tree_leaves(out), pytree.tree_leaves(ref)):
        if isinstance(o, torch.Tensor) and o.is_floating_point():
            r = r.detach().to(o.dtype)
            losses.append((o.float() - r.float()).square().sum() / r.float().square().sum().clamp_min(1e-12))
    return torch.stack(losses).sum()


def heal(gm: torch.fx.GraphModule, params: list[torch.nn.Parameter], cal: Calibration,
         exact_gm: torch.fx.GraphModule, sites: list[str], config: HealConfig) -> list[float]:
    """Train ``params`` of ``gm``; returns the loss curve (one value per step)."""
    if not params or config.steps <= 0:
        return []
    targets: list[dict[str, torch.Tensor]] = []
    exact = ProgramRunner(exact_gm)
    nodes = [exact_gm.tcomp_nodes[s] for s in sites if s in exact_gm.tcomp_nodes]
    with torch.no_grad():
        for batch in cal.fit:
            captured: dict[str, torch.Tensor] = {}
            exact.observe = {n: (lambda t, n=n: captured.__setitem__(n, t.detach())) for n in nodes}
            exact(*batch)
            targets.append(captured)
    runner = ProgramRunner(gm)
    approx_nodes = {gm.tcomp_nodes[s]: exact_gm.tcomp_nodes[s] for s in sites
                    if s in gm.tcomp_nodes and s in exact_gm.tcomp_nodes}
    opt = torch.optim.Adam(params, lr=config.lr)
    curve = []
    order = itertools.cycle(range(len(cal.fit)))
    bar = tqdm(range(config.steps), desc="tcomp heal", disable=not config.progress, leave=False)
    with torch.enable_grad():
        for _ in bar:
            k = next(order)
            seen: dict[str, torch.Tensor] = {}
            runner.observe = {n: (lambda t, n=n: seen.__setitem__(n, t)) for n in approx_nodes}
            out = runner(*cal.fit[k])
            loss = _rel_sq(out, cal.reference_fit[k])
            if config.layer_weight and seen:
                layer = sum(_rel_sq(seen[n], targets[k][approx_nodes[n]]) for n in seen if approx_nodes[n] in
                            targets[k])
                loss = loss + config.layer_weight * layer / max(1, len(seen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(loss.item())
            bar.set_postfix(loss=f"{curve[-1]:.3g}")
    return curve
