"""Lowering: a captured torch.fx graph (torch-level or aten-level) -> a :class:`~tcomp.ir.Program`.

Contractions become :class:`Network` ops: ``nn.Linear``/``F.linear``/``addmm``, ``matmul``/``@``/``mm``/``bmm``,
``einsum``, a multiply of two tensors (Hadamard or outer product by broadcasting), ``sum`` over dimensions, a 1×1
``conv2d``, and the shape ops that only relabel indices (view/reshape/flatten/unflatten/squeeze/unsqueeze,
transpose/permute/t, ``.T``) — the latter as single-operand Networks that the fuse_networks pass later merges into
their neighbours. Elementwise ops become :class:`Pointwise`; everything else stays a :class:`Call` of the original
function, method or submodule.

One rule per op family, looked up by the fx node's target; a rule returns None to fall back to a Call (e.g. a
reshape with no common refinement, an einsum with a repeated index in one operand).
"""
from __future__ import annotations

import operator
import string
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._pytree as pytree

from tcomp.ir import ACC, Call, Dims, EpilogueOp, Network, Pointwise, Program, Value
from tcomp.ir.indices import IndexPool, einsum_equation, refine
from tcomp.ir.symbolic import Size, as_size

from . import data_dependence
from .capture import Captured

aten = torch.ops.aten


class LoweringError(RuntimeError):
    pass


def lower(cap: Captured, name: str) -> Program:
    return _Lowerer(cap, name).run()


# -- pointwise table ---------------------------------------------------------------------------------------------
# canonical name -> the targets (torch functions, Tensor method names, aten overload packets) that compute it.

_POINTWISE_TARGETS: dict[str, list[Any]] = {
    "relu": [torch.relu, F.relu, "relu", aten.relu],
    "gelu": [F.gelu, "gelu", aten.gelu],
    "silu": [F.silu, "silu", aten.silu],
    "sigmoid": [torch.sigmoid, F.sigmoid, "sigmoid", aten.sigmoid],
    "tanh": [torch.tanh, F.tanh, "tanh", aten.tanh],
    "exp": [torch.exp, "exp", aten.exp],
    "log": [torch.log, "log", aten.log],
    "sqrt": [torch.sqrt, "sqrt", aten.sqrt],
    "rsqrt": [torch.rsqrt, "rsqrt", aten.rsqrt],
    "abs": [torch.abs, "abs", aten.abs],
    "neg": [torch.neg, operator.neg, "neg", aten.neg],
    "cos": [torch.cos, "cos", aten.cos],
    "sin": [torch.sin, "sin", aten.sin],
    "add": [torch.add, operator.add, "add", aten.add],
    "sub": [torch.sub, operator.sub, "sub", aten.sub],
    "div": [torch.div, operator.truediv, "div", aten.div],
    "pow": [torch.pow, operator.pow, "pow", aten.pow],
    "hardtanh": [F.hardtanh, aten.hardtanh],
    "leaky_relu": [F.leaky_relu, aten.leaky_relu],
    "elu": [F.elu, aten.elu],
    "softplus": [F.softplus, aten.softplus],
    "mish": [F.mish, aten.mish],
    "hardswish": [F.hardswish, aten.hardswish],
    "relu6": [F.relu6],
}
_POINTWISE_MODULES: dict[type, tuple[str, Callable, Callable[[nn.Module], dict]]] = {
    nn.ReLU: ("relu", F.relu, lambda m: {}),
    nn.GELU: ("gelu", F.gelu, lambda m: {} if m.approximate == "none" else {"approximate": m.approximate}),
    nn.SiLU: ("silu", F.silu, lambda m: {}),
    nn.Sigmoid: ("sigmoid", torch.sigmoid, lambda m: {}),
    nn.Tanh: ("tanh", torch.tanh, lambda m: {}),
    nn.ReLU6: ("relu6", F.relu6, lambda m: {}),
    nn.Hardswish: ("hardswish", F.hardswish, lambda m: {}),
    nn.Mish: ("mish", F.mish, lambda m: {}),
    nn.LeakyReLU: ("leaky_relu", F.leaky_relu, lambda m: {"negative_slope": m.negative_slope}),
}


