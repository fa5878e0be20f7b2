"""Coarsening of an AOTAutograd joint forward+backward graph into layer-level nodes for the solver.

Every operation of the joint graph joins one group:
  - a view (an op whose output aliases its input's storage: view, t, permute, expand, slice, detach, ...) and the
    getitem taking one result of a multi-output op join the group of their source; both are free;
  - a pointwise op (`torch.Tag.pointwise`) joins the group of its first input computed in the same phase; in the
    backward phase only a group of pointwise ops and views: a backward op's inputs (the incoming gradient, saved
    activations) usually die when it has run, and a pointwise op after it in the same group would count them
    while it runs (the max-pool backward followed by the ReLU backward of a ResNet stem: 100 MB too many);
  - anything else (matmul, convolution, reduction, normalisation, ...) starts a group, and so does every output
    of the joint graph (a gradient, a forward output), so that what the caller keeps does not keep its
    producer's other results alive, and so does every result of a multi-output op but its main one (the first of
    the largest size): the statistics a normalisation saves for its backward, the values of a max pooling next to
    its int64 indices, so that each can be freed when its own readers are done; the storage owner of a forward
    output starts a group that only views join (the group is not recomputable, and nothing else should be).
A join that would make the group graph cyclic is skipped, and groups never mix the phases: the forward phase is
what the forward outputs need and the free views of it (such as the statistics a normalisation returns for its
backward), the backward phase the rest.

A group's compute is the roofline time of its members in tcomp's cost model (FLOPs from the formulas of
`torch.utils.flop_counter`, bytes read and written, one launch), in nanoseconds. Its memory is the bytes of the
storage its members allocate that outlives the group (read by another group, or an output); the results of a multi-
output op are allocated by their getitems (from the op's step on), views allocate nothing. Its workspace is what
its members hold beyond that while the group runs: intermediate results (a pointwise op's input and output
together, say), the results of a multi-output op that other groups' getitems take, and each kernel's own
temporaries, measured by running the operation once (measure.op_workspaces: on CPU a convolution holds a second
output-sized buffer, the batch norm backward allocates its input gradient twice). Group u precedes group v when a member
of v reads a member of u, and also when it reads a view of u's storage, since a view keeps its base alive. A virtual
sink reads every output, forward outputs (the caller holds them through the backward pass) and gradients alike, so
they stay live to the end. Between the phases, two more virtual nodes stand for what happens outside the joint
graph: LOSS, the caller's loss function and its backward (its measured peak beyond the output gradients), which
reads the forward outputs; and TANGENTS, the output gradients it hands to the backward pass, read by the groups that
use them; the compiled backward frees each after its last reader, as eager autograd does. An in-place write
(lean_ops.py's scatter of a tied embedding's gradient, its log-softmax backward) allocates nothing: its output
lives in its storage owner's. A group is marked not recomputable when it contains a random or mutating op, owns or
reads storage an operation writes in place, owns a forward output's storage (the caller holds that instance to the
end), or reads an input the step mutates (a recomputation would read the mutated value) -- except a training-mode
batch norm reading the running statistics it updates, whose normalised output does not depend on them -- or takes
a result of a multi-output op of another group (a tuple cannot be saved for it).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import networkx as nx
import torch
from torch import fx
from torch._functorch._aot_autograd.descriptors import InputMutationAOTOutput
from torch._functorch._aot_autograd.utils import _is_tangent
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import flop_registry

from tcomp.cost.model import MachineModel

from tcomp.remat.problem import RECOMPUTABLE

SINK = "outputs"
"""The virtual last node of the coarse graph: it reads every output of the joint graph."""
LOSS = "loss"
"""The virtual node between the phases for the caller's loss and its backward."""
TANGENTS = "tangents"
"""The virtual node for the output gradients, computed by LOSS, read by the backward groups."""

COMPUTE = "compute_ns"
MEMORY = "bytes"
WORKSPACE = "workspace_bytes"


@dataclass(frozen=True)
class Group:
    """Joint-graph nodes computed together, in graph order."""

    members: tuple[fx.Node, ...]
    forward: bool


