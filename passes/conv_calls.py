"""conv_calls: a Network that is still exactly one unstrided 1×1 convolution runs as the convolution library's call.

Lowering turns an unstrided 1×1 convolution into a Network (``abcd,eb()()->aecd``) so that fuse_networks can merge
it with its neighbours and the approximate passes can factor its weight. One that nothing merged with is the same
product as before, and on NCHW data a GEMM needs the activation transposed (a copy on every call) or a ``bmm`` over
the batch with the weight broadcast, where oneDNN's (or cuDNN's) 1×1 convolution reads NCHW and NHWC in place. On
this project's CPU ResNet-50 — 33 unstrided 1×1 convolutions — ran 0.93–0.96× eager with them as Networks and
1.20× with them as convolution Calls (docs/benchmarks.md), which the layout pass then converts to channels-last
together with the k×k ones, without a conversion between the two kinds.

A Network is turned back when it has two operands, an activation ``[n, c, h, w]`` and a 4-D weight ``[o, c, 1, 1]``
(indices exactly a 1×1 convolution's), no reduced precision, no Triton kernel, and an epilogue that is empty or
only the bias add (``acc + b`` with ``b`` of shape ``[o, 1, 1]``: lowering's bias, or the one fold_bn makes); the
bias becomes the convolution's own. It runs after fold_bn (whose fold into a 1×1 Network it keeps) and before
epilogue and layout. Exact: the same product and sum. Complexity: one walk over the ops.
"""
from __future__ import annotations

import torch.nn.functional as F

from tcomp.ir import ACC, Call, Network, Program, Value
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.ir.names import Names

NAME = "conv_calls"


def lone_conv1x1(net: Network) -> tuple[Value, Value, Value | None] | None:
    """``(x, weight, bias)`` when ``net`` is exactly one unstrided 1×1 convolution (see the module docstring)."""
    if len(net.operands) != 2 or net.compute_dtype is not None or net.kernel is not None:
        return None
    x, w = net.operands
    x_dims, w_dims = net.operand_dims
    if x.shape is None or w.shape is None or len(x.shape) != 4 or len(w.shape) != 4 or tuple(w.shape[2:]) != (1, 1):
        return None
    if any(len(g) != 1 for g in x_dims) or len(w_dims) != 4 or w_dims[2:] != ((), ()):
        return None
    (n,), (c,), (h,), (width,) = x_dims
    if len(w_dims[0]) != 1 or w_dims[1] != (c,):
        return None
    o = w_dims[0][0]
    if net.out_dims != ((n,), (o,), (h,), (width,)) or len({n, c, h, width, o}) != 5:
        return None
    if x.dtype != w.dtype or x.dtype != net.out.dtype or not x.dtype.is_floating_point:
        return None
    bias = None
    if net.epilogue:
        step = net.epilogue[0]
        if len(net.epilogue) != 1 or step.fn != "add" or len(step.args) != 2 or step.args[0] is not ACC \
                or step.kwargs or not isinstance(step.args[1], Value) \
                or tuple(step.args[1].shape or ()) != (w.shape[0], 1, 1) or step.args[1].dtype != x.dtype:
            return None
        bias = step.args[1]
    return x, w, bias


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    names = Names(new)
    producers = new.producers()
    ops = []
    count = 0
    for op in new.ops:
        parts = lone_conv1x1(op) if isinstance(op, Network) else None
        if parts is None:
            ops.append(op)
            continue
        x, w, bias = parts
        if bias is not None:
            bias = _one_dimensional(bias, producers, names, ops)
        ops.append(Call(op.out, F.conv2d, "function", (x, w, bias)))
        count += 1
    new.ops = ops
    new.eliminate_dead_code()  # the bias views nobody reads any more
    report = PassReport(NAME, changed=bool(count))
    report.notes.append(f"{count} lone 1×1 convolution network(s) run as conv2d (read in place in NCHW or NHWC)")
    return new, report


def _one_dimensional(bias: Value, producers: dict, names: Names, ops: list) -> Value:
    """The ``[o]`` bias behind a ``[o, 1, 1]`` one: the value it relabels, or a reshape of it."""
    producer = producers.get(id(bias))
    if isinstance(producer, Network) and producer.is_relabel and not producer.epilogue \
            and tuple(producer.operands[0].shape or ()) == (bias.shape[0],):
        return producer.operands[0]
    flat = Value(names.fresh(f"{bias.name}_flat"), (bias.shape[0],), bias.dtype)
    ops.append(Call(flat, "reshape", "method", (bias, (-1,))))
    return flat


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
