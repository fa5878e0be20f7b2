"""Applying approximation options to a Program.

A factorized weight becomes a small Network of trainable factors merged into its site's Network
(:func:`tcomp.contract.merge.merge`), so the dense weight is never rebuilt and the contraction_order pass plans the
whole thing; a convolution becomes 1×1 Networks around a smaller convolution (Tucker-2, Kim et al. 2016) or
depthwise ones (CP, Lebedev et al. 2015); a linear layer becomes an int8 product (:mod:`tcomp.codegen.quantized`);
a reduced compute dtype is set on a Network and the dtypes that follow from it are propagated by running the program
on fake tensors (:func:`propagate_dtypes`).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcomp.codegen.emit import emit
from tcomp.codegen.folded import CachedFunction
from tcomp.codegen.quantized import int8_linear, pack_int8
from tcomp.contract.merge import merge
from tcomp.frontend.capture import propagate
from tcomp.ir import ACC, Call, EpilogueOp, Network, Op, Pointwise, Program, Value, substitute_inputs
from tcomp.ir.indices import IndexPool
from tcomp.ir.names import Names
from tcomp.ir.sites import Option, Site


def factor_name(weight: Value, k: int) -> str:
    return f"tcomp.{weight.name.replace('.', '_')}_f{k}"


def factor_values(weight: Value, fn, names: list[str] | None = None) -> list[Value]:
    """New trainable constants holding the factors of ``fn`` (float32 master copies)."""
    vals = []
    for k, f in enumerate(fn.factors):
        name = names[k] if names else factor_name(weight, k)
        p = nn.Parameter(f.detach().to(weight.dtype).contiguous().clone())
        vals.append(Value(name, tuple(int(s) for s in p.shape), p.dtype, kind="const", data=p, trainable=True))
    return vals


def _factor_producer(weight: Value, fn, values: list[Value]) -> Network:
    """The weight as a Network of its factors (the producer that fuse_networks.merge substitutes)."""
    pool = IndexPool()
    letters = {c: pool.new() for c in fn.sizes}
    dims = tuple(tuple((letters[c],) for c in idx) for idx in fn.factor_indices)
    out_dims = tuple(tuple(letters[c] for c in g) for g in fn.weight_indices)
    sizes = {letters[c]: s for c, s in fn.sizes.items() if any(c in g for g in fn.factor_indices)}
    out = Value(f"{weight.name}_factored", weight.shape, weight.dtype)
    return Network(out, tuple(values), dims, out_dims, sizes, origin=f"{fn.method} of {weight.name}")


def apply_structure(net: Network, site: Site, fn, values: list[Value]) -> Network:
    merged = merge(net, site.weight_pos, _factor_producer(site.weight, fn, values))
    if merged is None:
        raise ValueError(f"cannot substitute {fn.method} factors into {net.out.name}")
    return merged.replace(origin=f"{net.origin} [{fn.method}]", hint=None)


def conv_factor_values(call: Call, fn) -> list[Value]:
    """The factors of a conv rewrite as trainable constants, each stored in the layout its op reads:
    Tucker-2: ``P[c,r]``, core as a conv weight ``[s,r,kh,kw]``, ``Q[s,o]``; CP: ``B[c,r]``, the depthwise
    kernels ``[r,1,kh,1]`` and ``[r,1,1,kw]``, ``A[o,r]``."""
    weight = Value(f"{call.target}.weight", tuple(call.module.weight.shape), call.module.weight.dtype, kind="const")
    if fn.method == "tucker2":
        p, core, q = fn.factors
        tensors = [p, core.permute(1, 0, 2, 3), q]
    elif fn.method == "cp":
        a, b, h, w = fn.factors
        r = a.shape[1]
        tensors = [b, h.t().reshape(r, 1, -1, 1), w.t().reshape(r, 1, 1, -1), a]
    else:
        raise ValueError(f"unsupported conv rewrite {fn.method}")
    vals = []
    for k, t in enumerate(tensors):
        p = nn.Parameter(t.detach().to(weight.dtype).contiguous().clone())
        vals.append(Value(factor_name(weight, k), tuple(p.shape), p.dtype, kind="const", data=p, trainable=True))
    return vals


def apply_conv(call: Call, fn, values: list[Value]) -> list:
    """A k×k convolution rewritten as Tucker-2 (1×1 → smaller k×k → 1×1; Kim et al. 2016) or CP (1×1 → depthwise
    kh×1 → depthwise 1×kw → 1×1; Lebedev et al. 2015): IR ops whose last one produces the call's output value."""
    mod: nn.Conv2d = call.module
    x = call.args[0]
    name = call.out.name
    bias = None
    if mod.bias is not None:
        bias = Value(f"{call.target}.bias", tuple(mod.bias.shape), mod.bias.dtype, kind="const", data=mod.bias,
                     trainable=mod.bias.requires_grad)
    (sh, sw), (ph, pw), (dh, dw) = mod.stride, mod.padding, mod.dilation
    ops: list = []
    first = _pointwise_conv(f"{name}_in", x, values[0], ops)
    if fn.method == "tucker2":
        core = values[1]
        mid = Value(f"{name}_core", (x.shape[0], core.shape[0], *call.out.shape[2:]), call.out.dtype)
        ops.append(Call(mid, F.conv2d, "function", (first, core, None, mod.stride, mod.padding, mod.dilation, 1)))
    else:
        vert, horiz = values[1], values[2]
        r = vert.shape[0]
        h_out = Value(f"{name}_h", (x.shape[0], r, call.out.shape[2], x.shape[3]), call.out.dtype)
        ops.append(Call(h_out, F.conv2d, "function", (first, vert, None, (sh, 1), (ph, 0), (dh, 1), r)))
        mid = Value(f"{name}_w", (x.shape[0], r, *call.out.shape[2:]), call.out.dtype)
        ops.append(Call(mid, F.conv2d, "function", (h_out, horiz, None, (1, sw), (0, pw), (1, dw), r)))
    _pointwise_conv(name, mid, values[-1], ops, bias=bias, out=call.out,
                    weight_out_first=fn.method == "cp")
    return ops


