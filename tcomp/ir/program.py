"""The tensor-network IR: a Program of Networks, Pointwise ops and Calls in SSA form.

A :class:`Program` has inputs, constants (the model's parameters and buffers, by qualified name) and a
topologically ordered list of ops. Every op produces one :class:`Value`.

- :class:`Network` — a contraction of operands with named indices (einsum semantics). Each operand dimension is a
  *group* of indices (row-major), so a reshape that splits or merges dimensions is expressed by the groups rather
  than by a separate op; an empty group is a dimension of size 1. A Network may carry an epilogue (bias add,
  pointwise chain) and, once planned, a contraction plan (see :mod:`tcomp.plan`).
- :class:`Pointwise` — an elementwise function (fusable into a Network's epilogue).
- :class:`Call` — anything else, kept as the original torch call (a function, a method, or a submodule).

The printed form (:meth:`Program.format`) is tcomp's debugging tool and what ``tcomp inspect`` shows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import torch
import torch.utils._pytree as pytree

from .symbolic import Size, prod

Dims = tuple[tuple[str, ...], ...]

_DTYPE_SHORT = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
    torch.int64: "i64", torch.int32: "i32", torch.int8: "i8", torch.uint8: "u8", torch.bool: "bool",
    torch.complex64: "c64", torch.complex128: "c128",
}


@dataclass(eq=False)
class Value:
    """An SSA value: a tensor (``shape`` is not None) or another Python object (sizes, tuples, ...).

    ``kind`` is "input", "const" (a parameter or buffer of the model, held in ``data``) or "op".
    ``stride_order`` is the memory order of a tensor's dimensions, outermost first, when it is known not to be
    contiguous (a permuted view); None means contiguous.
    """

    name: str
    shape: tuple[Size, ...] | None
    dtype: torch.dtype | None
    kind: str = "op"
    data: Any = None
    trainable: bool = False
    stride_order: tuple[int, ...] | None = None

    @property
    def is_tensor(self) -> bool:
        return self.shape is not None

    @property
    def numel(self) -> Size:
        return prod(self.shape)

    def type_str(self) -> str:
        if not self.is_tensor:
            return "obj"
        dims = ",".join(str(s) for s in self.shape)
        return f"{_DTYPE_SHORT.get(self.dtype, str(self.dtype))}[{dims}]"

    def ref(self) -> str:
        return self.name if self.kind in ("input", "const") else f"%{self.name}"

    def __repr__(self) -> str:
        return f"Value({self.ref()}: {self.type_str()})"


class _Acc:
    """Placeholder for the running result in an epilogue step's arguments."""

    def __repr__(self) -> str:
        return "acc"


ACC = _Acc()


@dataclass(frozen=True, eq=False)
class EpilogueOp:
    """One step of a Network's epilogue: ``acc = target(*args, **kwargs)`` where ``ACC`` in args is the result so far."""

    fn: str
    target: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def values(self) -> list[Value]:
        return [a for a in pytree.tree_leaves((self.args, self.kwargs)) if isinstance(a, Value)]

    def format(self) -> str:
        return f"{self.fn}({_format_args(self.args, self.kwargs)})"


@dataclass(eq=False)
class Network:
    """``out = epilogue(einsum(operands))`` with grouped indices; see the module docstring."""

    out: Value
    operands: tuple[Value, ...]
    operand_dims: tuple[Dims, ...]
    out_dims: Dims
    sizes: dict[str, Size]
    epilogue: tuple[EpilogueOp, ...] = ()
    plan: Any = None
    origin: str = ""
    hint: tuple[tuple[int, int], ...] | None = None  # a contraction tree worth considering (e.g. the pre-fusion one)
    compute_dtype: torch.dtype | None = None  # reduced precision: operands cast to it, result of that dtype
    kernel: str | None = None                 # "triton": GEMM steps run as generated Triton kernels

    def __post_init__(self):
        _check_network(self)

    def inputs(self) -> list[Value]:
        vals = list(self.operands)
        for e in self.epilogue:
            vals.extend(e.values())
        return vals

    @property
    def indices(self) -> list[str]:
        seen: dict[str, None] = {}
        for dims in (*self.operand_dims, self.out_dims):
            for g in dims:
                for i in g:
                    seen.setdefault(i, None)
        return list(seen)

    def flat_operand_indices(self) -> list[tuple[str, ...]]:
        return [tuple(i for g in dims for i in g) for dims in self.operand_dims]

    @property
    def flat_out_indices(self) -> tuple[str, ...]:
        return tuple(i for g in self.out_dims for i in g)

    def equation(self) -> str:
        """The einsum equation over the (ungrouped) indices."""
        ins = ",".join("".join(ix) for ix in self.flat_operand_indices())
        return f"{ins}->{''.join(self.flat_out_indices)}"

    def grouped_equation(self) -> str:
        """The equation with each operand dimension's group shown: ``b(hd),oi->...``; ``()`` is a size-1 dim."""

        def fmt(dims: Dims) -> str:
            return "".join(g[0] if len(g) == 1 else "(" + "".join(g) + ")" for g in dims)

        return ",".join(fmt(d) for d in self.operand_dims) + "->" + fmt(self.out_dims)

    @property
    def is_relabel(self) -> bool:
        """A single operand and nothing summed: a reshape / permute / view."""
        return len(self.operands) == 1 and set(self.flat_operand_indices()[0]) == set(self.flat_out_indices) and \
            len(self.flat_operand_indices()[0]) == len(set(self.flat_operand_indices()[0]))

    def replace(self, **changes) -> "Network":
        return dataclasses.replace(self, **changes)


