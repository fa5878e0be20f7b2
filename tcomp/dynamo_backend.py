"""``torch.compile(model, backend="tcomp")``: tcomp as a TorchDynamo backend.

Registered through the ``torch_dynamo_backends`` entry point (see pyproject.toml), so ``import tcomp`` is not
needed. Dynamo hands over each captured graph with the parameters as inputs and, when it has made a dimension
dynamic, the sizes as ``SymInt`` inputs; tcomp compiles the graph for the concrete values (a SymInt's hint) and
its compiled module guards on its own inputs, recompiling for a new shape.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from tcomp.api import compile as tcomp_compile


def _concrete(x):
    if isinstance(x, torch.SymInt):
        return x.node.hint
    if isinstance(x, torch.SymFloat):
        return x.node.hint
    return x


def tcomp_backend(gm: fx.GraphModule, example_inputs: list, **options):
    compiled = tcomp_compile(gm, tuple(_concrete(x) for x in example_inputs), **options)

    def run(*args):
        return compiled(*args)

    run.tcomp_module = compiled
    return run