@dataclass(frozen=True)
class CoarseGraph:
    """groups[i] is node i of `graph`, forward groups first; `graph` also holds LOSS, TANGENTS and SINK, and
    `order` is a topological order of it with the forward groups first."""

    groups: tuple[Group, ...]
    graph: nx.DiGraph
    forward_groups: int
    forward_nodes: frozenset[fx.Node]  # the joint graph's operations in the forward phase
    operations: int  # call_function nodes of the joint graph

    @property
    def order(self) -> list:
        return [*range(self.forward_groups), LOSS, TANGENTS, *range(self.forward_groups, len(self.groups)), SINK]


def coarsen(
    joint: fx.GraphModule, num_fwd_outputs: int, machine: MachineModel, loss_bytes: int,
    op_workspace: dict[fx.Node, int] | None = None,
) -> CoarseGraph:
    """Group the operations of `joint` (the first `num_fwd_outputs` outputs are the forward outputs); `loss_bytes`
    is the peak the caller's loss and its backward add beyond the output gradients; `op_workspace` gives the
    temporaries an operation's kernel allocates beyond its outputs (see measure.op_workspaces; default none)."""
    op_workspace = op_workspace or {}
    outputs = pytree.arg_tree_leaves(*joint.graph.output_node().args)  # forward outputs, then gradients
    forward = ancestors([o for o in outputs[:num_fwd_outputs] if isinstance(o, fx.Node)])
    for node in joint.graph.nodes:  # views of forward values are free to take in the forward pass
        if node.op == "call_function" and _is_free(node) and node.all_input_nodes[0] in forward:
            forward.add(node)
    held = {storage_source(o) for o in outputs[:num_fwd_outputs] if isinstance(o, fx.Node)}  # by the caller
    members, dag = _group(joint, forward, {o for o in outputs if isinstance(o, fx.Node)}, held)
    mutated = mutated_inputs(joint)
    written = {storage_source(n) for n in joint.graph.nodes if n.op == "call_function" and writes_in_place(n)}
    is_forward = {g: members[g][0] in forward for g in dag}
    order = list(nx.lexicographical_topological_sort(dag, key=lambda g: (not is_forward[g], g)))
    groups = tuple(Group(tuple(members[g]), is_forward[g]) for g in order)
    group_of = {m: i for i, group in enumerate(groups) for m in group.members}

    graph = nx.DiGraph()
    for i, group in enumerate(groups):
        graph.add_node(i, **{
            COMPUTE: sum(_time_ns(m, machine) for m in group.members),
            MEMORY: _memory(group, group_of, i),
            WORKSPACE: _workspace(group, group_of, i, op_workspace),
            RECOMPUTABLE: _recomputable(group, group_of, i, mutated, written, held),
        })
    tangents = [p for p in joint.graph.find_nodes(op="placeholder") if _is_tangent(p)]
    graph.add_node(LOSS, **{COMPUTE: 0, MEMORY: loss_bytes, RECOMPUTABLE: False})
    graph.add_node(TANGENTS, **{COMPUTE: 0, MEMORY: sum(tensor_bytes(t.meta.get("val")) for t in tangents),
                                RECOMPUTABLE: False})
    graph.add_node(SINK, **{COMPUTE: 0, MEMORY: 0})
    graph.add_edge(LOSS, TANGENTS)
    for i, group in enumerate(groups):
        for m in group.members:
            for a in m.all_input_nodes:
                graph.add_edges_from((u, i) for u in _sources(a, group_of) if u != i)
                if a in tangents:
                    graph.add_edge(TANGENTS, i)
    for o in outputs[:num_fwd_outputs]:
        if isinstance(o, fx.Node):
            graph.add_edges_from((u, LOSS) for u in _sources(o, group_of))
    for o in outputs:
        if isinstance(o, fx.Node):
            graph.add_edges_from((u, SINK) for u in _sources(o, group_of))
    return CoarseGraph(groups, graph, sum(g.forward for g in groups), frozenset(forward), len(group_of))


def is_view(node: fx.Node) -> bool:
    """The node's output aliases the storage of its first input."""
    if not isinstance(node.target, torch._ops.OpOverload):
        return False
    if node.target is torch.ops.aten._unsafe_view.default:  # a view whose schema does not say so
        return True
    return any(r.alias_info is not None and not r.alias_info.is_write for r in node.target._schema.returns)