@dataclass(eq=False)
class Pointwise:
    """An elementwise op: ``out = target(*args, **kwargs)``; ``fn`` is its canonical name (e.g. "gelu", "add")."""

    out: Value
    fn: str
    target: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def inputs(self) -> list[Value]:
        return [a for a in pytree.tree_leaves((self.args, self.kwargs)) if isinstance(a, Value)]

    def replace(self, **changes) -> "Pointwise":
        return dataclasses.replace(self, **changes)


@dataclass(eq=False)
class Call:
    """Any other op, kept as the original call. ``kind`` is "function", "method" (target is the method name) or
    "module" (target is the submodule's qualified name; ``module`` holds the submodule itself)."""

    out: Value
    target: Any
    kind: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    module: Any = None

    def inputs(self) -> list[Value]:
        return [a for a in pytree.tree_leaves((self.args, self.kwargs)) if isinstance(a, Value)]

    @property
    def target_name(self) -> str:
        if self.kind == "module":
            return f"{self.target}:{type(self.module).__name__}"
        if self.kind == "method":
            return f".{self.target}"
        return _callable_name(self.target)

    def replace(self, **changes) -> "Call":
        return dataclasses.replace(self, **changes)


Op = Union[Network, Pointwise, Call]


@dataclass
class Program:
    """A traced model as a tensor-network program.

    ``output`` is a pytree (tuple, dict, ...) whose leaves are Values or Python constants. ``batch_inputs`` lists
    (input position, dim) pairs whose size is the symbolic batch ``B``; it is empty when the program is specialised
    to its example shapes.
    """

    name: str
    inputs: list[Value]
    constants: dict[str, Value]
    ops: list[Op]
    output: Any
    batch_inputs: list[tuple[int, int]] = field(default_factory=list)
    example_batch: int | None = None
    sites: dict = field(default_factory=dict)  # approximation sites and their options (tcomp.candidates)

    # -- structure -------------------------------------------------------------------------------------------
    def copy(self) -> "Program":
        """A new Program sharing ops and values (passes replace ops rather than mutate them)."""
        return dataclasses.replace(self, inputs=list(self.inputs), constants=dict(self.constants),
                                   ops=list(self.ops), sites=dict(self.sites))

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
    def format(self, costs: bool = True) -> str:
        from tcomp.cost.model import op_cost  # cost depends on the IR, not the other way round

        ins = ", ".join(f"{v.name}: {v.type_str()}" for v in self.inputs)
        outs = ", ".join(v.type_str() for v in self.output_values())
        lines = [f"program {self.name}({ins}) -> {outs}"]
        rows = []
        for op in self.ops:
            text = format_op(op)
            info = op.out.type_str()
            if costs and isinstance(op, Network):
                c = op_cost(op)
                info += f"   {c.flops_str()} flop"
            rows.append((text, info))
            if isinstance(op, Network) and op.plan is not None:
                for line in op.plan.format(op).splitlines():
                    rows.append(("    " + line, ""))
        width = min(max((len(t) for t, _ in rows), default=0), 100)
        for text, info in rows:
            lines.append(f"  {text.ljust(width)}   {info}".rstrip())
        lines.append(f"  return {_format_args((self.output,), {})}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# -- helpers ---------------------------------------------------------------------------------------------------

def _callable_name(fn: Any) -> str:
    if isinstance(fn, torch._ops.OpOverload):
        return f"aten.{fn._opname}" if fn.namespace == "aten" else str(fn)
    mod = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__name__", repr(fn))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or mod == "builtins" or mod == "_operator":
        return f"torch.{name}" if mod.startswith("torch") else name
    return f"{mod}.{name}" if mod else name


def _format_arg(a: Any) -> str:
    if isinstance(a, Value):
        return a.ref()
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_format_arg(x) for x in a)
        return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k}: {_format_arg(v)}" for k, v in a.items()) + "}"
    if isinstance(a, torch.dtype):
        return _DTYPE_SHORT.get(a, str(a))
    if isinstance(a, float):
        return f"{a:.6g}"
    return repr(a)


