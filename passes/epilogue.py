"""epilogue: attach the elementwise ops that follow a Network to the Network's epilogue.

A Network's epilogue is the chain of elementwise steps applied to its result before anyone reads it (``acc`` is the
result so far). It is what tcomp's Triton kernels fuse into a GEMM's store on GPU
(:class:`tcomp.codegen.kernels.Epilogue`: bias, residual, activations, the output cast), and its leading bias add is
what a plan fuses into ``addmm`` (:func:`tcomp.contract.plan.fused_bias`) — attaching steps after it keeps that fusion.
This is producer–consumer fusion of elementwise ops into a contraction, as in XLA's and TVM's operator fusion (Chen et
al. 2018, "TVM", §3: an injective/elementwise consumer fuses into a complex-out-fusable producer).

While a Network's result has exactly one reader and is not a program output, that reader is attached when it is

- an elementwise function of the result alone: an activation (relu, gelu, silu, sigmoid, tanh, ...) or any other
  unary Pointwise op, with its keyword arguments (``approximate="tanh"``; ``inplace=False`` is dropped, so that
  the step reads as the kernels' epilogue steps do);
- an elementwise binary op with another tensor (the residual add ``acc + x``, ``x - acc``, ...) or with a scalar
  (``acc + 1``), whose result has the Network's shape and dtype (the other operand broadcasts into it);
- a cast to another dtype (``.to(dtype)``, ``.float()``, ``.half()``, ``.double()``, ``.bfloat16()``), unless the
  epilogue starts with an add (a plan fuses that add into ``addmm`` only when it has the result's dtype).

Multiplying or dividing by a scalar is left to fuse_networks, which treats it as linear scaling and fuses networks
through it. In-place ops (``inplace=True``) are never attached. The grown Network takes the place of the last op it
absorbed, so every value its epilogue reads is already defined there — never past an op that writes a tensor in
place (the Network would read the written value: ``a.mul_(2)`` between ``x = f(a)`` and ``x + y``).

Convolutions kept as Calls are left alone: a Call has no epilogue, the emitted code would be the same torch calls
whether or not they were grouped, no kernel of tcomp's consumes such a grouping (the Triton kernels cover Networks;
on the inductor backend Inductor groups a convolution with its pointwise consumers itself), and the bias of a
convolution is already inside its call (fold_bn moves a batch norm's shift there). Complexity: one walk, O(ops).
"""
from __future__ import annotations

import torch

from tcomp.ir import ACC, Call, EpilogueOp, Network, Op, Pointwise, Program, Value
from tcomp.ir.analysis import writes_in_place
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "epilogue"

_CAST_METHODS = {"float": torch.float32, "double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16}
_SCALINGS = ("mul", "div")


def cast_dtype(op: Op) -> torch.dtype | None:
    """The dtype ``op`` casts its first argument to when it is a plain dtype cast (a Tensor method), else None."""
    if not isinstance(op, Call) or op.kind != "method" or not op.args:
        return None
    if op.target in _CAST_METHODS and len(op.args) == 1 and not op.kwargs:
        return _CAST_METHODS[op.target]
    if op.target in ("to", "type"):
        rest = op.args[1:]
        if len(rest) == 1 and isinstance(rest[0], torch.dtype) and not op.kwargs:
            return rest[0]
        if not rest and set(op.kwargs) == {"dtype"} and isinstance(op.kwargs["dtype"], torch.dtype):
            return op.kwargs["dtype"]
    return None


def epilogue_step(op: Op, acc: Value, net: Network) -> EpilogueOp | None:
    """``op`` as an epilogue step of ``net`` (whose result is ``acc``), or None when it cannot be one."""
    if not op.out.is_tensor or op.out.shape != acc.shape:
        return None
    dtype = cast_dtype(op)
    if dtype is not None:
        if op.args[0] is not acc or (net.epilogue and net.epilogue[0].fn == "add"):
            return None
        return EpilogueOp("to", torch.Tensor.to, (ACC, dtype))
    if not isinstance(op, Pointwise) or op.out.dtype != acc.dtype or op.kwargs.get("inplace") is True:
        return None
    if sum(v is acc for v in op.inputs()) != sum(a is acc for a in op.args):
        return None  # the result is read inside a container or a keyword argument
    others = [v for v in op.inputs() if v is not acc]
    if op.fn in _SCALINGS and not others:
        return None
    args = tuple(ACC if a is acc else a for a in op.args)
    kwargs = {k: v for k, v in op.kwargs.items() if k != "inplace"}  # only inplace=False gets here
    return EpilogueOp(op.fn, op.target, args, kwargs)


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    users = new.users()
    outputs = {id(v) for v in new.output_values()}
    ops: list[Op | None] = []
    network_at: dict[int, int] = {}  # id(value) -> position in ops of the Network producing it
    attached: dict[str, int] = {}
    for op in new.ops:
        if writes_in_place(op):  # a Network before the write must not move after it: it would read the new value
            network_at.clear()
        step = None
        for v in op.inputs():
            k = network_at.get(id(v))
            if k is None or id(v) in outputs or len(users.get(id(v), [])) != 1:
                continue
            step = epilogue_step(op, v, ops[k])
            if step is not None:
                break
        if step is None:
            ops.append(op)
        else:
            net = ops[k]
            ops[k] = None
            del network_at[id(v)]
            ops.append(net.replace(out=op.out, epilogue=net.epilogue + (step,), plan=None))
            attached[step.fn] = attached.get(step.fn, 0) + 1
        if isinstance(ops[-1], Network):
            network_at[id(ops[-1].out)] = len(ops) - 1
    new.ops = [op for op in ops if op is not None]
    report = PassReport(NAME, changed=bool(attached))
    total = sum(attached.values())
    kinds = ", ".join(f"{n} {fn}" for fn, n in sorted(attached.items()))
    report.notes.append(f"{total} elementwise op(s) attached to network epilogues" + (f" ({kinds})" if kinds else ""))
    report.details = {"attached": attached}
    return new, report


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
