"""Calibration data for approximate compilation, and running a program over it with one site changed.

``calibration`` (an iterable of input batches — each a tensor or a tuple of tensors) is split: the first batches
*fit* (activation statistics for the factorizations, per-option sensitivities), the last quarter (at least one
batch) is *held out* and only used to verify the end-to-end error of the final selection. The reference outputs are
the original model's, in eager mode.

:class:`ProgramRunner` runs an emitted program with ``torch.fx.Interpreter`` so that a single op can be observed
(its inputs' statistics) or replaced (its output computed by an option's own module) — the end-to-end sensitivity
of one option is the metric between the reference outputs and the outputs with that one site replaced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx

from tcomp.codegen.emit import emit
from tcomp.frontend.capture import preserved_state
from tcomp.ir import Network, Program
from tcomp.ir.sites import find_sites

from .factorize import CalibrationStats
from .measurements import Measurements
from .metrics import Metric


def _as_tuple(batch: Any) -> tuple:
    return batch if isinstance(batch, tuple) else tuple(batch) if isinstance(batch, list) else (batch,)


@dataclass
class Calibration:
    fit: list[tuple]
    held_out: list[tuple]
    reference_fit: list = field(default_factory=list)
    reference_held_out: list = field(default_factory=list)
    metric: Metric | None = None
    sensitivity_batches: int = 2    # the first fit batches: what an option's sensitivity is measured on

    def sensitivity_error(self, run: Callable) -> float:
        """The metric on the sensitivity batches (the first fit batches)."""
        return self.error(run, limit=self.sensitivity_batches)

    @property
    def statistics_batches(self) -> list[tuple]:
        """The fit batches that activation statistics are gathered from: those after the sensitivity batches when
        there are any, so that an option fitted to the statistics is judged on batches it was not fitted to. (ViT-
        tiny's classifier head sees 48 rows of 192 features in 6 batches of 8 images: an activation-aware SVD of rank
        96 fitted and judged on the same rows measured 4e-7, on the held-out images 0.11.)"""
        return self.fit[self.sensitivity_batches:] or self.fit

    @staticmethod
    def split(model: torch.nn.Module, batches: Iterable, metric: Metric) -> "Calibration":
        data = [_as_tuple(b) for b in batches]
        if len(data) < 2:
            raise ValueError("calibration needs at least 2 input batches (one or more to fit, one held out to "
                             f"verify the error); got {len(data)}")
        n_held = max(1, len(data) // 4)
        fit, held = data[:-n_held], data[-n_held:]
        with torch.no_grad(), preserved_state(model):
            ref_fit = [model(*b) for b in fit]
            ref_held = [model(*b) for b in held]
        return Calibration(fit, held, ref_fit, ref_held, metric)

    def error(self, run: Callable, held_out: bool = False, limit: int | None = None) -> float:
        """The metric, averaged over batches, of ``run(*batch)`` against the reference outputs."""
        batches = self.held_out if held_out else self.fit
        refs = self.reference_held_out if held_out else self.reference_fit
        n = len(batches) if limit is None else min(limit, len(batches))
        with torch.no_grad():
            errs = [self.metric(refs[k], run(*batches[k])) for k in range(n)]
        return sum(errs) / len(errs)


class ProgramRunner(fx.Interpreter):
    """Runs an emitted GraphModule; ``observe[node] = fn(value)`` sees a node's result, ``replace[node] =
    (fn, input_nodes)`` computes a node's result as ``fn(*inputs)`` instead."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.observe: dict[str, Callable] = {}
        self.replace: dict[str, tuple[Callable, list[str]]] = {}
        self._values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.name in self.replace:
            fn, names = self.replace[n.name]
            out = fn(*[self._values[m] for m in names])
        else:
            out = super().run_node(n)
        if n.name in self._needed:
            self._values[n.name] = out
        if n.name in self.observe:
            self.observe[n.name](out)
        return out

    @property
    def _needed(self) -> set[str]:
        return {m for _, names in self.replace.values() for m in names}

    def __call__(self, *args):
        self._values = {}
        try:
            return self.run(*args)
        finally:
            self._values = {}


def site_statistics(program: Program, cal: Calibration | None, measurements: Measurements) -> dict:
    """Input statistics (``CalibrationStats`` of the rows entering the weight) of every linear site, from the fit
    batches that sensitivities are not measured on (:attr:`Calibration.statistics_batches`; remembered across
    compilations). Empty without calibration data."""
    if cal is None:
        return {}
    return measurements.remember("site_stats", program.name, compute=lambda: _site_statistics(program, cal))


def _site_statistics(program: Program, cal: Calibration) -> dict:
    stats: dict = {}
    sites = program.sites if program.sites is not None else find_sites(program)
    gm = emit(program)
    runner = ProgramRunner(gm)
    producers = {op.out.name: op for op in program.ops}
    for name, site in sites.items():
        if site.kind != "linear":
            continue
        net = producers[name]
        assert isinstance(net, Network)
        act = net.operands[site.activation_pos]
        rows = _rows_view(net.operand_dims[site.activation_pos], site.in_indices, net.sizes)
        if rows is None:
            continue
        perm, features = rows
        stats[name] = CalibrationStats.empty(features)
        node = gm.tcomp_nodes[act.name]
        prev = runner.observe.get(node)

        def observe(t, s=stats[name], perm=perm, features=features, prev=prev):
            s.update(t.detach().permute(perm).reshape(-1, features))
            if prev is not None:
                prev(t)

        runner.observe[node] = observe
    with torch.no_grad():
        for batch in cal.statistics_batches:
            runner(*batch)
    return stats


def _rows_view(dims, in_indices: tuple[str, ...], sizes) -> tuple[list[int], int] | None:
    """The permutation that moves the activation dims holding the weight's input indices last (in order), and the
    number of input features; None when the input indices do not form whole, consecutive dims."""
    ins, rest = [], []
    for d, g in enumerate(dims):
        if g and set(g) <= set(in_indices):
            ins.append(d)
        elif set(g) & set(in_indices):
            return None
        else:
            rest.append(d)
    if tuple(i for d in ins for i in dims[d]) != tuple(in_indices):
        return None
    features = 1
    for i in in_indices:
        features *= int(sizes[i])
    return rest + ins, features