def _pointwise_conv(name: str, x: Value, w: Value, ops: list, bias: Value | None = None, out: Value | None = None,
                    weight_out_first: bool = False) -> Value:
    """Append ``y[b,o,h,w] = Σ_c x[b,c,h,w]·W (+ bias)`` — a 1×1 conv as a Network — to ``ops``; W is stored
    ``[c,o]`` (or ``[o,c]`` with ``weight_out_first``)."""
    pool = IndexPool()
    b, c, h, ww, o = (pool.new() for _ in range(5))
    o_size = w.shape[0] if weight_out_first else w.shape[1]
    sizes = {b: x.shape[0], c: x.shape[1], h: x.shape[2], ww: x.shape[3], o: o_size}
    out = out or Value(name, (x.shape[0], o_size, x.shape[2], x.shape[3]), x.dtype)
    group = {i: ((i,) if sizes[i] != 1 else ()) for i in sizes}
    xdims = (group[b], group[c], group[h], group[ww])
    wdims = (group[o], group[c]) if weight_out_first else (group[c], group[o])
    odims = (group[b], group[o], group[h], group[ww])
    epi = ()
    if bias is not None:
        bview = Value(f"{name}_bias", (o_size, 1, 1), bias.dtype)
        ops.append(Network(bview, (bias,), ((group[o],),), (group[o], (), ()), {o: o_size}, origin="reshape"))
        epi = (EpilogueOp("add", torch.add, (ACC, bview)),)
    sizes = {k: v for k, v in sizes.items() if v != 1}
    ops.append(Network(out, (x, w), (xdims, wdims), odims, sizes, epi, origin="1x1 conv"))
    return out


def with_dtype(net: Network, dtype: torch.dtype) -> Network:
    """``net`` computing in ``dtype``; its result is of that dtype once :func:`propagate_dtypes` has run."""
    return net.replace(compute_dtype=dtype)


def propagate_dtypes(program: Program, example_inputs: tuple) -> Program:
    """Recompute every value's dtype after some Networks changed their compute dtype (a bf16 result makes the
    pointwise ops and calls after it bf16 too, until a promotion), by running the emitted program on fake tensors;
    outputs whose dtype changed are cast back to what the model returned."""
    before = {id(v): v.dtype for v in program.output_values()}
    gm = emit(program, dtypes_unknown=True)
    results = propagate(gm, example_inputs, fake=True)
    by_node = {node: name for name, node in gm.tcomp_nodes.items()}
    dtypes = {by_node[n]: r.dtype for n, r in results.items() if n in by_node and hasattr(r, "dtype")}
    new = program.copy()
    mapping: dict[int, Value] = {}
    for k, op in enumerate(new.ops):
        op = substitute_inputs(op, mapping) if mapping else op
        want = dtypes.get(op.out.name, op.out.dtype)
        if op.out.is_tensor and want != op.out.dtype:
            out = dataclasses.replace(op.out, dtype=want)
            mapping[id(op.out)] = out
            op = op.replace(out=out)
        new.ops[k] = op
    new.output = torch.utils._pytree.tree_map(lambda v: mapping.get(id(v), v) if isinstance(v, Value) else v,
                                              new.output)
    names = Names(new)
    for v in {id(v): v for v in new.output_values()}.values():  # a value returned twice is cast once
        orig = next((d for old_id, d in before.items() if mapping.get(old_id, None) is v), before.get(id(v)))
        if orig is not None and v.dtype != orig:
            cast = Value(names.fresh(f"{v.name}_{str(orig).replace('torch.', '')}"), v.shape, orig)
            new.ops.append(Pointwise(cast, "to", torch.Tensor.to, (v, orig)))
            new.output = torch.utils._pytree.tree_map(lambda x: cast if x is v else x, new.output)
    return new


