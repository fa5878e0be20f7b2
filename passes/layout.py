"""layout: the channels-last memory format for convolution stacks, where measuring says it is faster.

Convolution kernels (oneDNN on CPU, cuDNN on GPU) usually run faster on NHWC data. The pass converts the input of
every 2-D convolution Call to channels-last (``x.contiguous(memory_format=torch.channels_last)``, once per value),
lays its k×k weight out channels-last once (a cached function of the original weight, :mod:`tcomp.rewrite.weights`), and
lets the layout flow through everything in between: each value's ``stride_order`` says how torch will lay it out
(``(0, 2, 3, 1)`` for NHWC), so that contraction_order plans GEMMs on strided operands without copies
(:func:`tcomp.contract.plan.operand_term`). Propagation follows PyTorch's memory-format rules (the "Channels Last Memory
Format" design, PyTorch 1.5): a convolution with a channels-last input or weight returns channels-last; pointwise
ops, batch norm, pooling and other torch ops keep their input's layout; a Network — a linear map, a 1×1
convolution ``abcd,eb()()->aecd`` — reads whatever layout comes (its GEMM views a channels-last ``x[n]`` as a
column-major ``[c, hw]`` matrix, no copy) and leaves its result as its plan does
(:func:`tcomp.contract.search.result_stride_order`). An op that may depend on strides (``view``,
``as_strided``, ``stride()``, code outside torch) gets contiguous inputs back, and program outputs are returned
contiguous as eager returns them (emit makes every output with a ``stride_order`` contiguous). Values are
identical: only memory layouts change.

The decision is measured, not guessed: the program as it is and channels-last, each planned and emitted as it would
run (:func:`tcomp.codegen.runnable.runnable`), are run on the example inputs, round-robin, median (without side
effects: submodule buffers restored, random generators forked). Whole programs, not convolutions one by one: on
this project's CPU ResNet-18's convolutions timed one by one were no faster channels-last (159 vs 166 ms at batch
8), while the whole program ran 1.24× faster — timing convolutions alone did not predict it. The times are kept in the
cache table ``layout`` (:mod:`tcomp.cache`: per machine and device, keyed by the printed program and the input shapes
and dtypes), so a model is measured once.

Option ``tcomp.compile(layout=...)`` (default: the ``TCOMP_LAYOUT`` environment variable, else ``"auto"``):
``"auto"`` (measure), ``"channels_last"`` or ``"contiguous"`` (no measuring). 3-D convolutions
(``channels_last_3d``) are left alone.
Complexity: one walk over the ops, one quick contraction plan per Network reading a channels-last value, and — once
per program and input shapes — the two programs run a few times each.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.utils._pytree as pytree

from tcomp.cache import DiskCache
from tcomp.codegen.runnable import runnable, time_in_turns
from tcomp.contract.search import best_plan, result_stride_order
from tcomp.distributed import agree
from tcomp.ir import Call, Network, Op, Program, Value, substitute_inputs
from tcomp.ir.names import Names
from tcomp.options import LAYOUTS
from tcomp.passmanager import Pass, PassContext, PassReport
from tcomp.rewrite.convolution import conv_call
from tcomp.rewrite.weights import Constants, cached_call, weight_recipe

NAME = "layout"
CHANNELS_LAST = (0, 2, 3, 1)

_STRIDE_DEPENDENT = {"view", "view_as", "as_strided", "stride", "data_ptr", "storage_offset", "is_contiguous",
                     "numpy", "untyped_storage", "storage"}
_TORCH_MODULES = ("torch", "_operator", "operator", "builtins", "math")


# -- what a convolution is ------------------------------------------------------------------------------------

def _conv2d_input(op: Op, constants: Constants) -> Value | None:
    """The batched input of a 2-D convolution Call (a functional call, or a submodule call of any padding mode)."""
    spec = conv_call(op, constants)
    if spec is not None:
        x = spec.x if spec.dims == 2 else None
    elif isinstance(op, Call) and op.kind == "module" and isinstance(op.module, nn.Conv2d) and len(op.args) == 1:
        x = op.args[0]
    else:
        x = None
    return x if _four_d(x) else None


# -- the stride-dependence of ops --------------------------------------------------------------------------------

def _stride_dependent(op: Op) -> bool:
    """Whether ``op`` may behave differently on a channels-last input (so it gets a contiguous one)."""
    if not isinstance(op, Call):
        return False
    if op.kind == "method":
        return op.target in _STRIDE_DEPENDENT
    if op.kind == "module":
        return not type(op.module).__module__.startswith("torch.")
    if isinstance(op.target, torch._ops.OpOverload):
        return op.target._opname in _STRIDE_DEPENDENT
    module = getattr(op.target, "__module__", None) or ""
    return module.split(".")[0] not in _TORCH_MODULES or getattr(op.target, "__name__", "") in _STRIDE_DEPENDENT


def _four_d(v: Any) -> bool:
    return isinstance(v, Value) and v.is_tensor and len(v.shape) == 4


# -- the rewrite ----------------------------------------------------------------------------------------------

@dataclass
class _Rewrite:
    """The channels-last program: its ops and output, how many convolutions it converted and how many values it
    copies into another layout."""

    ops: list[Op] = field(default_factory=list)
    output: Any = None
    convolutions: int = 0
    conversions: int = 0


class _ChannelsLast:
    """One walk over the ops: convolutions made channels-last, every other op's result laid out as torch lays it."""

    def __init__(self, program: Program, ctx: PassContext):
        self.program = program
        self.ctx = ctx
        self.names = Names(program)
        self.constants = Constants(program)
        self.producers = program.producers()
        self.cl: set[int] = set()                   # ids of values laid out channels-last
        self.sub: dict[int, Value] = {}             # old value -> the same value with its new stride order
        self.copies: dict[tuple[int, bool], Value] = {}
        self.rw = _Rewrite()

    def run(self) -> _Rewrite:
        for op in self.program.ops:
            if self.sub and any(id(v) in self.sub for v in op.inputs()):
                op = substitute_inputs(op, self.sub)
            if isinstance(op, Network):
                self.network(op)
            elif _conv2d_input(op, self.constants) is not None:
                self.conv(op)
            elif _stride_dependent(op):
                mapping = {id(v): self.copy(v, False) for v in op.inputs() if id(v) in self.cl}
                self.rw.ops.append(substitute_inputs(op, mapping) if mapping else op)
            else:
                inputs_cl = any(id(v) in self.cl for v in op.inputs())
                self.rw.ops.append(self.laid_out(op, CHANNELS_LAST) if inputs_cl and _four_d(op.out) else op)
        self.rw.output = pytree.tree_map(lambda v: self.sub.get(id(v), v) if isinstance(v, Value) else v,
                                         self.program.output)
        # emit returns every output with a stride order contiguous: a conversion too
        self.rw.conversions += sum(isinstance(v, Value) and id(v) in self.cl
                                   for v in pytree.tree_leaves(self.rw.output))
        return self.rw

    def copy(self, v: Value, channels_last: bool) -> Value:
        """``v`` converted to channels-last (or back to contiguous), once per value."""
        key = (id(v), channels_last)
        if key not in self.copies:
            suffix = "channels_last" if channels_last else "contiguous"
            out = Value(self.names.fresh(f"{v.name}_{suffix}"), v.shape, v.dtype,
                        stride_order=CHANNELS_LAST if channels_last else None)
            kwargs = {"memory_format": torch.channels_last} if channels_last else {}
            self.rw.ops.append(Call(out, "contiguous", "method", (v,), kwargs))
            self.rw.conversions += 1
            if channels_last:
                self.cl.add(id(out))
            self.copies[key] = out
        return self.copies[key]

    def laid_out(self, op: Op, stride_order: tuple[int, ...] | None) -> Op:
        """``op`` producing a value with ``stride_order`` (a new Value, readers redirected, when it changes)."""
        if stride_order != op.out.stride_order:
            out = Value(op.out.name, op.out.shape, op.out.dtype, stride_order=stride_order)
            self.sub[id(op.out)] = out
            op = op.replace(out=out)
        if stride_order == CHANNELS_LAST:
            self.cl.add(id(op.out))
        return op

    def network(self, net: Network) -> None:
        """A Network reads whatever layout comes (its plan views strided operands without copies where it can: a
        1×1 convolution's ``bmm`` reads a channels-last ``x[n]`` as a column-major matrix) and leaves its result as
        its plan does."""
        if any(id(v) in self.cl for v in net.inputs()):
            plan = best_plan(net, self.program.example, training=self.ctx.training, quick=True,
                             machine=self.ctx.machine)
            net = self.laid_out(net, result_stride_order(net, plan))
        self.rw.ops.append(net)

    def conv(self, op: Call) -> None:
        """A 2-D convolution on a channels-last input, with a channels-last weight (laid out once)."""
        spec = conv_call(op, self.constants)
        x = _conv2d_input(op, self.constants)
        x_cl = x if id(x) in self.cl else self.copy(x, True)
        cl_ops: list[Op] = []
        if spec is None:  # a padding mode other than zeros: the submodule itself, on a channels-last input
            conv = op.replace(args=(x_cl,))
        else:
            w = spec.weight
            recipe = weight_recipe(w, self.producers)
            if any(s != 1 for s in w.shape[2:]) and recipe is not None:
                w_cl = Value(self.names.fresh(f"{w.name}_channels_last"), w.shape, w.dtype,
                             stride_order=CHANNELS_LAST)
                cl_ops.append(cached_call(self.names.target(f"channels_last_{w.name}"), w_cl, _TO_CHANNELS_LAST,
                                          recipe))
                w = w_cl
            conv = spec.call(op.out, x_cl, w, spec.bias)
        cl_ops.append(self.laid_out(conv, CHANNELS_LAST))
        self.rw.ops.extend(cl_ops)
        self.rw.convolutions += 1


