"""Emit: a Program -> a ``torch.fx.GraphModule`` with readable code.

Emit decides nothing: it prints what the Program says. A planned Network becomes the plan's torch calls (views,
``mm``/``bmm``/``addmm``, broadcast multiplies, the final permute/reshape, the epilogue); an unplanned Network
becomes one ``torch.einsum``; Pointwise ops and Calls become the original torch calls.

Parameters and buffers keep their qualified names from the original model and are the *same* tensor objects, so
the compiled module's ``state_dict`` keys are the original ones (for the parameters it uses), it trains the original
parameters, and ``load_state_dict`` of an original checkpoint works. Constants introduced by passes (structured
factors, folded constants) live under the ``tcomp`` prefix.
"""
from __future__ import annotations

import functools
import math
import operator
from typing import Any

import sympy
import torch
import torch.fx as fx
import torch.nn as nn
import torch.utils._pytree as pytree

from tcomp.contract.plan import ContractionPlan, PairStep, fused_bias
from tcomp.ir import ACC, Call, Network, Pointwise, Program, Value, is_pure
from tcomp.ir.indices import canonical_names, einsum_equation
from tcomp.ir.ops import contraction_dtype, stored_dtype
from tcomp.ir.symbolic import B, SYMBOLS, Size, prod

from .folded import CachedFunction, Compose, FoldedConstant, same_float_dtype
from .kernels.dispatch import contract


class NotAffine(ValueError):
    """A size the emitted code cannot compute: not of degree at most one in each symbol, or in a symbol no input of
    the program carries (the input that did is unused); the program must be specialised."""


def emit(program: Program, *, fold_buffers: bool = False, dtypes_unknown: bool = False) -> fx.GraphModule:
    """Build the GraphModule; the submodules that Calls run are its submodules under their qualified names.

    ``dtypes_unknown``: the program's recorded activation dtypes may be stale (a selection just changed some
    Networks' compute dtype, and :func:`tcomp.approx.apply.propagate_dtypes` runs this program to find the new ones),
    so every Network casts each floating activation operand to the dtype it computes in, whatever is recorded.

    With ``fold_buffers`` a folded constant is read from a buffer (``tcomp.fold_N_value``) instead of calling its
    FoldedConstant, so that a graph compiler sees a plain tensor; the caller refreshes the buffers before each
    call (see :mod:`tcomp.codegen.inductor`) from ``gm.tcomp_folds``: (FoldedConstant, parameters, buffer) triples.
    """
    e = _Emitter(program, fold_buffers, dtypes_unknown)
    gm = e.run()
    gm.tcomp_folds = e.fold_buffers
    gm.tcomp_nodes = {name: node.name for name, node in e.named_nodes.items()}
    gm.tcomp_kernels = list(dict.fromkeys(e.kernels))
    return gm


_TAKES_LIKE = {"type_as", "expand_as", "view_as", "reshape_as", "to", "new_zeros", "new_ones", "new_empty",
               "new_full", "new_tensor"}  # methods that read a second tensor for its dtype, shape or device


def _floating_activation(v: Any) -> bool:
    """Whether ``v`` is a floating tensor computed by the program (not a constant)."""
    return isinstance(v, Value) and v.kind != "const" and v.is_tensor and v.dtype is not None and \
        v.dtype.is_floating_point