def _pointwise_name(target: Any) -> str | None:
    return next((name for name, targets in _POINTWISE_TARGETS.items() if _is(target, *targets)), None)


def _is(target: Any, *candidates: Any) -> bool:
    """``target`` is one of the candidates (an aten packet matches all its overloads)."""
    for c in candidates:
        if target is c or (isinstance(c, str) and target == c):
            return True
        if isinstance(c, torch._ops.OpOverloadPacket) and isinstance(target, torch._ops.OpOverload) \
                and target.overloadpacket is c:
            return True
    return False


_LINEAR = (F.linear, torch._C._nn.linear, aten.linear)
_MATMUL = (torch.matmul, operator.matmul, "matmul", "__matmul__", aten.matmul)
_MM = (torch.mm, "mm", aten.mm)
_BMM = (torch.bmm, "bmm", aten.bmm)
_ADDMM = (torch.addmm, "addmm", aten.addmm)
_EINSUM = (torch.einsum, aten.einsum)
_TENSORDOT = (torch.tensordot, aten.tensordot)
_BILINEAR = (F.bilinear, torch.bilinear, aten.bilinear)
_MUL = (torch.mul, operator.mul, "mul", "__mul__", aten.mul)
_SUM = (torch.sum, "sum", aten.sum)
_VIEW = ("view", "reshape", torch.reshape, aten.view, aten.reshape, aten._unsafe_view, "flatten", torch.flatten,
         aten.flatten, "unflatten", torch.unflatten, aten.unflatten, "squeeze", torch.squeeze, aten.squeeze,
         "unsqueeze", torch.unsqueeze, aten.unsqueeze, "view_as", "reshape_as", "contiguous", aten.clone,
         aten.contiguous, "expand_as")
_PERMUTE = ("permute", torch.permute, aten.permute)
_TRANSPOSE = ("transpose", torch.transpose, aten.transpose, "swapaxes", torch.swapaxes, "t", torch.t, aten.t,
              "movedim", torch.movedim, aten.movedim)
_CONV2D = (F.conv2d, torch.conv2d, aten.conv2d)
_DROPOUT = (F.dropout, torch.dropout, aten.dropout)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout)


