"""TorchDynamo as a front end: its graphs with the model's parameters put back, and models compiled in pieces around
graph breaks.

**Parameters put back.** Dynamo lifts a module's parameters to graph inputs. Each input that is an
``nn.Parameter`` becomes an attribute of the graph again (the same object), so tcomp sees the model's weights as
named constants and every weight pass applies — pre-contraction of weight products, batch-norm folding,
factorization. Dynamo does not guard on which tensor it passes for a lifted parameter, so every call checks that it
passes the same ones; a call with another (a replaced parameter) runs the graph as Dynamo captured it.

**Pieces.** Where neither torch.fx nor torch.export can capture a whole model (a library that calls numpy on a
tensor's values, as tensorly-torch's factorized embedding does), Dynamo splits its forward at each graph break, as
``torch.compile`` does: every graph between the breaks is compiled by tcomp, checked against eager on its first
inputs and guarded like any compiled program, and the Python at the breaks runs eagerly. Dynamo guards the frames
themselves (shapes, grad mode, the values of Python state) and recompiles what changed. The report names each break:
Dynamo's reason and the line of code where it happened.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

CompileGraph = Callable[[nn.Module, tuple], Any]
"""Compiles a graph module for example inputs; returns the compiled module (a ``CompiledModule``)."""


def _concrete(x):
    if isinstance(x, (torch.SymInt, torch.SymFloat)):
        return x.node.hint
    return x


def _size_sources(gm: fx.GraphModule) -> dict[int, tuple[int, int]]:
    """For each symbolic size Dynamo passes ``gm`` as an input (a ``SymInt``, when it compiles a frame for dynamic
    shapes), a tensor input and dimension whose size it is, where there is one (read from the placeholders' fake
    values: the example inputs themselves are concrete)."""
    values = [n.meta.get("example_value") for n in gm.graph.nodes if n.op == "placeholder"]
    found = {}
    for j, size in enumerate(values):
        if not isinstance(size, torch.SymInt):
            continue
        for k, t in enumerate(values):
            if isinstance(t, torch.Tensor):
                d = next((d for d, s in enumerate(t.shape) if isinstance(s, torch.SymInt)
                          and s.node.expr == size.node.expr), None)
                if d is not None:
                    found[j] = (k, d)
                    break
    return found


def _with_parameters(gm: fx.GraphModule, lifted: dict[int, nn.Parameter],
                     sizes: dict[int, tuple[int, int]]) -> fx.GraphModule:
    """A copy of ``gm`` whose placeholders at the positions of ``lifted`` read those parameters as attributes, and
    whose placeholders at the positions of ``sizes`` read the size of the tensor input and dimension given."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for j, (k, d) in sizes.items():
        with graph.inserting_after(placeholders[-1]):
            size = graph.call_method("size", (placeholders[k], d))
        placeholders[j].replace_all_uses_with(size)
        graph.erase_node(placeholders[j])
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
    return fx.GraphModule(holder, graph, class_name=type(gm).__name__)


def graph_runner(gm: fx.GraphModule, example_inputs: list, compile_graph: CompileGraph) -> Callable:
    """What a Dynamo backend returns for ``gm``: ``gm`` with its lifted parameters put back and its symbolic sizes read
    from its tensors, compiled by ``compile_graph`` for the example's values; the compiled module is the runner's
    ``tcomp_module``."""
    lifted = {k: x for k, x in enumerate(example_inputs) if isinstance(x, nn.Parameter)}
    sizes = _size_sources(gm)  # read from the tensors: as values, every new size would compile again
    kept = [k for k in range(len(example_inputs)) if k not in lifted and k not in sizes]
    module = _with_parameters(gm, lifted, sizes) if lifted or sizes else gm
    # the graph spells out train-mode behaviour itself (dropout and batch norm take ``training=``); the module's
    # mode tells tcomp's cost decisions whether gradients are wanted, as it does for a model compiled directly (a
    # graph Dynamo made is in train mode whatever the model's)
    wants_grad = any(x.requires_grad for x in example_inputs if isinstance(x, torch.Tensor))
    module.train(torch.is_grad_enabled() and wants_grad)
    compiled = compile_graph(module, tuple(_concrete(example_inputs[k]) for k in kept))

    def run(*args):
        if any(args[k] is not p for k, p in lifted.items()):
            return gm(*args)  # a parameter replaced since: the graph as captured, which reads it as an input
        return compiled(*(args[k] for k in kept))

    run.tcomp_module = compiled
    return run


@dataclass(frozen=True)
class GraphBreak:
    reason: str   # Dynamo's, its first line
    where: str    # file:line: code, where the break happened

    def __str__(self) -> str:
        return f"{self.reason} (at {self.where})"


def _graph_break(gm: fx.GraphModule) -> GraphBreak | None:
    reason = getattr(gm, "compile_subgraph_reason", None)
    if reason is None or not reason.graph_break:
        return None
    stack = reason.user_stack or []
    where = f"{stack[-1].filename}:{stack[-1].lineno}: {(stack[-1].line or '').strip()}" if stack else "unknown"
    return GraphBreak(reason.reason.strip().splitlines()[0], where)


class Pieces:
    """``model`` run by TorchDynamo with each graph compiled by ``compile_graph``: ``pieces(*args, **kwargs)``.

    ``modules`` are the compiled graphs in the order Dynamo compiled them (a frame recompiled for new shapes adds
    more), ``breaks`` the graph breaks met, each once."""

    def __init__(self, model: nn.Module, compile_graph: CompileGraph, dynamic: bool | None):
        self.modules: list = []
        self.breaks: list[GraphBreak] = []
        self._compile_graph = compile_graph
        self._run = torch.compile(model, backend=self._backend, dynamic=dynamic)

    def _backend(self, gm: fx.GraphModule, example_inputs: list) -> Callable:
        found = _graph_break(gm)
        if found is not None and found not in self.breaks:
            self.breaks.append(found)
        run = graph_runner(gm, example_inputs, self._compile_graph)
        self.modules.append(run.tcomp_module)
        return run

    def __call__(self, *args, **kwargs):
        return self._run(*args, **kwargs)


def in_pieces(model: nn.Module, args: tuple, kwargs: dict, compile_graph: CompileGraph,
              dynamic: bool | None) -> Pieces:
    """Compile ``model`` in pieces for the example call ``model(*args, **kwargs)``: the call runs once (Dynamo
    compiles the graphs it meets), leaving the model's buffers and the global random stream as they were."""
    from .capture import preserved_state

    pieces = Pieces(model, compile_graph, dynamic)
    with preserved_state(model), torch.random.fork_rng():
        pieces(*args, **kwargs)
    if not pieces.modules:
        raise RuntimeError("TorchDynamo captured no graph of it")
    return pieces
