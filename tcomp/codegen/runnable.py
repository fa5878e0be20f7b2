"""A Program run as tcomp would run it, for whatever measures one: planned (:func:`tcomp.contract.plan_program`),
emitted (:func:`tcomp.codegen.emit.emit`) and timed in turns (:mod:`tcomp.timing`).

Every measurement of a program, or of a piece of one, goes through here: an option against its dense layer
(:mod:`tcomp.approx.option_time`), the selection's bases and outcomes (:mod:`tcomp.approx.selection`), a program in
two layouts (:mod:`tcomp.passes.layout`). So what is measured is what would run, and emit only ever prints a plan that
planning chose.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

from tcomp.contract.search import plan_program
from tcomp.cost.model import MachineModel
from tcomp.ir import Program
from tcomp.ir.symbolic import Point, evaluate
from tcomp.timing import in_turns, sync_for

from .emit import emit


def runnable(program: Program, *, training: bool = False, machine: MachineModel | None = None) -> fx.GraphModule:
    """``program`` with every Network planned, emitted."""
    planned, _ = plan_program(program, training=training, machine=machine)
    return emit(planned)


def time_in_turns(runs: dict[str, tuple[Callable, tuple | list]], **kw) -> dict[str, float]:
    """Seconds per call of each ``name: (fn, args)`` without gradients, the calls taking turns (the median unless
    ``statistic=``; the rest of ``kw`` as :func:`tcomp.timing.in_turns` takes it)."""
    tensors = [a for _, args in runs.values() for a in args]
    with torch.no_grad():
        return in_turns({k: (lambda fn=fn, args=args: fn(*args)) for k, (fn, args) in runs.items()},
                        sync=sync_for(tensors), **kw)


def random_inputs(program: Program, at: Point | int) -> list[torch.Tensor]:
    """Inputs of ``program``'s shapes at ``at`` (a batch size, or a value per symbol): seeded normal floats, zero
    integers (valid indices)."""
    g = torch.Generator().manual_seed(0)
    args = []
    for v in program.inputs:
        shape = [evaluate(s, at) for s in v.shape]
        if v.dtype.is_floating_point:
            args.append(torch.randn(shape, generator=g).to(v.dtype))
        else:
            args.append(torch.zeros(shape, dtype=v.dtype))
    return args