class _Lowerer:
    def __init__(self, cap: Captured, name: str):
        self.cap = cap
        self.gm = cap.gm
        self.env: dict[fx.Node, Any] = {}
        self.ops: list = []
        self.constants: dict[str, Value] = {}
        self.inputs: list[Value] = []
        self.name = name

    # -- driver ------------------------------------------------------------------------------------------------
    def run(self) -> Program:
        output = None
        from_data = data_dependence.analyse(self.gm.graph).values  # never folded, even where recorded as a constant
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                v = Value(node.name, node.meta.get("tcomp_shape"), node.meta.get("tcomp_dtype"), kind="input")
                self.inputs.append(v)
                self.env[node] = v
            elif node.op == "get_attr":
                self.env[node] = self._get_attr(node)
            elif node.op == "output":
                output = pytree.tree_map(self._arg, node.args[0])
            elif node not in from_data and _is_constant(node.meta.get("tcomp_value", _MISSING)):
                self.env[node] = node.meta["tcomp_value"]  # a shape computation that is constant at every size probed
            else:
                self.env[node] = self._lower_node(node)
        return Program(name=self.name, inputs=self.inputs, constants=self.constants, ops=self.ops, output=output,
                       dynamic=dict(self.cap.dynamic), example=dict(self.cap.example))

    def _arg(self, a: Any) -> Any:
        if isinstance(a, slice) and any(isinstance(p, fx.Node) for p in (a.start, a.stop, a.step)):
            return self._slice(a)
        return self.env[a] if isinstance(a, fx.Node) else a

    def _slice(self, a: slice) -> Any:
        """A slice whose bounds are computed (``pos[:x.shape[1]]``): pytree does not look inside slices, so a bound
        that is a Value becomes an op of its own, ``slice(start, stop, step)``, that the indexing op reads."""
        parts = tuple(self._arg(p) for p in (a.start, a.stop, a.step))
        if not any(isinstance(p, Value) for p in parts):
            return slice(*parts)
        name = f"slice_{sum(isinstance(op, Call) and op.target is slice for op in self.ops)}"
        return self._emit(Call(Value(name, None, None), slice, "function", parts, {}))

    def _get_attr(self, node: fx.Node) -> Any:
        obj = _fetch(self.gm, node.target)
        if isinstance(obj, torch.Tensor):
            return self.const(node.target, obj)
        return obj

    def const(self, qualname: str, tensor: torch.Tensor) -> Value:
        if qualname not in self.constants:
            self.constants[qualname] = Value(
                qualname, tuple(int(s) for s in tensor.shape), tensor.dtype, kind="const", data=tensor,
                trainable=isinstance(tensor, nn.Parameter) and tensor.requires_grad)
        return self.constants[qualname]

    def _out_value(self, node: fx.Node) -> Value:
        return Value(node.name, node.meta.get("tcomp_shape"), node.meta.get("tcomp_dtype"))

    def _lower_node(self, node: fx.Node) -> Any:
        args = pytree.tree_map(self._arg, tuple(node.args))
        kwargs = pytree.tree_map(self._arg, dict(node.kwargs))
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            result = self._lower_module(node, mod, args, kwargs)
            if result is not None:
                return result
            return self._emit(Call(self._out_value(node), node.target, "module", args, kwargs, module=mod))
        target = node.target
        if node.op == "call_function" or node.op == "call_method":
            try:
                result = self._lower_call(node, target, args, kwargs)
            except _Fallback:
                result = None
            if result is not None:
                return result
            kind = "method" if node.op == "call_method" else "function"
            if kind == "method" and target == "view":
                target = "reshape"  # identical values; reshape also accepts the views tcomp makes of its results
            return self._emit(Call(self._out_value(node), target, kind, args, kwargs))
        raise LoweringError(f"unsupported fx node kind {node.op!r} ({node.format_node()})")

    def _emit(self, op) -> Value:
        self.ops.append(op)
        return op.out

    # -- modules ---------------------------------------------------------------------------------------------------
    def _lower_module(self, node: fx.Node, mod: nn.Module, args: tuple, kwargs: dict) -> Any:
        if isinstance(mod, _IDENTITY_MODULES) and not (isinstance(mod, nn.Dropout) and mod.training and mod.p > 0):
            return args[0]
        if isinstance(mod, nn.Linear) and _is_tensor(args[0]):
            w = self.const(f"{node.target}.weight", mod.weight)
            b = self.const(f"{node.target}.bias", mod.bias) if mod.bias is not None else None
            return self._linear(node, args[0], w, b, origin=f"{node.target} (Linear)")
        if isinstance(mod, nn.Conv2d) and _is_tensor(args[0]) and _is_pointwise_conv(mod):
            w = self.const(f"{node.target}.weight", mod.weight)
            b = self.const(f"{node.target}.bias", mod.bias) if mod.bias is not None else None
            return self._conv1x1(node, args[0], w, b, origin=f"{node.target} (Conv2d 1x1)")
        spec = _POINTWISE_MODULES.get(type(mod))
        if spec is not None and _is_tensor(args[0]):
            fn, target, kw = spec
            return self._emit(Pointwise(self._out_value(node), fn, target, (args[0],), kw(mod)))
        return None

    # -- functions and methods ----------------------------------------------------------------------------------
    def _lower_call(self, node: fx.Node, t: Any, args: tuple, kwargs: dict) -> Any:
        if node.meta.get("tcomp_shape") is None:
            return None  # the result is not a tensor
        if _is(t, *_LINEAR):
            x, w = args[0], _get(args, kwargs, 1, "weight")
            b = _get(args, kwargs, 2, "bias")
            if _all_tensors(x, w) and (b is None or _is_tensor(b)):
                return self._linear(node, x, w, b, origin="linear")
            return None
        if _is(t, *_ADDMM):
            bias, m1, m2 = args[:3]
            if kwargs.get("beta", 1) != 1 or kwargs.get("alpha", 1) != 1 or not _all_tensors(bias, m1, m2):
                return None
            return self._matmul(node, m1, m2, epilogue_bias=bias, origin="addmm")
        if _is(t, *_MATMUL, *_MM, *_BMM):
            if len(args) != 2 or not _all_tensors(*args):
                return None
            return self._matmul(node, args[0], args[1], origin=_short(t))
        if _is(t, *_EINSUM):
            eq, ops = args[0], args[1:]
            if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
                ops = tuple(ops[0])
            if not isinstance(eq, str):  # the sublist form: einsum(a, [0, 1], b, [1, 2], [0, 2])
                eq, ops = _sublist_equation(args)
            if eq is None or not _all_tensors(*ops):
                return None
            return self._einsum(node, eq, ops)
        if _is(t, *_TENSORDOT):
            a, b = args[0], args[1]
            if not _all_tensors(a, b):
                return None
            eq = _tensordot_equation(len(a.shape), len(b.shape), _get(args, kwargs, 2, "dims", 2))
            return None if eq is None else self._einsum(node, eq, (a, b))
        if _is(t, *_BILINEAR):
            x1, x2, w = args[0], args[1], _get(args, kwargs, 2, "weight")
            bias = _get(args, kwargs, 3, "bias")
            if not _all_tensors(x1, x2, w) or (bias is not None and not _is_tensor(bias)):
                return None
            epilogue = (EpilogueOp("add", torch.add, (ACC, bias)),) if bias is not None else ()
            return self._einsum(node, "...i,kij,...j->...k", (x1, w, x2), epilogue)
        if _is(t, *_MUL):
            a, b = args[0], args[1]
            if _all_tensors(a, b):
                return self._broadcast_product(node, [a, b], origin="mul")
            return self._pointwise(node, "mul", t, args, kwargs)
        if _is(t, *_SUM):
            return self._sum(node, args, kwargs)
        if _is(t, *_PERMUTE):
            x = args[0]
            dims = args[1:] if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int)) else args[1]
            dims = kwargs.get("dims", dims)
            return self._permute(node, x, [d % len(x.shape) for d in dims])
        if _is(t, *_TRANSPOSE):
            return self._transpose(node, t, args, kwargs)
        if t is getattr and len(args) == 2 and args[1] in ("T", "mT") and _is_tensor(args[0]):
            x = args[0]
            n = len(x.shape)
            perm = list(range(n))[::-1] if args[1] == "T" else list(range(n - 2)) + [n - 1, n - 2]
            return self._permute(node, x, perm)
        if _is(t, *_VIEW):
            if _is(t, aten.clone) and kwargs.get("memory_format") not in (None, torch.contiguous_format):
                return None
            if not _is_tensor(args[0]):
                return None
            return self._reshape(node, args[0])
        if _is(t, *_CONV2D):
            x, w = args[0], _get(args, kwargs, 1, "weight")
            b = _get(args, kwargs, 2, "bias")
            conv_args = dict(stride=_get(args, kwargs, 3, "stride", 1), padding=_get(args, kwargs, 4, "padding", 0),
                             dilation=_get(args, kwargs, 5, "dilation", 1), groups=_get(args, kwargs, 6, "groups", 1))
            if _all_tensors(x, w) and len(w.shape) == 4 and w.shape[2:] == (1, 1) and _trivial_conv(**conv_args):
                return self._conv1x1(node, x, w, b, origin="conv2d 1x1")
            return None
        if _is(t, *_DROPOUT):
            training = _get(args, kwargs, 2, "training", True)
            p = _get(args, kwargs, 1, "p", 0.5)
            if training is False or p == 0:
                return args[0]
            return None
        name = _pointwise_name(t)
        if name is not None and any(_is_tensor(a) for a in args):
            return self._pointwise(node, name, t, args, kwargs)
        return None

    def _pointwise(self, node, name, target, args, kwargs) -> Value:
        if isinstance(target, str):  # a Tensor method: emit the torch function of the same name
            fn = getattr(torch, target, None) or getattr(F, target)
        else:
            fn = target
        return self._emit(Pointwise(self._out_value(node), name, fn, tuple(args), dict(kwargs)))

    # -- contraction builders -------------------------------------------------------------------------------------
    def _network(self, node: fx.Node, operands: list[Value], dims: list[Dims], out_dims: Dims,
                 sizes: dict[str, Size], epilogue: tuple = (), origin: str = "") -> Value:
        out = self._out_value(node)
        return self._emit(Network(out, tuple(operands), tuple(dims), out_dims, sizes, epilogue, origin=origin))

    def _linear(self, node, x: Value, w: Value, b: Value | None, origin: str) -> Value:
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        xd = _label(x.shape, pool, sizes)
        o, i = _label(w.shape, pool, sizes)
        xd = xd[:-1] + (i,)
        out_dims = xd[:-1] + (o,)
        if _prod_dims(x.shape[-1:]) != _prod_dims(w.shape[-1:]):
            raise _Fallback
        epi = (EpilogueOp("add", torch.add, (ACC, b)),) if b is not None else ()
        return self._network(node, [x, w], [xd, (o, i)], out_dims, sizes, epi, origin)

    def _conv1x1(self, node, x: Value, w: Value, b: Value | None, origin: str) -> Value:
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        nb, c, h, ww = _label(x.shape, pool, sizes)
        o, c2, _, _ = _label(w.shape, pool, sizes)
        wd = (o, c, (), ())
        epi = ()
        if b is not None:
            bias_view = self._relabel_reshape(f"{node.name}_bias", b, (b.shape[0], 1, 1))
            epi = (EpilogueOp("add", torch.add, (ACC, bias_view)),)
        return self._network(node, [x, w], [(nb, c, h, ww), wd], (nb, o, h, ww), sizes, epi, origin)

    def _matmul(self, node, a: Value, b: Value, epilogue_bias: Value | None = None, origin: str = "") -> Value:
        """``torch.matmul`` semantics: 1-D operands, right-aligned broadcasting of batch dimensions."""
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        ad = list(_label(a.shape, pool, sizes))
        bd = list(_label(b.shape, pool, sizes))
        k_b = 0 if len(bd) == 1 else len(bd) - 2
        if a.shape[-1] != b.shape[k_b]:
            raise _Fallback
        rename = {g[0]: h[0] for g, h in [(bd[k_b], ad[-1])] if g and h}
        a_batch, a_batch_shape = ad[:-2], list(a.shape[:-2])
        b_batch, b_batch_shape = (bd[:-2], list(b.shape[:-2])) if len(bd) > 1 else ([], [])
        n = max(len(a_batch), len(b_batch))
        out_batch: list[tuple[str, ...]] = []
        for d in range(-n, 0):
            ga = a_batch[d] if -d <= len(a_batch) else ()
            gb = b_batch[d] if -d <= len(b_batch) else ()
            if ga and gb:
                if a_batch_shape[d] != b_batch_shape[d]:
                    raise _Fallback
                rename[gb[0]] = ga[0]
            out_batch.append(ga or gb)
        bd = [tuple(rename.get(i, i) for i in g) for g in bd]
        out_dims = out_batch + ([ad[-2]] if len(ad) > 1 else []) + ([bd[-1]] if len(bd) > 1 else [])
        epi = (EpilogueOp("add", torch.add, (ACC, epilogue_bias)),) if epilogue_bias is not None else ()
        sizes = _used_sizes(sizes, [ad, bd, out_dims])
        return self._network(node, [a, b], [tuple(ad), tuple(bd)], tuple(out_dims), sizes, epi, origin)

    def _einsum(self, node, eq: str, ops: tuple, epilogue: tuple[EpilogueOp, ...] = ()) -> Value:
        eq = eq.replace(" ", "")
        if "->" in eq:
            lhs, rhs = eq.split("->")
        else:
            lhs, rhs = eq, None
        terms = lhs.split(",")
        if len(terms) != len(ops):
            raise _Fallback
        pool = IndexPool(set(c for c in eq if c.isalpha()))
        sizes: dict[str, Size] = {}
        dims: list[Dims] = []
        n_ell = max((len(v.shape) - (len(t) - 3) for t, v in zip(terms, ops) if "..." in t), default=0)
        ell_names = [pool.new() for _ in range(n_ell)]
        ell_sizes: list[Size] = [1] * n_ell
        for term, v in zip(terms, ops):
            letters = []
            if "..." in term:
                pre, post = term.split("...")
                k = len(v.shape) - len(pre) - len(post)
                letters = list(pre) + [("...", n_ell - k + j) for j in range(k)] + list(post)
            else:
                letters = list(term)
            if len(letters) != len(v.shape):
                raise _Fallback
            flat = [x for x in letters if isinstance(x, str)]
            if len(flat) != len(set(flat)):
                raise _Fallback  # a repeated index inside one operand (a diagonal)
            groups = []
            for x, s in zip(letters, v.shape):
                if isinstance(x, tuple):
                    j = x[1]
                    if s == 1:
                        groups.append(())
                        continue
                    if ell_sizes[j] not in (1, s):
                        raise _Fallback
                    ell_sizes[j] = s
                    groups.append((ell_names[j],))
                    sizes[ell_names[j]] = as_size(s)
                elif s == 1:
                    groups.append(())
                    sizes.setdefault(x, 1)
                else:
                    if x in sizes and sizes[x] not in (1, s):
                        raise _Fallback
                    sizes[x] = as_size(s)
                    groups.append((x,))
            dims.append(tuple(groups))
        if rhs is None:
            counts: dict[str, int] = {}
            for t in terms:
                for c in t.replace("...", ""):
                    counts[c] = counts.get(c, 0) + 1
            rhs = ("..." if n_ell else "") + "".join(sorted(c for c, n in counts.items() if n == 1))
        out_letters: list = []
        if "..." in rhs:
            pre, post = rhs.split("...")
            out_letters = list(pre) + [("...", j) for j in range(n_ell)] + list(post)
        else:
            out_letters = list(rhs)
        out_dims = []
        for x in out_letters:
            if isinstance(x, tuple):
                out_dims.append((ell_names[x[1]],) if ell_sizes[x[1]] != 1 else ())
            else:
                out_dims.append((x,) if sizes.get(x, 1) != 1 else ())
        out_shape = node.meta.get("tcomp_shape")
        if out_shape is None or len(out_shape) != len(out_dims):
            raise _Fallback
        # size-1 indices never appear in groups; drop them from the table
        sizes = _used_sizes(sizes, [*dims, out_dims])
        return self._network(node, list(ops), dims, tuple(out_dims), sizes, epilogue, origin="einsum")

    def _broadcast_product(self, node, vals: list[Value], origin: str) -> Value:
        """Elementwise product with broadcasting: a Network with no summed index (Hadamard / outer product)."""
        out_shape = node.meta["tcomp_shape"]
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        out_dims = _label(out_shape, pool, sizes)
        dims = []
        for v in vals:
            offset = len(out_shape) - len(v.shape)
            groups = []
            for d, s in enumerate(v.shape):
                if s == 1:
                    groups.append(())
                elif s == out_shape[offset + d]:
                    groups.append(out_dims[offset + d])
                else:
                    raise _Fallback
            dims.append(tuple(groups))
        return self._network(node, vals, dims, out_dims, sizes, (), origin)

    def _sum(self, node, args, kwargs) -> Value | None:
        x = args[0]
        if not _is_tensor(x) or kwargs.get("dtype") is not None:
            return None
        dim = _get(args, kwargs, 1, "dim", None)
        keepdim = _get(args, kwargs, 2, "keepdim", False)
        if isinstance(dim, bool) or (len(args) > 1 and isinstance(args[1], torch.dtype)):
            return None
        n = len(x.shape)
        if dim is None or dim == []:
            dims_set = set(range(n))
        else:
            dims_set = {d % n for d in ([dim] if isinstance(dim, int) else dim)}
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        xd = _label(x.shape, pool, sizes)
        out_dims = tuple(() if d in dims_set else xd[d] for d in range(n) if keepdim or d not in dims_set)
        return self._network(node, [x], [xd], out_dims, sizes, (), origin="sum")

    # -- relabels ---------------------------------------------------------------------------------------------------
    def _permute(self, node, x: Value, perm: list[int]) -> Value:
        pool = IndexPool()
        sizes: dict[str, Size] = {}
        xd = _label(x.shape, pool, sizes)
        return self._network(node, [x], [xd], tuple(xd[p] for p in perm), sizes, (), origin="permute")

    def _transpose(self, node, t, args, kwargs) -> Value | None:
        x = args[0]
        n = len(x.shape)
        if _is(t, "t", torch.t, aten.t):
            perm = list(range(n))[::-1]
        elif _is(t, "movedim", torch.movedim, aten.movedim):
            src, dst = _get(args, kwargs, 1, "source"), _get(args, kwargs, 2, "destination")
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            src = [s % n for s in src]
            dst = [d % n for d in dst]
            rest = [d for d in range(n) if d not in src]
            perm = [None] * n
            for s, d in zip(src, dst):
                perm[d] = s
            it = iter(rest)
            perm = [p if p is not None else next(it) for p in perm]
        else:
            d0, d1 = _get(args, kwargs, 1, "dim0"), _get(args, kwargs, 2, "dim1")
            perm = list(range(n))
            perm[d0 % n], perm[d1 % n] = perm[d1 % n], perm[d0 % n]
        return self._permute(node, x, perm)

    def _reshape(self, node, x: Value) -> Value | None:
        out_shape = node.meta["tcomp_shape"]
        result = _reshape_dims(x.shape, out_shape)
        if result is None:
            return None
        xd, out_dims, sizes = result
        return self._network(node, [x], [xd], out_dims, sizes, (), origin="reshape")

    def _relabel_reshape(self, name: str, x: Value, shape: tuple) -> Value:
        xd, out_dims, sizes = _reshape_dims(x.shape, shape)
        out = Value(name, tuple(shape), x.dtype)
        return self._emit(Network(out, (x,), (xd,), out_dims, sizes, origin="reshape"))


