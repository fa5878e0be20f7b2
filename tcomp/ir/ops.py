"""The ops of the tensor-network IR and the values they read and produce (SSA).

- :class:`Network` — a contraction of operands with named indices (einsum semantics). Each operand dimension is a
  *group* of indices (row-major), so a reshape that splits or merges dimensions is expressed by the groups rather
  than by a separate op; an empty group is a dimension of size 1. A Network may carry an epilogue (bias add,
  pointwise chain), a reduced compute dtype and, once planned, a contraction plan (see :mod:`tcomp.contract.plan`).
- :class:`Pointwise` — an elementwise function (fusable into a Network's epilogue).
- :class:`Call` — anything else, kept as the original torch call (a function, a method, or a submodule).

Every op produces one :class:`Value`. Ops are immutable in practice: passes replace them (``op.replace(...)``,
:func:`substitute_inputs`) rather than mutate them.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
import torch.utils._pytree as pytree

from .symbolic import Size, prod

Dims = tuple[tuple[str, ...], ...]

DTYPE_SHORT = {
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
        return f"{DTYPE_SHORT.get(self.dtype, str(self.dtype))}[{dims}]"

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
    """One step of a Network's epilogue: ``acc = target(*args, **kwargs)``, ``ACC`` in args the result so far."""

    fn: str
    target: Callable
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def values(self) -> list[Value]:
        return [a for a in pytree.tree_leaves((self.args, self.kwargs)) if isinstance(a, Value)]


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
        return callable_name(self.target)

    def replace(self, **changes) -> "Call":
        return dataclasses.replace(self, **changes)


Op = Union[Network, Pointwise, Call]




def callable_name(fn: Any) -> str:
    """How a Call's target prints: ``aten.mm``, ``F.gelu``, ``torch.cat``, ``module.function``."""
    if isinstance(fn, torch._ops.OpOverload):
        return f"aten.{fn._opname}" if fn.namespace == "aten" else str(fn)
    mod = getattr(fn, "__module__", "") or ""
    name = getattr(fn, "__name__", repr(fn))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or mod == "builtins" or mod == "_operator":
        return f"torch.{name}" if mod.startswith("torch") else name
    return f"{mod}.{name}" if mod else name


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


def contraction_dtype(net: Network) -> torch.dtype | None:
    """The dtype a Network contracts in: its reduced precision; else its floating constants' (the weights' —
    an activation from a layer now in bf16 is cast to them); else, when its floating activations are recorded
    with different dtypes, their promotion; else None (operands as they come). Not the result's dtype: an
    epilogue may cast that (``lin(x).double()``)."""
    if net.compute_dtype is not None:
        return net.compute_dtype
    for v in net.operands:
        if v.kind == "const":
            dtype = stored_dtype(v)
            if dtype is not None and dtype.is_floating_point:
                return dtype
    floats = {v.dtype for v in net.operands if v.dtype is not None and v.dtype.is_floating_point}
    return functools.reduce(torch.promote_types, sorted(floats, key=str)) if len(floats) > 1 else None


def stored_dtype(const: Value) -> torch.dtype | None:
    """A constant's dtype as stored (its tensor's), which a pass may not have recorded in the Value."""
    return const.data.dtype if isinstance(const.data, torch.Tensor) else const.dtype
