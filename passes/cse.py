"""cse: common-subexpression elimination by value numbering, then dead-code elimination.

Local value numbering (Cocke & Schwartz 1970, "Programming Languages and Their Compilers") over the SSA program, a
single basic block: ops are visited in order, each keyed by what it computes — its kind, its function (the same
object, or the same module instance), its arguments with every value replaced by its number and every Python
constant by its type and exact value (``0.0`` and ``-0.0`` differ), and for a Network its equation with the index
names canonicalised (two lowerings of the same ``x @ w`` name their indices differently). An op whose key was seen
before is dropped and its readers read the earlier result — unless it is a program output (two outputs stay two
tensors). Then :meth:`tcomp.ir.Program.eliminate_dead_code` drops pure ops nobody reads.

Only deterministic, side-effect-free ops are merged: never a Call that writes in place (:func:`tcomp.ir.is_pure`,
plus Python's in-place operators), a random one (dropout, ``rand*``, ``bernoulli``, ... — aten ops tagged
``nondeterministic_seeded``), an uninitialised allocation (``empty*``), or a submodule in training mode (dropout draws
new masks on every call). A program that writes any tensor in place is left without CSE altogether (a write through
one alias would be seen through the other after merging; :func:`mutation` names the op).

Complexity: O(size of the program), one dictionary lookup per op.
"""
from __future__ import annotations

from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree

from tcomp.ir import ACC, Network, Op, Pointwise, Program, Value, format_op, substitute_inputs
from tcomp.ir.analysis import deterministic, mutation
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "cse"

class _Numbering:
    """Hashable keys of ops, with values replaced by their value numbers."""

    def __init__(self):
        self.number: dict[int, int] = {}

    def value(self, v: Value) -> int:
        return self.number.setdefault(id(v), len(self.number))

    def freeze(self, x: Any) -> Any:
        if isinstance(x, Value):
            return ("%", self.value(x))
        if x is ACC:
            return ("acc",)
        if isinstance(x, (tuple, list)):
            return (type(x).__name__, *(self.freeze(a) for a in x))
        if isinstance(x, dict):
            return ("dict", *sorted(((repr(k), self.freeze(v)) for k, v in x.items()), key=lambda kv: kv[0]))
        if isinstance(x, slice):
            return ("slice", self.freeze(x.start), self.freeze(x.stop), self.freeze(x.step))
        if isinstance(x, float):
            return ("float", x.hex())
        if isinstance(x, (bool, int, str, type(None), sympy.Basic, torch.dtype, torch.device, torch.memory_format,
                          torch.layout)) or x is Ellipsis:
            return (type(x).__name__, x)
        return ("object", id(x))  # functions, modules, anything else: the same object only

    def key(self, op: Op) -> tuple:
        out = (op.out.shape, op.out.dtype, op.out.stride_order)
        if isinstance(op, Network):
            canon: dict[str, int] = {}
            for dims in (*op.operand_dims, op.out_dims):
                for g in dims:
                    for i in g:
                        canon.setdefault(i, len(canon))

            def dims_key(dims):
                return tuple(tuple(canon[i] for i in g) for g in dims)

            epilogue = tuple((e.fn, self.freeze(e.target), self.freeze(e.args), self.freeze(e.kwargs))
                             for e in op.epilogue)
            return ("network", out, tuple(self.value(v) for v in op.operands),
                    tuple(dims_key(d) for d in op.operand_dims), dims_key(op.out_dims),
                    tuple(sorted((canon[i], s) for i, s in op.sizes.items() if i in canon)), epilogue)
        if isinstance(op, Pointwise):
            return ("pointwise", out, op.fn, self.freeze(op.target), self.freeze(op.args), self.freeze(op.kwargs))
        target = ("module", op.target, id(op.module)) if op.kind == "module" else self.freeze(op.target)
        return ("call", out, op.kind, target, self.freeze(op.args), self.freeze(op.kwargs))


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    report = PassReport(NAME)
    writer = mutation(new)
    merged = 0
    if writer is None:
        numbering = _Numbering()
        outputs = {id(v) for v in new.output_values()}
        seen: dict[tuple, Value] = {}
        alias: dict[int, Value] = {}
        ops: list[Op] = []
        for op in new.ops:
            if alias and any(id(v) in alias for v in op.inputs()):
                op = substitute_inputs(op, alias)
            key = numbering.key(op) if deterministic(op) else None
            earlier = seen.get(key) if key is not None else None
            if earlier is not None and id(op.out) not in outputs:  # two outputs stay two tensors
                alias[id(op.out)] = earlier
                merged += 1
                continue
            if key is not None:
                seen[key] = op.out
            ops.append(op)
        new.ops = ops
        if alias:
            new.output = _substitute(new.output, alias)
    else:
        report.notes.append(f"CSE skipped: the program writes in place ({format_op(writer)})")
    removed = new.eliminate_dead_code()
    report.changed = merged > 0 or removed > 0
    report.notes.append(f"{merged} common subexpression(s) merged, {removed} dead op(s) removed")
    report.details = {"merged": merged, "removed": removed}
    return new, report


def _substitute(output: Any, alias: dict[int, Value]) -> Any:
    return pytree.tree_map(lambda v: alias.get(id(v), v) if isinstance(v, Value) else v, output)


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
