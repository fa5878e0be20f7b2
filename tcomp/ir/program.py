"""The tensor-network IR's Program: inputs, constants (the model's parameters and buffers, by qualified name) and a
topologically ordered list of ops (:mod:`tcomp.ir.ops`) in SSA form.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import sympy
import torch.utils._pytree as pytree

from .ops import Op, Value, is_pure, substitute_inputs
from .printer import format_op, format_program
from .sites import Site
from .symbolic import Point


@dataclass
class Program:
    """A traced model as a tensor-network program.

    ``output`` is a pytree (tuple, dict, ...) whose leaves are Values or Python constants. ``dynamic`` maps the
    (input position, dim) pairs whose size is a symbol (the batch ``B``, the sequence ``S``) to it; it is empty when
    the program is specialised to its example shapes. ``example`` is each symbol's value in the example inputs:
    where layouts and plans were decided. ``sites`` is where the approximate passes keep the sites they found and the
    options they proposed for the select pass (:mod:`tcomp.ir.sites`).
    """

    name: str
    inputs: list[Value]
    constants: dict[str, Value]
    ops: list[Op]
    output: Any
    dynamic: dict[tuple[int, int], sympy.Symbol] = field(default_factory=dict)
    example: Point = field(default_factory=dict)
    sites: dict[str, Site] | None = None  # approximation sites found, with their options; None: not looked for

    # -- structure -------------------------------------------------------------------------------------------
    def copy(self) -> "Program":
        """A new Program sharing ops and values (passes replace ops rather than mutate them)."""
        return dataclasses.replace(self, inputs=list(self.inputs), constants=dict(self.constants),
                                   ops=list(self.ops),
                                   sites=None if self.sites is None else dict(self.sites))

    def output_values(self) -> list[Value]:
        return [v for v in pytree.tree_leaves(self.output) if isinstance(v, Value)]

    def users(self) -> dict[int, list[Op]]:
        """id(value) -> the ops that read it (the program output is not an op; see :meth:`is_output`)."""
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs():
                lst = out.setdefault(id(v), [])
                if not lst or lst[-1] is not op:
                    lst.append(op)
        return out

    def producers(self) -> dict[int, Op]:
        return {id(op.out): op for op in self.ops}

    def is_output(self, value: Value) -> bool:
        return any(v is value for v in self.output_values())

    def replace_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (ops and the output) read ``new`` instead. Mutates ops in place only by
        replacing them with updated copies."""
        for k, op in enumerate(self.ops):
            if any(v is old for v in op.inputs()):
                self.ops[k] = substitute_inputs(op, {id(old): new})
        self.output = pytree.tree_map(lambda v: new if v is old else v, self.output)

    def eliminate_dead_code(self) -> int:
        """Drop side-effect-free ops whose results nobody reads; returns how many were dropped."""
        removed = 0
        while True:
            users = self.users()
            keep = [op for op in self.ops if not is_pure(op) or users.get(id(op.out)) or self.is_output(op.out)]
            if len(keep) == len(self.ops):
                return removed
            removed += len(self.ops) - len(keep)
            self.ops = keep

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.constants.values()
        for op in self.ops:
            yield op.out

    def check(self) -> None:
        """Verify SSA and topological order; raise ValueError naming the first bad op."""
        defined = {id(v) for v in self.inputs} | {id(v) for v in self.constants.values()}
        for op in self.ops:
            for v in op.inputs():
                if id(v) not in defined:
                    raise ValueError(f"{format_op(op)} reads {v.ref()} before it is defined")
            if id(op.out) in defined:
                raise ValueError(f"{op.out.ref()} is defined twice")
            defined.add(id(op.out))
        for v in self.output_values():
            if id(v) not in defined:
                raise ValueError(f"the output {v.ref()} is not defined")

    # -- printing --------------------------------------------------------------------------------------------
    def format(self, annotate: Callable[[Op], str] | None = None) -> str:
        """The printed form (:mod:`tcomp.ir.printer`); ``annotate(op)`` adds text after each op's type."""
        return format_program(self, annotate)

    def __str__(self) -> str:
        return self.format()


def subprogram(ops: list[Op], example: Point, name: str = "site") -> Program:
    """``ops`` as a program of their own: the values they read but do not define become its inputs (or constants),
    its output is the last op's."""
    defined = {id(op.out) for op in ops}
    inputs: dict[int, Value] = {}
    constants: dict[str, Value] = {}
    for op in ops:
        for v in op.inputs():
            if id(v) in defined or id(v) in inputs or v.name in constants:
                continue
            if v.kind == "const":
                constants[v.name] = v
            else:
                inputs[id(v)] = Value(v.name, v.shape, v.dtype, kind="input", stride_order=v.stride_order)
    new_ops = [substitute_inputs(op, inputs) for op in ops]
    dynamic = {(k, d): size for k, v in enumerate(inputs.values()) for d, size in enumerate(v.shape or ())
               if isinstance(size, sympy.Symbol)}
    return Program(name, list(inputs.values()), constants, new_ops, new_ops[-1].out, dynamic=dynamic,
                   example=dict(example))
