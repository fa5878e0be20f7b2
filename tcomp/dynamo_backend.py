"""``torch.compile(model, backend="tcomp")``: tcomp as a TorchDynamo backend.

Registered through the ``torch_dynamo_backends`` entry point (see pyproject.toml), so ``import tcomp`` is not
needed. Dynamo hands over each captured graph with the parameters as inputs and, when it has made a dimension
dynamic, the sizes as ``SymInt`` inputs; tcomp compiles the graph for the concrete values (a SymInt's hint) and
its compiled module guards on its own inputs, recompiling for a new shape.

Parameters are put back: each input that is an ``nn.Parameter`` becomes an attribute of the graph (the same
object), so tcomp sees the model's weights as named constants and every weight pass applies — pre-contraction of
weight products, batch-norm folding, factorization. Dynamo does not guard on which tensor it passes for a lifted
parameter, so every call checks that it passes the same ones; a call with another (a replaced parameter) runs the
graph as Dynamo captured it.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from tcomp.api import compile as tcomp_compile


def _concrete(x):
    if isinstance(x, torch.SymInt):
        return x.node.hint
    if isinstance(x, torch.SymFloat):
        return x.node.hint
    return x


def _with_parameters(gm: fx.GraphModule, lifted: dict[int, nn.Parameter]) -> fx.GraphModule:
    """A copy of ``gm`` whose placeholders at the positions of ``lifted`` read those parameters as attributes."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    holder = nn.Module()
    for k, param in lifted.items():
        node = placeholders[k]
        holder.register_parameter(node.name, param)
        with graph.inserting_before(node):
            attr = graph.get_attr(node.name)
        node.replace_all_uses_with(attr)
        graph.erase_node(node)
    for name, child in gm.named_children():
        holder.add_module(name, child)
    for name, buffer in gm.named_buffers(recurse=False):
        holder.register_buffer(name, buffer)
    for name, param in gm.named_parameters(recurse=False):
        holder.register_parameter(name, param)
    module = fx.GraphModule(holder, graph, class_name=type(gm).__name__)
    # the graph spells out train-mode behaviour itself (dropout and batch norm take ``training=``); the module's
    # mode tells tcomp's cost decisions whether gradients are wanted, as it does for a model compiled directly
    return module.train(torch.is_grad_enabled() and any(p.requires_grad for p in lifted.values()))


def tcomp_backend(gm: fx.GraphModule, example_inputs: list, **options):
    lifted = {k: x for k, x in enumerate(example_inputs) if isinstance(x, nn.Parameter)}
    kept = [k for k in range(len(example_inputs)) if k not in lifted]
    module = _with_parameters(gm, lifted) if lifted else gm
    compiled = tcomp_compile(module, tuple(_concrete(example_inputs[k]) for k in kept), **options)

    def run(*args):
        if any(args[k] is not p for k, p in lifted.items()):
            return gm(*args)  # a parameter replaced since: the graph as captured, which reads it as an input
        return compiled(*(args[k] for k in kept))

    run.tcomp_module = compiled
    return run