def mutated_inputs(joint: fx.GraphModule) -> set[fx.Node]:
    """The placeholders of the joint graph whose values the step updates in place (e.g. running statistics)."""
    descs = joint.graph.output_node().meta.get("desc") or []
    targets = [d.mutated_input for d in descs if isinstance(d, InputMutationAOTOutput)]
    return {p for p in joint.graph.find_nodes(op="placeholder") if p.meta.get("desc") in targets}


def writes_in_place(node: fx.Node) -> bool:
    """The node updates its first input in place and returns it (such as `index_put_`, see lean_ops.py)."""
    return isinstance(node.target, torch._ops.OpOverload) and any(
        r.alias_info is not None and r.alias_info.is_write for r in node.target._schema.returns)


def _aliases(node: fx.Node) -> bool:
    """The node's output lives in its first input's storage: a view or an in-place write."""
    return is_view(node) or writes_in_place(node)


def storage_source(node: fx.Node) -> fx.Node:
    """The node whose output owns the storage `node`'s output lives in."""
    while node.op == "call_function" and _aliases(node):
        node = node.all_input_nodes[0]
    return node


def tensor_bytes(value: object) -> int:
    """Bytes of the tensors in a node's meta value (a tensor, or a tuple or list of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _group(
    joint: fx.GraphModule, forward: set[fx.Node], outputs: set[fx.Node], held: set[fx.Node]
) -> tuple[dict[int, list[fx.Node]], nx.DiGraph]:
    """Groups (members in graph order) and their dependency DAG. `held` (the storage of the forward outputs) starts
    groups that only views join: such a group is not recomputable, and nothing else should share that fate."""
    members: dict[int, list[fx.Node]] = {}
    group_of: dict[fx.Node, int] = {}
    pointwise_only: dict[int, bool] = {}
    dag = nx.DiGraph()
    for node in joint.graph.nodes:
        if node.op != "call_function":
            continue
        inputs = [a for a in node.all_input_nodes if a in group_of]
        if node in outputs or node in held or _is_side_result(node):
            candidates = []
        elif _is_free(node):
            candidates = node.all_input_nodes[:1]
        elif _is_pointwise(node):
            candidates = [a for a in inputs if not held.intersection(members[group_of[a]])]
            if node not in forward:  # see the module docstring: backward pointwise chains start their own groups
                candidates = [a for a in inputs if pointwise_only[group_of[a]]]
        else:
            candidates = []
        target = next((group_of[a] for a in candidates if a in group_of and (a in forward) == (node in forward)), None)
        others = {group_of[a] for a in inputs} - {target}
        if target is not None and any(nx.has_path(dag, target, h) for h in others):
            target = None  # joining would close a cycle through another group
        if target is None:
            target = len(members)
            members[target] = []
            pointwise_only[target] = True
            dag.add_node(target)
        members[target].append(node)
        pointwise_only[target] &= _is_pointwise(node) or _is_free(node)
        group_of[node] = target
        dag.add_edges_from((h, target) for h in {group_of[a] for a in inputs} - {target})
    return members, dag


def _memory(group: Group, group_of: dict[fx.Node, int], index: int) -> int:
    """Bytes of the storage the group's members allocate that outlives the group."""
    def escapes(m: fx.Node) -> bool:
        return any(
            u.op == "output" or group_of.get(u) != index or (_aliases(u) and escapes(u)) for u in m.users
        )
    return sum(
        tensor_bytes(m.meta.get("val")) for m in group.members
        if isinstance(m.meta.get("val"), torch.Tensor) and not _aliases(m) and escapes(m)
    )


def _workspace(group: Group, group_of: dict[fx.Node, int], index: int, op_workspace: dict[fx.Node, int]) -> int:
    """The group's temporaries: its peak while its members run in order (each member's storage live from its
    computation to its last use inside the group, or to the end if it outlives the group; a member's kernel
    temporaries while it runs) minus its memory."""
    owners = [m for m in group.members if isinstance(m.meta.get("val"), torch.Tensor) and not _aliases(m)]
    position = {m: t for t, m in enumerate(group.members)}
    last = len(group.members) - 1

    def last_use(m: fx.Node) -> int:
        uses = [position[u] if group_of.get(u) == index else last for u in m.users]
        return max([position[m], *uses, *(last_use(u) for u in m.users if group_of.get(u) == index and _aliases(u))])

    # results of a member's multi-output op that getitems of other groups take: live from the op to the group's end
    elsewhere = {m: sum(tensor_bytes(u.meta.get("val")) for u in m.users
                        if u.target is operator.getitem and group_of.get(u) != index)
                 for m in group.members if isinstance(m.meta.get("val"), (tuple, list))}

    def start(m: fx.Node) -> int:  # a multi-output op allocates the results its getitems take
        source = m.args[0] if m.target is operator.getitem else None
        return position[source] if source in position else position[m]

    live = [sum(tensor_bytes(m.meta["val"]) for m in owners if start(m) <= t <= last_use(m))
            + sum(b for m, b in elsewhere.items() if position[m] <= t) + op_workspace.get(group.members[t], 0)
            for t in range(len(group.members))]
    return max(max(live, default=0) - _memory(group, group_of, index), 0)