_TO_CHANNELS_LAST = functools.partial(torch.Tensor.contiguous, memory_format=torch.channels_last)


# -- measuring ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _no_side_effects(program: Program, device: torch.device):
    """Running the program leaves no trace: submodule buffers (running statistics of a batch norm in training mode)
    are restored and the random number generators forked."""
    modules = {id(op.module): op.module for op in program.ops if isinstance(op, Call) and op.kind == "module"}
    saved = [(b, b.detach().clone()) for m in modules.values() for b in m.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, copy in saved:
                    b.copy_(copy)


def _decide(program: Program, channels_last: Program, ctx: PassContext) -> tuple[bool | None, dict]:
    """Whether the channels-last program runs faster than ``program`` on the example inputs (None when there are
    none to run it on), measured once per program and input shapes (cache table ``layout``, per device)."""
    inputs = tuple(t for t in ctx.example_inputs if isinstance(t, torch.Tensor))
    if len(inputs) != len(program.inputs):
        return None, {}
    device = inputs[0].device if inputs else torch.device("cpu")
    device_tag = device.type if device.type == "cpu" else f"{device.type}-{torch.cuda.get_device_name(device)}"
    cache = DiskCache.open("layout", hashlib.sha1(device_tag.encode()).hexdigest()[:16])
    shapes = [(tuple(t.shape), str(t.dtype)) for t in inputs]
    key = hashlib.sha1((program.format(lambda op: "") + repr(shapes)).encode()).hexdigest()
    times = cache.get(key, valid=lambda t: isinstance(t, list) and len(t) == 2 and
                      all(isinstance(x, (int, float)) and x > 0 for x in t))
    measured = times is DiskCache.MISSING
    if measured:
        def on_copies(gm):  # the program may write into its inputs
            return lambda *xs: gm(*[x.clone() for x in xs])

        runs = {name: (on_copies(runnable(p, training=ctx.training, machine=ctx.machine)), inputs)
                for name, p in (("contiguous", program), ("channels_last", channels_last))}
        with _no_side_effects(program, device):  # at least one round, up to 9 while less than 0.6 s have passed
            t = time_in_turns(runs, rounds=1, max_rounds=9, min_seconds=0.6)
        times = [t["contiguous"], t["channels_last"]]
        cache.put(key, times)
    details = {"contiguous_s": times[0], "channels_last_s": times[1], "measured_now": measured,
               "cache": str(cache.path)}
    return agree(times[1] < times[0]), details  # rank 0's decision on every rank


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    report = PassReport(NAME)
    choice = ctx.options.layout
    if choice not in LAYOUTS:
        raise ValueError(f"layout={choice!r}: choose one of {LAYOUTS}")
    if choice == "contiguous":
        report.notes.append("layout='contiguous' requested: layout unchanged")
        return program, report
    new = program.copy()
    rewriter = _ChannelsLast(new, ctx)
    rw = rewriter.run()
    if not rw.convolutions:
        report.notes.append("no 2-D convolution: layout unchanged")
        return program, report
    new.ops, new.output = rw.ops, rw.output
    new.eliminate_dead_code()
    rewriter.constants.register()
    what = f"{rw.convolutions} convolution(s), {rw.conversions} layout conversion(s)"
    if choice == "channels_last":
        use, verdict = True, "layout='channels_last' requested"
    else:
        use, report.details = _decide(program, new, ctx)
        if use is None:
            report.notes.append("no example inputs to measure on: layout unchanged")
            return program, report
        d = report.details
        verdict = (f"measured {d['contiguous_s'] * 1e3:.1f} ms contiguous, {d['channels_last_s'] * 1e3:.1f} ms "
                   f"channels-last{' (cached)' if not d['measured_now'] else ''}")
    if not use:
        report.notes.append(f"kept contiguous ({what}): {verdict}")
        return program, report
    report.changed = True
    report.notes.append(f"channels-last for {what}: {verdict}")
    return new, report


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
