"""select_through: an integer index into a contraction's result is the contraction of the indexed operands.

``T = einsum(A, B, …)`` and ``T[k]`` fixing one index ``s`` of the result equals the same Network with ``s`` fixed
to ``k`` in every operand that carries it, and dropped from the output:
``(Σ_j A[s, …] B[…])[k] = Σ_j A[k, …] B[…]`` — index fixing (slicing) distributes over a tensor network.

Code written like torchmps (Miller 2019) builds a stack of per-site matrices in one einsum and then reads it one
site at a time, ``mats[k]``; the stacked result (``[sites, batch, χ, χ]``: 8 MB per chain in the zoo's MPS
classifier) is then written once and read back once per site, and each per-site product is a batched
matrix-vector product. When *every* reader of a Network's result is such a selection, this pass gives each reader
its own Network over views of the operands (``phi[:, k]``, ``cores[k]``), and the stacked result is never built.
fuse_networks then merges each of those small Networks into its consumer, so that contraction_order can plan a
site's feature, core and running boundary vector together (for the MPS: an outer product and one GEMM per site,
instead of a site matrix and a batched matrix-vector product).

Rules: a selection is ``getitem(x, k)`` or ``getitem(x, (…))`` whose entries are ints or full slices ``:`` (one per
leading dimension), or ``aten.select(x, dim, k)``; every selected dimension of the result is one index (or a
size-1 dimension) of static size, and that index is one whole dimension of every operand that has it; the
Network's epilogue reads no tensor other than its result (scalar scaling, activations — they commute with
selection); no reduced precision or kernel has been chosen yet. A Network whose result is also read whole, or is
a program output, is left alone: pushing the selection through would compute it twice. The push must pay: every
piece is read by Networks only (fuse_networks merges it into its reader), or the pieces cost no more than the
whole under the cost model. Nothing is pushed in a program that writes a tensor in place (a selected view
written in place must keep aliasing the whole result). Exact: the same products and sums, fewer of them when not
every site is read. Complexity: one walk over the ops. See docs/passes/select_through.md.
"""
from __future__ import annotations

import operator

import torch

from tcomp.ir import Call, Dims, Network, Op, Program, Value, format_op
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.contract.search import best_plan
from tcomp.ir.analysis import mutation
from tcomp.ir.names import Names
from tcomp.ir.symbolic import Point, decision_point

NAME = "select_through"


def selection(op: Op) -> dict[int, int] | None:
    """``{dimension: integer}`` for ``getitem(x, …)`` with only ints and full slices, or ``aten.select(x, dim, k)``
    (what an aten-level capture records); None for anything else."""
    if not (isinstance(op, Call) and op.kind == "function" and len(op.args) in (2, 3) and not op.kwargs
            and isinstance(op.args[0], Value) and op.args[0].is_tensor):
        return None
    if op.target in (torch.ops.aten.select.int, torch.ops.aten.select) and len(op.args) == 3:
        dim, k = op.args[1:]
        rank = len(op.args[0].shape)
        if not (isinstance(dim, int) and isinstance(k, int)) or not -rank <= dim < rank:
            return None
        return {dim % rank: k}
    if op.target is not operator.getitem or len(op.args) != 2:
        return None
    key = op.args[1] if isinstance(op.args[1], tuple) else (op.args[1],)
    fixed: dict[int, int] = {}
    for d, entry in enumerate(key):
        if isinstance(entry, int) and not isinstance(entry, bool):
            fixed[d] = entry
        elif not (isinstance(entry, slice) and entry == slice(None)):
            return None
    if not fixed or len(key) > len(op.args[0].shape):
        return None
    return fixed


def _fixed_indices(net: Network, fixed: dict[int, int]) -> dict[str, int] | None:
    """The result indices fixed by a selection (``{index: position}``), None when a selected dimension is not one
    index of static size; a selected size-1 dimension fixes no index."""
    out: dict[str, int] = {}
    for d, k in fixed.items():
        group = net.out_dims[d]
        size = net.out.shape[d]
        if not isinstance(size, int) or not -size <= k < size or len(group) > 1:
            return None
        if group:
            out[group[0]] = k % size
    return out


def _selectable(net: Network) -> bool:
    return net.compute_dtype is None and net.kernel is None and all(not e.values() for e in net.epilogue)