class _Emitter:
    def __init__(self, program: Program, fold_buffers: bool, dtypes_unknown: bool):
        self.p = program
        self.use_fold_buffers = fold_buffers
        self.dtypes_unknown = dtypes_unknown
        self.fold_buffers: list[tuple[FoldedConstant, list[torch.Tensor], torch.Tensor]] = []
        self.graph = fx.Graph()
        self.env: dict[int, fx.Node] = {}
        self.attrs: dict[str, Any] = {}
        self._symbol_nodes: dict[sympy.Symbol, fx.Node] = {}
        self._folds = 0
        self._casts: dict[tuple[str, torch.dtype], fx.Node] = {}
        self.kernels: list[tuple[str, tuple[str, ...]]] = []  # (equation, epilogue signature) of Triton steps
        self._epilogue_fused = False
        self._planned_layout: set[int] = set()  # ids of values whose strides a network plan chose (maybe permuted)
        self.reduced = any(isinstance(op, Network) and op.compute_dtype is not None for op in program.ops)

    def run(self) -> fx.GraphModule:
        self.named_nodes: dict[str, fx.Node] = {}  # value name -> the node that holds it (for calibration)
        self._named: set[fx.Node] = set()           # nodes that already carry an op's name
        for v in self.p.inputs:
            self.env[id(v)] = self.graph.placeholder(v.name)
            self.named_nodes[v.name] = self.env[id(v)]
        for op in self.p.ops:
            if isinstance(op, Network):
                node = self._network(op)
                self._planned_layout.add(id(op.out))
            elif isinstance(op, Pointwise):
                node = self.graph.call_function(op.target, self._args(op.args), self._args(op.kwargs))
                if any(id(a) in self._planned_layout for a in pytree.tree_leaves(op.args)):
                    self._planned_layout.add(id(op.out))  # a pointwise op keeps its input's strides
            else:
                node = self._call(op)
            if node.op != "placeholder" and node.op != "get_attr" and node not in self._named:
                node._rename(op.out.name)
            self._named.add(node)
            self.env[id(op.out)] = node
            self.named_nodes[op.out.name] = node
        outs = pytree.tree_map(self._output_arg, self.p.output)
        self.graph.output(outs)
        self.graph.lint()
        gm = fx.GraphModule(self.attrs, self.graph, class_name=_class_name(self.p.name))
        return gm

    # -- values --------------------------------------------------------------------------------------------------
    def node(self, v: Value) -> fx.Node:
        if id(v) not in self.env:
            if v.kind != "const":
                raise RuntimeError(f"{v.ref()} used before it is defined")
            self.attrs[v.name] = v.data
            self.env[id(v)] = self.graph.get_attr(v.name)
        return self.env[id(v)]

    def _args(self, x: Any) -> Any:
        return pytree.tree_map(lambda a: self.node(a) if isinstance(a, Value) else a, x)

    def _output_arg(self, x: Any) -> Any:
        if not isinstance(x, Value):
            return x
        n = self.node(x)
        if x.is_tensor and (x.stride_order is not None or id(x) in self._planned_layout):
            # a plan's (or layout's) strides are tcomp's choice: outputs come back contiguous (a no-op when they are)
            return self.graph.call_method("contiguous", (n,))
        return n

    def _call(self, op: Call) -> fx.Node:
        if self.use_fold_buffers and isinstance(op.module, CachedFunction) and not op.kwargs and \
                all(isinstance(a, Value) and a.kind == "const" for a in op.args):
            self.attrs[op.target] = op.module
            return self._buffered(op.target, op.module, [a.data for a in op.args])
        args, kwargs = self._unified_args(op) if self.reduced else (self._args(op.args), self._args(op.kwargs))
        if self.reduced and op.kind == "module" and isinstance(op.module, nn.modules.conv._ConvNd):
            # a convolution module computes in its weights' dtype: a reduced-precision activation reaching it is
            # cast to that (torch refuses the mixture), as a float32 Network casts its operands
            dtype = op.module.weight.dtype
            args = tuple(self.graph.call_method("to", (a, dtype)) if _floating_activation(v) else a
                         for v, a in zip(op.args, args))
        if op.kind == "module":
            self.attrs[op.target] = op.module
            return self.graph.call_module(op.target, args, kwargs)
        if op.kind == "method":
            return self.graph.call_method(op.target, args, kwargs)
        return self.graph.call_function(op.target, args, kwargs)

    def _unified_args(self, op: Call) -> tuple[Any, Any]:
        """``op``'s arguments with its floating activations passed through :func:`same_float_dtype` when it reads
        several: some Networks compute in a reduced dtype, and a call may meet their results and float32 ones."""
        floats = list({id(v): v for v in op.inputs() if _floating_activation(v)}.values())
        if len(floats) < 2 or not is_pure(op) or (op.kind == "method" and op.target in _TAKES_LIKE):
            # a write in place must reach its destination, and a tensor passed for its dtype or shape keeps them
            return self._args(op.args), self._args(op.kwargs)
        unified = self.graph.call_function(same_float_dtype, tuple(self.node(v) for v in floats))
        nodes = {id(v): self.graph.call_function(operator.getitem, (unified, k)) for k, v in enumerate(floats)}

        def arg(a):
            return (nodes.get(id(a)) or self.node(a)) if isinstance(a, Value) else a

        return pytree.tree_map(arg, op.args), pytree.tree_map(arg, op.kwargs)

    # -- sizes -----------------------------------------------------------------------------------------------------
    def symbol_node(self, sym: sympy.Symbol) -> fx.Node:
        """A node holding a symbol's value, read once after the inputs from a dim of an input that is it (or an
        integer multiple of it): ``batch = x.size(0)``, ``seq = ids.size(1)``."""
        if sym not in self._symbol_nodes:
            source = next(((pos, dim, 1) for (pos, dim), s in self.p.dynamic.items() if s == sym), None) or next(
                ((pos, dim, int(size / sym)) for pos, v in enumerate(self.p.inputs) for dim, size in
                 enumerate(v.shape or ()) if not isinstance(size, int) and (size / sym).is_Integer), None)
            if source is None:
                raise NotAffine(f"no input has a dim of size {sym}")
            pos, dim, multiple = source
            after = list(self.graph.nodes)[len(self.p.inputs) - 1] if self.p.inputs else next(iter(self.graph.nodes))
            with self.graph.inserting_after(after):
                node = self.graph.call_method("size", (self.node(self.p.inputs[pos]), dim))
                if multiple != 1:
                    with self.graph.inserting_after(node):
                        node = self.graph.call_function(operator.floordiv, (node, multiple))
            node._rename("batch" if sym is B else "seq")
            self._symbol_nodes[sym] = node
        return self._symbol_nodes[sym]

    def shape_args(self, sizes: list[Size]) -> list[Any]:
        """Reshape arguments: ints, ``-1`` for the one symbolic size, or an expression of the symbols."""
        symbolic = [k for k, s in enumerate(sizes) if not isinstance(s, int)]
        out: list[Any] = list(sizes)
        if len(symbolic) == 1:
            out[symbolic[0]] = -1
        else:
            for k in symbolic:
                out[k] = self._sym(sizes[k])
        return out

    def _sym(self, expr) -> Any:
        """Nodes computing a size: a polynomial of degree at most one in each symbol (``a*B + c``, ``B*S``)."""
        poly = sympy.Poly(expr, *SYMBOLS)
        if any(e > 1 for monomial in poly.monoms() for e in monomial):
            raise NotAffine(f"size {expr} is not affine in the batch and sequence length")
        q = math.lcm(*(int(c.q) for c in poly.coeffs()))
        constant = poly.coeff_monomial(1)
        terms = [(m, c) for m, c in poly.terms() if any(m)]
        if q != 1 and (len(terms) > 1 or not constant.is_Integer):  # one division of the whole numerator
            return self.graph.call_function(operator.floordiv, (self._sum(terms, constant, scale=q), int(q)))
        return self._sum(terms, constant, scale=1)

    def _sum(self, terms, constant, scale: int) -> Any:
        """``Σ coefficient·monomial + constant``, every coefficient times ``scale`` (an integer then); a single
        rational coefficient ``p/q`` with ``scale`` 1 is ``monomial·p // q``."""
        node: Any = None
        for monomial, coefficient in terms:
            term: Any = None
            for sym, e in zip(SYMBOLS, monomial):
                if e:
                    term = self.symbol_node(sym) if term is None else \
                        self.graph.call_function(operator.mul, (term, self.symbol_node(sym)))
            c = coefficient * scale
            if c != 1:
                if c.q == 1:
                    term = self.graph.call_function(operator.mul, (term, int(c)))
                else:
                    term = self.graph.call_function(operator.floordiv, (
                        self.graph.call_function(operator.mul, (term, int(c.p))), int(c.q)))
            node = term if node is None else self.graph.call_function(operator.add, (node, term))
        if constant * scale != 0:
            node = self.graph.call_function(operator.add, (node, int(constant * scale)))
        return node

    def reshape(self, node: fx.Node, current: list[Size], target: list[Size]) -> fx.Node:
        if list(current) == list(target):
            return node
        args = self.shape_args(list(target))
        return self.graph.call_method("reshape", (node, *args) if args else (node, ()))

    def permute(self, node: fx.Node, order: tuple[str, ...], target: tuple[str, ...]) -> fx.Node:
        if tuple(order) == tuple(target):
            return node
        perm = [order.index(i) for i in target]
        return self.graph.call_method("permute", (node, *perm))

    # -- networks --------------------------------------------------------------------------------------------------
    def _network(self, net: Network) -> fx.Node:
        self._epilogue_fused = False
        view = self._eager_view(net)
        if view is not None:
            return view
        if net.plan is None:
            node = self._einsum(net)
            order = net.flat_out_indices
        else:
            node, order = self._planned(net, net.plan)
        sizes = net.sizes
        node = self.permute(node, order, net.flat_out_indices)
        flat_shape = [sizes[i] for i in net.flat_out_indices]
        out_shape = list(net.out.shape)
        node = self.reshape(node, flat_shape, out_shape)
        for k, e in enumerate(net.epilogue):
            if self._epilogue_fused:
                break
            if k == 0 and net.plan is not None and net.kernel is None and \
                    fused_bias(net, net.plan.steps, net.plan.final):
                continue
            args = tuple(node if a is ACC else (self.value_in(a, net.compute_dtype) if isinstance(a, Value) else a)
                         for a in e.args)
            node = self.graph.call_function(e.target, args, self._args(e.kwargs))
        return node

    def _eager_view(self, net: Network) -> fx.Node | None:
        """A relabel as the one view eager would have made: ``reshape`` when the indices keep their order,
        ``permute`` when whole dims trade places; None for anything else.

        The general lowering (to the flat indices, permute, reshape to the output) gives the same elements, but the
        strides of size-1 dims can differ from eager's, and some kernels read them: torch 2.13's CPU BatchNorm2d
        backward is wrong on a ``[1, 5, 1, 6]`` view with strides ``(5, 1, 30, 5)`` where eager's ``permute``
        gives ``(30, 1, 30, 5)`` (found by the model fuzz, tests/fuzz)."""
        if not net.is_relabel or net.epilogue or net.kernel is not None:
            return None
        v = net.operands[0]
        dims_in, dims_out = net.operand_dims[0], net.out_dims
        perm = None
        if sorted(dims_in) == sorted(dims_out):
            size_one = [d for d, g in enumerate(dims_in) if not g]  # in order: any order is the same tensor
            perm = [dims_in.index(g) if g else size_one.pop(0) for g in dims_out]
        in_order = net.flat_operand_indices()[0] == net.flat_out_indices
        if perm is None and not in_order:
            return None
        node = self._operand(net, 0, flatten=False)
        if perm is not None and (net.origin == "permute" or not in_order):  # what the user wrote, if known
            return node if perm == sorted(perm) else self.graph.call_method("permute", (node, *perm))
        return self.reshape(node, list(v.shape), list(net.out.shape))

    def _operand(self, net: Network, k: int, flatten: bool = True) -> fx.Node:
        """Operand ``k`` in the dtype the network contracts in (:func:`tcomp.ir.ops.contraction_dtype`): a bf16
        layer's output read by a layer kept in fp32 is cast up; an integer operand is left alone. ``flatten``
        reshapes it to one dim per index (size-1 dims dropped, grouped dims split)."""
        v = net.operands[k]
        ix = net.flat_operand_indices()[k]
        dtype = contraction_dtype(net)
        if v.kind != "const" and not (v.dtype is not None and v.dtype.is_floating_point):
            dtype = None
        elif (dtype is None and self.dtypes_unknown and v.kind != "const" and net.out.dtype.is_floating_point
              and sum(o.kind != "const" for o in net.operands) > 1):
            # activations only, recorded dtypes stale: several contract in the recorded result dtype; a single one
            # (a relabel: reshape, permute) keeps its own, so that a bf16 region's dtype reaches what follows
            dtype = net.out.dtype
        node = self.value_in(v, dtype)
        return self.reshape(node, list(v.shape), [net.sizes[i] for i in ix]) if flatten else node

    def value_in(self, v: Value, dtype: torch.dtype | None) -> fx.Node:
        """``v``'s node, cast to ``dtype`` when it has another: a constant through a cached cast (once per weight
        update), an activation with ``.to`` (a no-op when it already is of that dtype). With ``dtypes_unknown`` an
        activation is cast whatever its recorded dtype says."""
        if dtype is None:
            return self.node(v)
        if v.kind == "const":
            if stored_dtype(v) == dtype:
                return self.node(v)
            key = (v.name, dtype)
            if key not in self._casts:  # with fold buffers, the float32 weight itself is not read by the graph
                name = f"tcomp.cast_{len(self._casts)}"
                cast = CachedFunction(functools.partial(torch.Tensor.to, dtype=dtype))
                self.attrs[name] = cast
                self._casts[key] = (self._buffered(name, cast, [v.data]) if self.use_fold_buffers else
                                    self.graph.call_module(name, (self.node(v),)))
            return self._casts[key]
        node = self.node(v)
        if v.dtype == dtype and not self.dtypes_unknown:
            return node
        return self.graph.call_method("to", (node, dtype))

    def _einsum(self, net: Network) -> fx.Node:
        ops = [self._operand(net, k) for k in range(len(net.operands))]
        if len(ops) == 1 and net.is_relabel:
            return ops[0] if net.flat_operand_indices()[0] == net.flat_out_indices else \
                self.permute(ops[0], net.flat_operand_indices()[0], net.flat_out_indices)
        equation = einsum_equation(net.flat_operand_indices(), net.flat_out_indices)
        return self.graph.call_function(torch.einsum, (equation, *ops))

    def _planned(self, net: Network, plan: ContractionPlan) -> tuple[fx.Node, tuple[str, ...]]:
        n = len(net.operands)
        packed = {s.lhs for s in plan.steps if s.pack_lhs} | {s.rhs for s in plan.steps if s.pack_rhs}
        once = _leaves_only_under_folds(plan, n) | packed
        terms: dict[int, tuple[fx.Node, tuple[str, ...]]] = {}
        for p in plan.preps:
            if p.term in once:
                continue
            node = self._operand(net, p.term)
            flat = net.flat_operand_indices()[p.term]
            if p.sum_out:
                node = self.graph.call_method("sum", (node, tuple(flat.index(i) for i in p.sum_out)))
            terms[p.term] = (node, p.indices)
        for s in plan.steps:
            if s.folded:
                continue  # contracted once, by the FoldedConstant its consumer asks for
            if s.kind == "gemm" and net.kernel == "triton":
                lhs = self._term(net, plan, terms, s.lhs, None)
                rhs = self._term(net, plan, terms, s.rhs, None)
                terms[s.out_id] = self._kernel_step(net, s, lhs, rhs, last=s is plan.steps[-1])
            elif s.kind == "gemm":
                lhs = self._term(net, plan, terms, s.lhs, s.batch + s.m + s.k if s.pack_lhs else None)
                rhs = self._term(net, plan, terms, s.rhs, s.batch + s.k + s.n if s.pack_rhs else None)
                terms[s.out_id] = (self._gemm(net, s, lhs, rhs, last=s is plan.steps[-1]), s.out)
            else:
                lhs = self._term(net, plan, terms, s.lhs, None)
                rhs = self._term(net, plan, terms, s.rhs, None)
                terms[s.out_id] = (self._mul(net, s, lhs, rhs), s.out)
        return self._term(net, plan, terms, plan.result, None)

    def _term(self, net: Network, plan: ContractionPlan, terms, tid: int, order: tuple[str, ...] | None):
        """A term's node and index order. Folded sub-trees and packed constants are materialised once by a
        FoldedConstant, directly in the order the consuming GEMM wants (``order``)."""
        if tid in terms:
            return terms[tid]
        n = len(net.operands)
        own = plan.steps[tid - n].out if tid >= n else plan.preps[tid].indices
        # the GEMM's order may include an index the term lacks (broadcast along it): _matrix expands that later
        order = own if order is None else tuple(i for i in order if i in own)
        leaves = sorted(_subtree_leaves(plan, tid, n))
        return self._fold(net, leaves, order), tuple(order)

    def _kernel_step(self, net: Network, s: PairStep, lhs, rhs, last: bool):
        """One pairwise step as a generated Triton kernel reading both terms in place; the last step writes the
        output order directly and takes the epilogue when the result needs no reshape."""
        (ln, lorder), (rn, rorder) = lhs, rhs
        out = net.flat_out_indices if last else s.out
        letters = canonical_names((lorder, rorder, out))  # the kernels take ASCII index letters
        eq = ",".join("".join(letters[i] for i in ix) for ix in (lorder, rorder)) + "->" + \
            "".join(letters[i] for i in out)
        spec, tensors = (), []
        if last and net.epilogue and len(net.flat_out_indices) == len(net.out_dims):
            found = kernel_epilogue(net)
            if found is not None:
                spec, values = found
                tensors = [self.value_in(v, net.compute_dtype) for v in values]
                self._epilogue_fused = True
        self.kernels.append((eq, tuple(k if k != "act" else a for k, a in spec)))
        return self.graph.call_function(contract, (eq, ln, rn, spec, *tensors)), tuple(out)

    def _matrix(self, node: fx.Node, order: tuple[str, ...], groups: list[tuple[str, ...]],
                sizes: dict[str, Size]) -> fx.Node:
        """``node`` permuted to the groups' index order and reshaped to one dim per group (a view where the
        plan found the layout allows it). A group index the term does not have is broadcast (``expand``)."""
        target = tuple(i for g in groups for i in g)
        present = tuple(i for i in target if i in order)
        node = self.permute(node, order, present)
        if present != target:
            node = self.reshape(node, [sizes[i] for i in present], [sizes[i] if i in order else 1 for i in target])
            node = self.graph.call_method("expand", (node, *[self._size(sizes[i]) for i in target]))
        return self.reshape(node, [sizes[i] for i in target], [prod(sizes[i] for i in g) for g in groups])

    def _size(self, s: Size):
        return s if isinstance(s, int) else self._sym(s)

    def _gemm(self, net: Network, s: PairStep, lhs, rhs, last: bool) -> fx.Node:
        sz = net.sizes
        (ln, lorder), (rn, rorder) = lhs, rhs
        lead = [s.batch] if s.batch else []
        a = self._matrix(ln, lorder, lead + [s.m, s.k], sz)
        b = self._matrix(rn, rorder, lead + [s.k, s.n], sz)
        if s.batch:
            out = self.graph.call_function(torch.bmm, (a, b))
        elif last and fused_bias(net, net.plan.steps, net.plan.final):
            bias = self.value_in(net.epilogue[0].args[1], net.compute_dtype)
            out = self.graph.call_function(torch.addmm, (bias, a, b))
        else:
            out = self.graph.call_function(torch.mm, (a, b))
        out_groups = lead + [s.m, s.n]
        return self.reshape(out, [prod(sz[i] for i in g) for g in out_groups], [sz[i] for i in s.out])

    def _mul(self, net: Network, s: PairStep, lhs, rhs) -> fx.Node:
        sz = net.sizes
        parts = []
        for node, order in (lhs, rhs):
            present = [i for i in s.out if i in order]
            node = self.permute(node, order, tuple(present))
            parts.append(self.reshape(node, [sz[i] for i in present], [sz[i] if i in order else 1 for i in s.out]))
        return self.graph.call_function(torch.mul, tuple(parts))

    def _fold(self, net: Network, leaves: list[int], order: tuple[str, ...]) -> fx.Node:
        flat = net.flat_operand_indices()
        eq = einsum_equation([flat[k] for k in leaves], order)
        shapes = [tuple(int(net.sizes[i]) for i in flat[k]) for k in leaves]
        name = f"tcomp.fold_{self._folds}"
        self._folds += 1
        fold = FoldedConstant(eq, shapes)
        if net.compute_dtype is not None:  # contract in the weights' precision, cache in the compute dtype
            cast = functools.partial(torch.Tensor.to, dtype=net.compute_dtype)
            fold = CachedFunction(Compose(cast, fold.compute, arity=len(leaves)))
        self.attrs[name] = fold
        if self.use_fold_buffers:
            return self._buffered(name, fold, [net.operands[k].data for k in leaves])
        return self.graph.call_module(name, tuple(self.node(net.operands[k]) for k in leaves))

    def _buffered(self, name: str, fn: CachedFunction, params: list[torch.Tensor]) -> fx.Node:
        """A cached function of parameters read from a buffer (``<name>_value``) that the caller refreshes before
        each call (see :mod:`tcomp.codegen.inductor`), so a graph compiler sees a plain tensor."""
        with torch.no_grad():
            value = fn(*params).clone()
        self.attrs[f"{name}_value"] = value
        self.fold_buffers.append((fn, params, value))
        return self.graph.get_attr(f"{name}_value")