def int8_bias(net: Network, site: Site) -> Value | None | bool:
    """Where ``net`` (a linear site) can run as :func:`tcomp.codegen.quantized.int8_linear` — a 2-D weight
    ``W[o,i]``, the activation's last dimension contracted, the output its other dimensions then ``o``, in float32,
    its epilogue nothing or one bias add of a constant ``[o]`` — the bias (None without one); else False."""
    if site.kind != "linear" or len(site.weight.shape) != 2 or net.compute_dtype is not None:
        return False
    w_dims, x_dims = net.operand_dims[site.weight_pos], net.operand_dims[site.activation_pos]
    x = net.operands[site.activation_pos]
    if x.dtype != torch.float32 or net.out.dtype != torch.float32 or not x_dims or x_dims[-1] != w_dims[1] \
            or tuple(net.out_dims) != (*x_dims[:-1], w_dims[0]):
        return False
    if not net.epilogue:
        return None
    (e,) = net.epilogue if len(net.epilogue) == 1 else (None,)
    if e is None or e.fn != "add" or e.kwargs or len(e.args) != 2 or e.args[0] is not ACC:
        return False
    bias = e.args[1]
    ok = isinstance(bias, Value) and bias.kind == "const" and bias.dtype == torch.float32 \
        and tuple(bias.shape) == (site.weight.shape[0],)
    return bias if ok else False


def int8_refused(example_inputs: tuple, training: bool) -> str | None:
    """Why no layer of this compilation runs as int8, or None: in training (an int8 weight gets no gradient), or off
    the CPU (``torch._int_mm``'s CUDA shape rules — rows > 16, sizes multiples of 8 — are not handled)."""
    if training:
        return "in training (an int8 weight gets no gradient)"
    if not all(t.device.type == "cpu" for t in example_inputs if isinstance(t, torch.Tensor)):
        return "off the CPU (torch._int_mm's CUDA shape rules are not handled)"
    return None


def apply_int8(net: Network, site: Site) -> list[Op]:
    """The linear site as an int8 product (:mod:`tcomp.codegen.quantized`): the weight's int8 values and scales a
    cached function of the float weight (recomputed when it changes), the product a call."""
    bias = int8_bias(net, site)
    if bias is False:
        raise ValueError(f"{net.out.name} does not have the shape of an int8 linear layer")
    o, i = site.weight.shape
    packed = Value(f"{net.out.name}_int8", (i + 4, o), torch.int8)
    fold = Call(packed, f"tcomp.int8_{site.weight.name.replace('.', '_')}", "module", (site.weight,), {},
                module=CachedFunction(pack_int8))
    x = net.operands[site.activation_pos]
    return [fold, Call(net.out, int8_linear, "function", (x, packed, bias))]


def site_replacement(op: Op, site: Site, option: Option) -> tuple[list[Op], list[Value]]:
    """The ops that run ``site`` with ``option`` (the last one produces the site's value) and the new trainable
    constants they read (factors, and the bias AFM moves the output mean into). The constants are created once
    per option and kept on it, so every program built with the option — recompilations for another dtype or mode
    included — trains the same parameters."""
    if site.kind == "conv":
        if option.values is None:
            option.values = conv_factor_values(op, option.factors)
        return apply_conv(op, option.factors, option.values), option.values
    net = op
    if option.kind == "int8":
        return apply_int8(net, site), []
    if option.factors is not None:
        if option.values is None:
            option.values = factor_values(site.weight, option.factors)
        values = option.values[:len(option.factors.factors)]
        net = apply_structure(net, site, option.factors, values)
        bias = option.params.get("bias")
        if bias is not None:
            if len(option.values) == len(values):
                option.values = option.values + [_bias_value(site, bias)]
            net = _with_bias(net, option.values[-1])
    if option.dtype is not None:
        net = with_dtype(net, option.dtype)
    return [net], list(option.values or [])


def apply_options(program: Program, chosen: dict[str, Option], example: tuple) -> Program:
    """The program with the chosen option in place at each site (factors as new trainable constants), dtypes
    propagated."""
    new = program.copy()
    for op in list(new.ops):
        option = chosen.get(op.out.name)
        if option is None:
            continue
        replacement, values = site_replacement(op, program.sites[op.out.name], option)
        for v in values:
            new.constants[v.name] = v
        at = new.ops.index(op)
        new.ops[at:at + 1] = replacement
    new.check()
    if any(o.dtype is not None for o in chosen.values()):
        new = propagate_dtypes(new, example)
    return new


def _bias_value(site: Site, bias: torch.Tensor) -> Value:
    p = torch.nn.Parameter(bias.detach().to(site.weight.dtype).clone())
    return Value(f"tcomp.{site.weight.name.replace('.', '_')}_bias", tuple(p.shape), p.dtype, kind="const", data=p,
                 trainable=True)


def _with_bias(net: Network, bias: Value) -> Network:
    """The network with its bias replaced (or added) by the value ``bias`` (AFM folds the output mean into it)."""
    rest = net.epilogue[1:] if net.epilogue and net.epilogue[0].fn == "add" else net.epilogue
    return net.replace(epilogue=(EpilogueOp("add", torch.add, (ACC, bias)),) + tuple(rest))
