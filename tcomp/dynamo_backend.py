"""``torch.compile(model, backend="tcomp")``: tcomp as a TorchDynamo backend.

Registered through the ``torch_dynamo_backends`` entry point (see pyproject.toml), so ``import tcomp`` is not
needed. Dynamo hands over each captured graph with the parameters as inputs and, when it has made a dimension
dynamic, the sizes as ``SymInt`` inputs; tcomp compiles the graph for the concrete values (a SymInt's hint) and
its compiled module guards on its own inputs, recompiling for a new shape. The parameters are put back as the
graph's named constants, so every weight pass applies (:func:`tcomp.frontend.dynamo.graph_runner`).
"""
from __future__ import annotations

import torch.fx as fx

from tcomp.api import compile as tcomp_compile
from tcomp.frontend.dynamo import graph_runner


def tcomp_backend(gm: fx.GraphModule, example_inputs: list, **options):
    return graph_runner(gm, example_inputs, lambda module, example: tcomp_compile(module, example, **options))
