"""From a schedule of the coarse graph to AOTAutograd's forward and backward graphs.

The schedule's stages before the first backward group form the forward pass, the others the backward pass. Each
graph's body is the joint graph's operations copied in the schedule's order: a step copies its group's
operations, a group computed again gets fresh copies, and later readers read the newest copies, exactly as
`simulate` assumes. Whatever the backward body reads before computing it is saved by the forward graph: the
forward values whose forward instance a backward step reads, and the parameters and inputs it needs; the forward
groups it computes itself are its recomputations. Dead copies are removed, and the boxed calling convention of
the compiled graphs frees a saved tensor after its last use, so the memory timeline follows the schedule.

The two graphs follow AOTAutograd's partitioner conventions (those of `_extract_fwd_bwd_modules`): the forward
takes the primals and returns the forward outputs then the saved tensors, those with a version-counter check
first; the backward takes the saved tensors then the tangents and returns the gradients. Inputs the step mutates
(running statistics) are saved without a version-counter check: only a recomputed training batch norm reads them,
and its output does not depend on their value (see coarsen.py).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import fx
from torch._functorch._aot_autograd.descriptors import (
    SavedForBackwardsAOTOutput,
    SavedForBackwardsNoVcCheckAOTOutput,
)
from torch._functorch._aot_autograd.utils import _is_primal, _is_tangent
from torch.utils import _pytree as pytree

from .coarsen import CoarseGraph, mutated_inputs, storage_source, tensor_bytes


@dataclass(frozen=True)
class Partition:
    """The forward and backward graphs, what the forward saves, and how often groups are recomputed."""

    forward: fx.GraphModule
    backward: fx.GraphModule
    saved: int  # tensors the forward saves (parameters and inputs included)
    saved_bytes: int  # storage of the saved activations (parameters and inputs excluded: they are alive anyway)
    recomputed_in_forward: int
    recomputed_in_backward: int


def partition(
    joint: fx.GraphModule, num_fwd_outputs: int, coarse: CoarseGraph, steps: Sequence[Hashable]
) -> Partition:
    """Split `joint` into forward and backward graphs that run `steps` (group indices and the virtual nodes)."""
    placeholders = joint.graph.find_nodes(op="placeholder")
    primals = [p for p in placeholders if _is_primal(p)]
    tangents = [p for p in placeholders if _is_tangent(p)]
    if len(primals) + len(tangents) != len(placeholders):
        raise NotImplementedError("rematerialization supports joint graphs of primals and tangents only "
                                  "(no functionalised random-number seeds or backward state)")
    outputs = pytree.arg_tree_leaves(*joint.graph.output_node().args)
    descs = joint.graph.output_node().meta.get("desc") or [None] * len(outputs)
    boundary = _first_backward_step(coarse, steps)

    mutated = mutated_inputs(joint)
    read = [n for n in _inputs_read(coarse, steps[boundary:], outputs[num_fwd_outputs:]) if not _is_tangent(n)]
    saved = sorted(read, key=lambda n: n in mutated)  # stable: version-checked tensors first
    for n in saved:
        if n.op != "placeholder" and n not in coarse.forward_nodes:
            raise RuntimeError(f"internal error: the backward graph reads {n.name} before computing it")
        if not isinstance(n.meta.get("val"), torch.Tensor):
            raise RuntimeError(f"internal error: the backward graph would save {n.name}, which is not a tensor")
        if n in mutated:
            n.meta["saved_tensor_with_no_vc_check"] = True
    checked = sum(n not in mutated for n in saved)
    saved_descs = [
        SavedForBackwardsAOTOutput(i) if i < checked else SavedForBackwardsNoVcCheckAOTOutput(i)
        for i in range(len(saved))
    ]
    forward = _build(joint, coarse, steps[:boundary], primals, outputs[:num_fwd_outputs] + saved,
                     list(descs[:num_fwd_outputs]) + saved_descs)
    backward = _build(joint, coarse, steps[boundary:], saved + tangents, outputs[num_fwd_outputs:],
                      list(descs[num_fwd_outputs:]))
    for node in backward.graph.nodes:
        if node.op == "call_function":
            node.meta["autograd_backward"] = True
    return Partition(
        forward=forward,
        backward=backward,
        saved=len(saved),
        saved_bytes=sum(tensor_bytes(s.meta.get("val")) for s in {storage_source(n) for n in saved}
                        if s.op != "placeholder"),
        recomputed_in_forward=_recomputations(steps[:boundary]),
        recomputed_in_backward=_recomputations(steps) - _recomputations(steps[:boundary]),
    )


def _recomputations(steps: Sequence[Hashable]) -> int:
    return len(steps) - len(set(steps))


def _first_backward_step(coarse: CoarseGraph, steps: Sequence[Hashable]) -> int:
    """The index of the first step of the first backward stage (after the last forward group's first computation)."""
    if coarse.forward_groups == 0:
        return 0
    last_forward = coarse.forward_groups - 1
    return next(t for t, g in enumerate(steps) if g == last_forward) + 1


def _inputs_read(coarse: CoarseGraph, steps: Sequence[Hashable], outputs: list) -> list[fx.Node]:
    """The joint nodes that `steps` (then `outputs`) read before computing them, in order of first read."""
    computed: set[fx.Node] = set()
    read: dict[fx.Node, None] = {}
    for g in steps:
        if isinstance(g, int):  # a group, not a virtual node
            for m in coarse.groups[g].members:
                read.update((a, None) for a in m.all_input_nodes if a not in computed)
                computed.add(m)
    read.update((o, None) for o in outputs if isinstance(o, fx.Node) and o not in computed)
    return list(read)


def _build(
    joint: fx.GraphModule, coarse: CoarseGraph, steps: Sequence[Hashable], inputs: list[fx.Node],
    outputs: list, descs: list,
) -> fx.GraphModule:
    """A graph taking `inputs`, running the operations of `steps` in order, and returning `outputs`."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}  # joint node -> its newest copy
    for n in inputs:
        env[n] = graph.placeholder(n.name)
        env[n].meta = dict(n.meta)

    def newest(node: fx.Node) -> fx.Node:
        if node not in env:
            raise RuntimeError(f"internal error: {node.name} is read before any step computes it")
        return env[node]

    for g in steps:
        if isinstance(g, int):  # a group, not a virtual node
            for m in coarse.groups[g].members:
                env[m] = graph.node_copy(m, newest)
    result = graph.output(tuple(newest(o) if isinstance(o, fx.Node) else o for o in outputs))
    result.meta["desc"] = descs
    graph.eliminate_dead_code()
    graph.lint()
    return fx.GraphModule(joint, graph)