def _format_args(args: tuple, kwargs: dict) -> str:
    parts = [_format_arg(a) for a in args] + [f"{k}={_format_arg(v)}" for k, v in kwargs.items()]
    return ", ".join(parts)


def format_op(op: Op) -> str:
    """One line of the printed program for ``op`` (without the type/cost columns)."""
    lhs = f"%{op.out.name} ="
    if isinstance(op, Network):
        operands = ", ".join(v.ref() for v in op.operands)
        epi = "".join(f" ; {e.format()}" for e in op.epilogue)
        kind = "relabel" if op.is_relabel and not op.epilogue else "network"
        if op.compute_dtype is not None:
            kind += f"[{_DTYPE_SHORT.get(op.compute_dtype, op.compute_dtype)}]"
        if op.kernel is not None:
            kind += f"@{op.kernel}"
        return f"{lhs} {kind} {op.grouped_equation()} ({operands}){epi}"
    if isinstance(op, Pointwise):
        return f"{lhs} pointwise {op.fn}({_format_args(op.args, op.kwargs)})"
    return f"{lhs} call {op.target_name}({_format_args(op.args, op.kwargs)})"


_INPLACE_OPERATORS = {"iadd", "isub", "imul", "itruediv", "ipow", "iand", "ior", "ixor", "imatmul"}


def is_pure(op: Op) -> bool:
    """Whether dropping ``op`` (when its result is unused) cannot change anything else: Networks always; Pointwise
    ops and Calls unless they write in place (``inplace=True``, ``out=``, ``operator.iadd`` and its kin, a trailing
    ``_``, a mutable aten schema) or are a stateful module in training mode (batch norm updates its statistics)."""
    if isinstance(op, Network):
        return True
    if op.kwargs.get("inplace") is True or op.kwargs.get("out") is not None:  # `out=None`: a default, filled in
        return False
    if isinstance(op, Pointwise):
        return getattr(op.target, "__name__", "") not in _INPLACE_OPERATORS
    if op.kind == "module":
        return not (op.module.training and any(True for _ in op.module.buffers(recurse=True)))
    name = op.target if op.kind == "method" else getattr(op.target, "__name__", "")
    if isinstance(name, str) and name.endswith("_") and not name.endswith("__"):
        return False
    if isinstance(op.target, torch._ops.OpOverload):
        return not op.target._schema.is_mutable
    return True


def substitute_inputs(op: Op, mapping: dict[int, Value]) -> Op:
    """A copy of ``op`` reading ``mapping[id(v)]`` instead of each input ``v`` found in the mapping."""

    def sub(x):
        return mapping.get(id(x), x) if isinstance(x, Value) else x

    if isinstance(op, Network):
        epi = tuple(dataclasses.replace(e, args=pytree.tree_map(sub, e.args), kwargs=pytree.tree_map(sub, e.kwargs))
                    for e in op.epilogue)
        return op.replace(operands=tuple(sub(v) for v in op.operands), epilogue=epi)
    return op.replace(args=pytree.tree_map(sub, op.args), kwargs=pytree.tree_map(sub, op.kwargs))


def _check_network(n: Network) -> None:
    if len(n.operands) != len(n.operand_dims):
        raise ValueError(f"network {n.out.name}: {len(n.operands)} operands but {len(n.operand_dims)} index tuples")
    for v, dims in zip(n.operands, n.operand_dims):
        if v.shape is None or len(v.shape) != len(dims):
            raise ValueError(f"network {n.out.name}: operand {v.ref()} has shape {v.shape} but index groups {dims}")
        for size, g in zip(v.shape, dims):
            if prod(n.sizes[i] for i in g) != size:
                raise ValueError(f"network {n.out.name}: operand {v.ref()} dim of size {size} does not match "
                                 f"indices {g} of sizes {[n.sizes[i] for i in g]}")
    out_flat = [i for g in n.out_dims for i in g]
    if len(out_flat) != len(set(out_flat)):
        raise ValueError(f"network {n.out.name}: repeated output index in {n.out_dims}")
    present = {i for dims in n.operand_dims for g in dims for i in g}
    if not set(out_flat) <= present:
        raise ValueError(f"network {n.out.name}: output indices {set(out_flat) - present} appear in no operand")