def _sources(node: fx.Node, group_of: dict[fx.Node, int]) -> set[int]:
    """The groups that must be live for `node`'s output to be read: its own and its storage owner's."""
    return {group_of[n] for n in (node, storage_source(node)) if n in group_of}


def _time_ns(node: fx.Node, machine: MachineModel) -> int:
    """Roofline time of one operation in tcomp's cost model (views and getitems are free)."""
    if _is_free(node):
        return 0
    value = node.meta.get("val")
    inputs = [a.meta.get("val") for a in node.all_input_nodes]
    moved = tensor_bytes(value) + sum(tensor_bytes(v) for v in inputs)
    flops = 0
    packet = getattr(node.target, "overloadpacket", None)
    if packet in flop_registry:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: a.meta.get("val"))
        flops = flop_registry[packet](*args, **kwargs, out_val=value)
    seconds = flops / machine.gemm_flops_per_s + moved / machine.bytes_per_s + machine.launch_s
    return math.ceil(seconds * 1e9)


def _is_free(node: fx.Node) -> bool:
    """A view, or the getitem taking one result of a multi-output op: no computation, no new storage."""
    return node.target is operator.getitem or is_view(node)


def _is_side_result(node: fx.Node) -> bool:
    """A getitem taking a result of a multi-output op other than its main one (the first of the largest size), such
    as the statistics a normalisation saves for its backward, or the values of a max pooling next to its int64
    indices: kept apart, so that each result lives as long as its own readers need it."""
    if node.target is not operator.getitem:
        return False
    results = node.args[0].meta.get("val")
    if not isinstance(results, (tuple, list)) or not results:
        return False
    sizes = [tensor_bytes(r) for r in results]
    return node.args[1] != sizes.index(max(sizes))


def _is_pointwise(node: fx.Node) -> bool:
    return isinstance(node.target, torch._ops.OpOverload) and torch.Tag.pointwise in node.target.tags


def _recomputable(group: Group, group_of: dict[fx.Node, int], index: int, mutated: set[fx.Node],
                  written: set[fx.Node], held: set[fx.Node]) -> bool:
    """No member is random or mutating or reads a mutated input (but see the training batch norm), owns or reads
    storage that an operation writes in place (`written`: a recomputation would see the storage before or after
    the write, whichever the schedule gives it), owns a forward output's storage (`held`: the caller holds the
    first instance to the end, which a recomputation for the sink would count twice), and no member takes a result
    of another group's multi-output op (that tuple cannot be saved for it)."""
    for m in group.members:
        if m in written or m in held or any(storage_source(a) in written for a in m.all_input_nodes):
            return False
        if any(isinstance(a.meta.get("val"), (tuple, list)) and group_of.get(a, index) != index
               for a in m.all_input_nodes):
            return False
        if not isinstance(m.target, torch._ops.OpOverload):
            continue
        if torch.Tag.nondeterministic_seeded in m.target.tags or m.target._schema.is_mutable:
            return False
        reads = [a for a in m.all_input_nodes if a in mutated]
        if m.target is torch.ops.aten._native_batch_norm_legit_functional.default and m.args[5]:
            if any(a not in m.args[3:5] for a in reads):  # training mode: running statistics only feed their update
                return False
        elif reads:
            return False
    return True


def ancestors(roots: list[fx.Node]) -> set[fx.Node]:
    """The operations (call_function nodes) `roots` depend on, `roots` included."""
    seen: set[fx.Node] = set()
    stack = [r for r in roots if r.op == "call_function"]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(a for a in node.all_input_nodes if a.op == "call_function")
    return seen