def _push(net: Network, reader: Call, fixed: dict[int, int], names: Names) -> list[Op] | None:
    """The ops replacing ``reader``: one view per operand that carries a fixed index, then the reduced Network."""
    at = _fixed_indices(net, fixed)
    if at is None:
        return None
    views: list[Op] = []
    operands: list[Value] = []
    operand_dims: list[Dims] = []
    for v, dims in zip(net.operands, net.operand_dims):
        hit = [d for d, g in enumerate(dims) if set(g) & set(at)]
        if any(len(dims[d]) != 1 for d in hit):
            return None  # the index is merged with others in this operand's dimension: not a plain view
        if not hit:
            operands.append(v)
            operand_dims.append(dims)
            continue
        key = tuple(at[dims[d][0]] if d in hit else slice(None) for d in range(max(hit) + 1))
        shape = tuple(s for d, s in enumerate(v.shape) if d not in hit)
        view = Value(names.fresh(f"{v.name}_at"), shape, v.dtype, stride_order=_without(v.stride_order, hit))
        views.append(Call(view, operator.getitem, "function", (v, key if len(key) > 1 else key[0])))
        operands.append(view)
        operand_dims.append(tuple(g for d, g in enumerate(dims) if d not in hit))
    out_dims = tuple(g for d, g in enumerate(net.out_dims) if d not in fixed)
    used = {i for dims in (*operand_dims, out_dims) for g in dims for i in g}
    key_text = ",".join(str(fixed.get(d, ":")) for d in range(max(fixed) + 1))
    reduced = Network(reader.out, tuple(operands), tuple(operand_dims), out_dims,
                      {i: s for i, s in net.sizes.items() if i in used}, net.epilogue, None,
                      f"{net.origin}[{key_text}]" if net.origin else f"[{key_text}]")
    return views + [reduced]


def _without(order: tuple[int, ...] | None, dropped: list[int]) -> tuple[int, ...] | None:
    """A stride order with some dimensions selected away (the rest keep their relative order)."""
    if order is None:
        return None
    kept = [d for d in order if d not in dropped]
    renumber = {d: r for r, d in enumerate(sorted(kept))}
    new = tuple(renumber[d] for d in kept)
    return None if new == tuple(range(len(new))) else new


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    writer = mutation(new)
    if writer is not None:  # a selected view written in place must keep aliasing the whole result
        report = PassReport(NAME)
        report.notes.append(f"skipped: the program writes a tensor in place ({format_op(writer)[:60]})")
        return new, report
    names = Names(new)
    users = new.users()
    replaced: dict[int, list[Op]] = {}
    pushed = kept_by_cost = 0
    for op in new.ops:
        if not isinstance(op, Network) or not _selectable(op) or new.is_output(op.out):
            continue
        readers = users.get(id(op.out), [])
        picks = [selection(r) for r in readers]
        if not readers or any(p is None for p in picks) or any(r.args[0] is not op.out for r in readers):
            continue
        plans = [_push(op, r, p, names) for r, p in zip(readers, picks)]
        if any(p is None for p in plans):
            continue
        if not _pays(op, [ops[-1] for ops in plans], users, ctx, new.example):
            kept_by_cost += 1
            continue
        for r, ops in zip(readers, plans):
            replaced[id(r)] = ops
        pushed += 1
    new.ops = [o for op in new.ops for o in replaced.get(id(op), [op])]
    removed = new.eliminate_dead_code()
    report = PassReport(NAME, changed=pushed > 0)
    report.notes.append(f"{pushed} network(s) read only through integer indices: {len(replaced)} selection(s) "
                        f"pushed into the operands, {removed} op(s) removed, {kept_by_cost} kept whole by the "
                        f"cost model")
    report.details = {"networks": pushed, "selections": len(replaced), "removed": removed,
                      "kept_by_cost": kept_by_cost}
    return new, report


def _pays(whole: Network, pieces: list[Network], users, ctx: PassContext, at: Point) -> bool:
    """Whether to push: when every selected piece is read as an operand of Networks only (fuse_networks then
    merges it into its reader, where the plan can avoid the piece altogether — the MPS site matrices), or when the
    pieces together cost no more than the whole under the cost model. Otherwise one large GEMM would become many
    small ones (an RNN's input projection for all time steps, read one step at a time by an add)."""
    if all(readers and all(isinstance(r, Network) and any(o is p.out for o in r.operands) for r in readers)
           for p, readers in ((p, users.get(id(p.out), [])) for p in pieces)):
        return True
    where = decision_point(at)

    def time(net: Network) -> float:
        plan = best_plan(net, where, training=ctx.training, quick=True, machine=ctx.machine)
        return plan.cost.time_at(where, ctx.machine)

    return sum(time(p) for p in pieces) <= time(whole) * (1 + 1e-9)


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