_MISSING = object()


def _sublist_equation(args: tuple) -> tuple[str | None, tuple]:
    """``einsum(a, [0, 1], b, [1, 2], [0, 2])`` as ``("ab,bc->ac", (a, b))``; (None, ()) when it is not one."""
    items = list(args)
    out = items.pop() if len(items) % 2 else None
    ops, subs = tuple(items[0::2]), items[1::2]

    def term(sub) -> str | None:
        if not isinstance(sub, (list, tuple)):
            return None
        letters = ["..." if i is Ellipsis else string.ascii_letters[i] if isinstance(i, int) and 0 <= i < 52
                   else None for i in sub]
        return None if None in letters else "".join(letters)

    terms = [term(sub) for sub in subs]
    rhs = term(out) if out is not None else ""
    if not ops or None in terms or rhs is None:
        return None, ()
    return ",".join(terms) + ("->" + rhs if out is not None else ""), ops


def _tensordot_equation(na: int, nb: int, dims: Any) -> str | None:
    """The einsum equation of ``tensordot(a, b, dims)`` for operands of ranks ``na`` and ``nb``: ``dims`` an int
    (the last ``dims`` dims of ``a`` against the first of ``b``) or a pair of dim lists; None for anything else."""
    if isinstance(dims, int) and not isinstance(dims, bool):
        if not 0 <= dims <= min(na, nb):
            return None
        da, db = list(range(na - dims, na)), list(range(dims))
    elif isinstance(dims, (list, tuple)) and len(dims) == 2:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
        if len(da) != len(db) or not all(isinstance(d, int) for d in da + db):
            return None
        if not all(-na <= d < na for d in da) or not all(-nb <= d < nb for d in db):
            return None
        da, db = [d % na for d in da], [d % nb for d in db]
    else:
        return None
    if len(set(da)) != len(da) or len(set(db)) != len(db):
        return None
    a = [f"a{d}" for d in range(na)]
    b = [f"b{d}" for d in range(nb)]
    for x, y in zip(da, db):
        b[y] = a[x]
    out = [a[d] for d in range(na) if d not in da] + [b[d] for d in range(nb) if d not in db]
    try:
        return einsum_equation([a, b], out)
    except ValueError:  # more distinct indices than torch.einsum's 52 letters
        return None


