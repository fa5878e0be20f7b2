"""batch_siblings: independent, isomorphic Networks become one batched Network (horizontal batching).

The sibling nodes of a tree tensor network, the same layer applied to several slices, per-head or per-site steps
with weights of their own: each is a small contraction, and each of its steps pays a kernel launch and Python's
dispatch. Run as one Network with a new leading index over the siblings, every step is one batched product instead
of one per sibling — the horizontal fusion of TASO (Jia et al., SOSP 2019) and Rammer (Ma et al., OSDI 2020),
decided here by tcomp's cost model.

Algorithm:

1. Networks without an epilogue are keyed by :func:`tcomp.contract.search.network_signature` (everything a plan
   depends on: equation, sizes, operand kinds, shapes, dtypes, layouts, which positions hold the same value).
2. In program order, the Networks of one key form a group while each is independent of the group's earlier members
   (no data path from one to another) and no op before the group's last member reads an earlier member's result;
   the batched Network takes the last member's place, where every member's operands are defined (a program that
   writes a tensor in place is left alone: an operand could change between a member and the last).
3. At each operand position, a value all members share is read once (broadcast over the new index); distinct values
   are stacked on every call (``torch.stack``, a copy), parameters too: restacking eight 2x4 weights costs 3 µs,
   where checking a cache of them for changes costs 30 µs — and gradients reach the parameters as they are.
4. The group is rewritten when the cost model prices the batched Network plus the stacking copies below the members'
   plans (both at the decision point; the plans searched here are reused by ``contraction_order``). Each member's
   result is a view of the batched one (``unbind``).

Complexity: O(n²/64) for the dependence sets (Python integers as bit sets), one plan search per distinct signature.
"""
from __future__ import annotations

import operator

import torch

from tcomp.contract.search import best_plan, network_signature
from tcomp.cost.model import dtype_bytes
from tcomp.ir import Call, Network, Op, Program, Value, format_op
from tcomp.ir.analysis import mutation
from tcomp.ir.indices import IndexPool
from tcomp.ir.symbolic import decision_point, evaluate, prod
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "batch_siblings"


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    report = PassReport(NAME, changed=False)
    writer = mutation(program)
    if writer is not None:  # the batched Network reads every member's operands where the last member ran
        report.notes.append(f"not run: {format_op(writer).strip()} writes a tensor in place")
        return new, report
    at = decision_point(program.example)
    batched = 0
    for group in _groups(new):
        rewrite = _Batched(new, group, ctx, at)
        saved = rewrite.saving()
        names = ", ".join(f"%{m.out.name}" for m in group)
        if saved <= 0:
            report.notes.append(f"kept {len(group)} siblings ({names}) apart: batching saves nothing by the model")
            continue
        rewrite.apply()
        batched += len(group)
        report.notes.append(f"batched {len(group)} siblings ({names}) as %{rewrite.out.name}: "
                            f"{saved * 1e6:.1f} µs less a call by the model")
    report.changed = batched > 0
    return new, report


def _groups(program: Program) -> list[list[Network]]:
    """Groups of two or more Networks of one signature that can run as one (items 1-2 of the module docstring)."""
    position = {id(op): k for k, op in enumerate(program.ops)}
    producers = program.producers()
    depends: dict[int, int] = {}  # op position -> bit set of the op positions it reads from, transitively
    for k, op in enumerate(program.ops):
        bits = 0
        for v in op.inputs():
            p = producers.get(id(v))
            if p is not None:
                j = position[id(p)]
                bits |= depends[j] | (1 << j)
        depends[k] = bits
    first_read: dict[int, int] = {}  # id(value) -> position of its first reader
    for k, op in enumerate(program.ops):
        for v in op.inputs():
            first_read.setdefault(id(v), k)
    open_groups: dict[tuple, list[int]] = {}
    done: list[list[int]] = []
    for k, op in enumerate(program.ops):
        if not isinstance(op, Network) or op.epilogue or op.compute_dtype is not None or op.kernel is not None \
                or not op.out.is_tensor:
            continue
        key = network_signature(op)
        members = open_groups.get(key, [])
        blocked = any(depends[k] >> j & 1 for j in members) or \
            any(first_read.get(id(program.ops[j].out), len(program.ops)) < k for j in members)
        if blocked:
            if len(members) > 1:
                done.append(members)
            members = []
        open_groups[key] = members + [k]
    done += [m for m in open_groups.values() if len(m) > 1]
    return [[program.ops[k] for k in members] for members in sorted(done)]


class _Batched:
    """The rewrite of one group (items 3-4 of the module docstring)."""

    def __init__(self, program: Program, group: list[Network], ctx: PassContext, at: dict):
        self.program, self.group, self.ctx, self.at = program, group, ctx, at
        first = group[0]
        self.n = IndexPool(first.sizes).new()
        self.stacks: list[Op] = []
        operands, dims = [], []
        for p, v in enumerate(first.operands):
            values = [m.operands[p] for m in group]
            if all(x is v for x in values):  # shared: read once, broadcast over the new index
                operands.append(v)
                dims.append(first.operand_dims[p])
                continue
            out = Value(f"{first.out.name}_stack{p}", (len(group), *v.shape), v.dtype)
            self.stacks.append(Call(out, torch.stack, "function", (values,), {}))
            operands.append(out)
            dims.append(((self.n,), *first.operand_dims[p]))
        self.out = Value(f"{first.out.name}_batched", (len(group), *first.out.shape), first.out.dtype)
        self.network = Network(self.out, tuple(operands), tuple(dims), ((self.n,), *first.out_dims),
                               {**first.sizes, self.n: len(group)}, origin=f"{len(group)} siblings batched",
                               hint=first.hint)

    def saving(self) -> float:
        """Seconds a call saved at the decision point: the members' plans, less the batched plan and the stacks."""
        machine, training = self.ctx.machine, self.ctx.training
        apart = sum(best_plan(m, self.at, training=training, machine=machine).cost.time_at(self.at, machine)
                    for m in self.group)
        together = best_plan(self.network, self.at, training=training, machine=machine).cost.time_at(self.at,
                                                                                                     machine)
        for call in self.stacks:
            nbytes = evaluate(prod(call.out.shape), self.at) * dtype_bytes(call.out.dtype)
            together += 2 * nbytes / machine.copy_bytes_per_s + machine.launch_s
        return apart - together - machine.launch_s  # the unbind

    def apply(self) -> None:
        program, group = self.program, self.group
        last = max(program.ops.index(m) for m in group)
        parts = Value(f"{self.out.name}_parts", None, None)
        views = [Call(Value(m.out.name, m.out.shape, m.out.dtype), operator.getitem, "function", (parts, k), {})
                 for k, m in enumerate(group)]
        program.ops[last:last + 1] = [*self.stacks, self.network,
                                      Call(parts, torch.unbind, "function", (self.out,), {}), *views]
        for m, view in zip(group, views):
            program.replace_uses(m.out, view.out)
        program.ops = [op for op in program.ops if not any(op is m for m in group)]


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