def _subtree_leaves(plan: ContractionPlan, term: int, n: int) -> set[int]:
    if term < n:
        return {term}
    s = plan.steps[term - n]
    return _subtree_leaves(plan, s.lhs, n) | _subtree_leaves(plan, s.rhs, n)


def _leaves_only_under_folds(plan: ContractionPlan, n: int) -> set[int]:
    """Operands read only by folded steps (they need no per-call view)."""
    used_unfolded = {t for s in plan.steps if not s.folded for t in (s.lhs, s.rhs) if t < n}
    used_folded = {t for s in plan.steps if s.folded for t in (s.lhs, s.rhs) if t < n}
    return used_folded - used_unfolded


def _class_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return f"Tcomp{cleaned[:1].upper()}{cleaned[1:]}" if cleaned else "TcompModule"


_ACTIVATIONS = {"relu": "relu", "silu": "silu", "sigmoid": "sigmoid", "tanh": "tanh"}


def kernel_epilogue(net: Network) -> tuple[tuple, list[Value]] | None:
    """The network's epilogue as a kernel epilogue spec and its tensor operands, or None when some step has no
    kernel equivalent (it then runs in torch after the kernel)."""
    spec: list[tuple] = []
    tensors: list[Value] = []
    for e in net.epilogue:
        args = e.args
        if e.fn == "add" and len(args) == 2 and (args[0] is ACC) != (args[1] is ACC) and not e.kwargs:
            other = args[1] if args[0] is ACC else args[0]
            if not isinstance(other, Value) or not other.is_tensor:
                return None
            spec.append(("bias" if other.kind == "const" else "residual", len(tensors)))
            tensors.append(other)
        elif e.fn in ("mul", "div") and len(args) == 2 and args[0] is ACC and isinstance(args[1], (int, float)):
            spec.append(("scale", float(args[1]) if e.fn == "mul" else 1.0 / float(args[1])))
        elif e.fn == "gelu" and args == (ACC,):
            spec.append(("act", "gelu_tanh" if e.kwargs.get("approximate") == "tanh" else "gelu"))
        elif e.fn in _ACTIVATIONS and args == (ACC,) and not e.kwargs:
            spec.append(("act", _ACTIVATIONS[e.fn]))
        else:
            return None
    return tuple(spec), tensors