def _is_constant(value: Any) -> bool:
    """A Python value known at compile time: numbers, bools, and non-empty tuples/lists of them (not symbolic).

    None is excluded: calls made for their side effects return it.
    """
    if isinstance(value, (bool, int, float, str, torch.dtype)):
        return True
    if isinstance(value, (tuple, list)) and value:
        return all(_is_constant(v) for v in value)
    return False


class _Fallback(Exception):
    """Raised inside a rule: keep the op as a Call."""


# -- small helpers -------------------------------------------------------------------------------------------------

def _reshape_dims(in_shape, out_shape) -> tuple[Dims, Dims, dict[str, Size]] | None:
    r = refine(in_shape, out_shape)
    if r is None:
        return None
    pieces, in_ranges, out_ranges = r
    pool = IndexPool()
    names = [pool.new() for _ in pieces]
    sizes = dict(zip(names, pieces))
    xd = tuple(tuple(names[k] for k in rg) for rg in in_ranges)
    od = tuple(tuple(names[k] for k in rg) for rg in out_ranges)
    return xd, od, sizes


def _label(shape, pool: IndexPool, sizes: dict[str, Size]) -> Dims:
    """A fresh index per dimension (an empty group for a size-1 dimension)."""
    dims = []
    for s in shape:
        if s == 1:
            dims.append(())
        else:
            i = pool.new()
            sizes[i] = as_size(s)
            dims.append((i,))
    return tuple(dims)


def _used_sizes(sizes: dict[str, Size], dim_lists) -> dict[str, Size]:
    used = {i for dims in dim_lists for g in dims for i in g}
    return {k: v for k, v in sizes.items() if k in used}


def _prod_dims(shape) -> Size:
    p: Size = 1
    for s in shape:
        p = as_size(p * s)
    return p


def _is_tensor(v: Any) -> bool:
    return isinstance(v, Value) and v.is_tensor


def _all_tensors(*vs: Any) -> bool:
    return all(_is_tensor(v) for v in vs)


def _get(args: tuple, kwargs: dict, pos: int, name: str, default: Any = None) -> Any:
    if len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def _trivial_conv(stride, padding, dilation, groups) -> bool:
    def ones(x, v):
        return all(s == v for s in (x if isinstance(x, (tuple, list)) else (x,)))

    return ones(stride, 1) and (padding == "valid" or ones(padding, 0)) and groups == 1


def _is_pointwise_conv(m: nn.Conv2d) -> bool:
    return m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding in ((0, 0), "valid") and m.groups == 1 \
        and m.padding_mode == "zeros"


def _short(t: Any) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _fetch(root: nn.Module, qualname: str) -> Any:
    obj: Any = root
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
