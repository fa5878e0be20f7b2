"""fold_bn: fold an eval-mode batch norm into the convolution or linear map that produces its input.

In eval mode a batch norm is a fixed affine map per channel, ``y = (z − μ)·s + β`` with ``s = γ/√(σ² + ε)`` and
the running statistics μ, σ². When ``z = W ∗ x + b`` is a convolution or a linear map (linear in W along the output
channel) it folds exactly into the producer — the classic inference-time folding (Jacob et al. 2018, "Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", §3.2; PyTorch's
``fuse_conv_bn_eval``):

    W' = W · s   (along the output channel),      b' = (b − μ) · s + β   (b = 0 without a bias).

Producers: a convolution kept as a Call (``nn.Conv1d/2d/3d`` with zero padding, ``F.conv1d/2d/3d``,
``aten.convNd``), becoming the functional call with W' and b'; or a Network (a linear layer, a 1×1 convolution)
whose output channel is one index of a weight-only operand, that operand replaced by W' and the epilogue by
``+ b'``. The batch norm is a Call of an ``nn.BatchNorm1d/2d/3d`` in eval mode with running statistics, or of
``F.batch_norm(..., training=False)`` (``torch.batch_norm`` / ``aten.batch_norm`` as torch.export captures it)
with constant statistics. W' and b' stay functions of the original parameters and buffers (cached, version-checked
and differentiable — see :mod:`tcomp.rewrite.weights`), so optimizer steps, ``load_state_dict`` and gradients stay
right.

Not folded: a batch norm in training mode (it normalises by the batch's statistics and updates the running ones),
one without running statistics (``track_running_stats=False`` uses batch statistics even in eval mode), a producer
whose result has another reader or is a program output, a producer with any other epilogue, mixed dtypes.
Complexity: one walk over the ops, O(ops).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcomp.ir import ACC, Call, EpilogueOp, Network, Op, Program, Value
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.rewrite.convolution import conv_call
from tcomp.ir.names import Names
from tcomp.rewrite.weights import cached_call, Constants, weight_recipe, WeightRecipe

NAME = "fold_bn"

# the functional batch norms and their argument names, in order
_BATCH_NORM_FUNCTIONS = {
    F.batch_norm: ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
    torch.batch_norm: ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
                       "cudnn_enabled"),
    torch.ops.aten.batch_norm.default: ("input", "weight", "bias", "running_mean", "running_var", "training",
                                        "momentum", "eps", "cudnn_enabled"),
}


# -- the folded parameters (run by tcomp.codegen.folded.CachedFunction) ------------------------------------------------

@dataclass(frozen=True)
class FoldedWeight:
    """``W · s`` along dimension ``dim`` of W, ``s = γ/√(σ² + ε)`` (γ = 1 without affine).
    Inputs: W, σ², [γ]."""

    eps: float
    dim: int

    def __call__(self, weight: torch.Tensor, var: torch.Tensor, *gamma: torch.Tensor) -> torch.Tensor:
        shape = [1] * weight.dim()
        shape[self.dim] = -1
        return weight * _scale(var, self.eps, gamma).reshape(shape)


@dataclass(frozen=True)
class FoldedBias:
    """``(b − μ) · s + β`` reshaped to ``shape`` (b = 0 without a bias, β = 0 without affine).
    Inputs: [b], μ, σ², [γ, β]."""

    eps: float
    shape: tuple[int, ...]
    has_bias: bool

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        bias, (mean, var, *affine) = (xs[0], xs[1:]) if self.has_bias else (None, xs)
        scale = _scale(var, self.eps, affine[:1])
        centred = -mean if bias is None else bias.reshape(mean.shape) - mean
        out = centred * scale
        if affine:
            out = out + affine[1]
        return out.reshape(self.shape)


def _scale(var: torch.Tensor, eps: float, gamma) -> torch.Tensor:
    s = torch.rsqrt(var + eps)
    return s * gamma[0] if gamma else s


# -- recognising the two ops ----------------------------------------------------------------------------------

@dataclass
class _BatchNorm:
    op: Call
    x: Value
    mean: Value
    var: Value
    gamma: Value | None
    beta: Value | None
    eps: float

    @property
    def stats(self) -> tuple[Value, ...]:
        return tuple(v for v in (self.mean, self.var, self.gamma, self.beta) if v is not None)


def _batch_norm(op: Op, constants: Constants) -> _BatchNorm | None:
    """The eval-mode batch norm ``op`` computes, or None."""
    if not isinstance(op, Call) or not op.out.is_tensor:
        return None
    if op.kind == "module" and isinstance(op.module, nn.modules.batchnorm._BatchNorm):
        m = op.module
        if m.training or m.running_mean is None or m.running_var is None or (m.weight is None) != (m.bias is None) \
                or len(op.args) != 1 or op.kwargs:
            return None
        buf = {name: constants.get(f"{op.target}.{name}", t) for name, t in
               (("running_mean", m.running_mean), ("running_var", m.running_var), ("weight", m.weight),
                ("bias", m.bias)) if t is not None}
        return _BatchNorm(op, op.args[0], buf["running_mean"], buf["running_var"], buf.get("weight"),
                          buf.get("bias"), float(m.eps))
    names = _BATCH_NORM_FUNCTIONS.get(op.target) if op.kind == "function" else None
    if names is not None:
        a = dict(zip(names, op.args)) | op.kwargs
        if a.get("training", False) is not False or not all(isinstance(a.get(k), Value) and a[k].kind == "const"
                                                               for k in ("running_mean", "running_var")):
            return None
        gamma, beta = a.get("weight"), a.get("bias")
        if (gamma is None) != (beta is None) or any(v is not None and not (isinstance(v, Value) and v.kind == "const")
                                                   for v in (gamma, beta)):
            return None
        return _BatchNorm(op, a["input"], a["running_mean"], a["running_var"], gamma, beta, float(a.get("eps", 1e-5)))
    return None


# -- the rewrite ----------------------------------------------------------------------------------------------

class _Folder:
    def __init__(self, program: Program):
        self.constants = Constants(program)
        self.names = Names(program)
        self.producers = program.producers()

    def fold(self, producer: Op, bn: _BatchNorm) -> list[Op] | None:
        """The ops replacing ``producer`` (whose result ``bn`` reads), ending with the one producing bn's output."""
        dtype = bn.op.out.dtype
        if any(v.dtype != dtype for v in (producer.out, *bn.stats)) or len(bn.op.out.shape) < 2 \
                or not isinstance(bn.op.out.shape[1], int):
            return None
        if isinstance(producer, Call):
            return self._fold_conv(producer, bn)
        if isinstance(producer, Network):
            return self._fold_network(producer, bn)
        return None

    def _parts(self, bn: _BatchNorm, weight: Value, dim: int, bias: Value | None, bias_shape: tuple[int, ...]
               ) -> tuple[Call, Call] | None:
        w_recipe = weight_recipe(weight, self.producers)
        b_recipe = weight_recipe(bias, self.producers) if bias is not None else WeightRecipe(None, ())
        if w_recipe is None or b_recipe is None or weight.dtype != bn.op.out.dtype:
            return None
        base = bn.op.out.name
        affine = (bn.gamma,) if bn.gamma is not None else ()
        w_out = Value(self.names.fresh(f"{base}_folded_weight"), weight.shape, weight.dtype)
        w_call = cached_call(self.names.target(f"bn_fold_{base}_weight"), w_out, FoldedWeight(bn.eps, dim),
                             w_recipe, (bn.var, *affine))
        b_out = Value(self.names.fresh(f"{base}_folded_bias"), bias_shape, bn.op.out.dtype)
        stats = (bn.mean, bn.var, *((bn.gamma, bn.beta) if bn.gamma is not None else ()))
        b_call = cached_call(self.names.target(f"bn_fold_{base}_bias"), b_out,
                             FoldedBias(bn.eps, bias_shape, bias is not None), b_recipe, stats)
        return w_call, b_call

    def _fold_conv(self, conv: Call, bn: _BatchNorm) -> list[Op] | None:
        spec = conv_call(conv, self.constants)
        channels = bn.op.out.shape[1]
        if spec is None or spec.weight.shape[0] != channels \
                or (spec.bias is not None and spec.bias.shape != (channels,)):
            return None
        parts = self._parts(bn, spec.weight, 0, spec.bias, (channels,))
        if parts is None:
            return None
        w_call, b_call = parts
        return [w_call, b_call, spec.call(bn.op.out, spec.x, w_call.out, b_call.out)]

    def _fold_network(self, net: Network, bn: _BatchNorm) -> list[Op] | None:
        """The channel is one output index ``o`` (or, for a single channel, none): any weight-only operand holding
        ``o`` (any at all for a single channel) takes the scale, the product being linear in each operand."""
        rank = len(net.out_dims)
        channel = net.out_dims[1]
        if len(channel) > 1 or (channel and net.sizes[channel[0]] != bn.op.out.shape[1]):
            return None
        bias_shape = (bn.op.out.shape[1],) + (1,) * (rank - 2)
        bias = None
        if net.epilogue:
            step = net.epilogue[0]
            if len(net.epilogue) != 1 or step.fn != "add" or len(step.args) != 2 or step.args[0] is not ACC \
                    or step.kwargs or not isinstance(step.args[1], Value) or step.args[1].shape != bias_shape:
                return None
            bias = step.args[1]
        for k, (v, dims) in enumerate(zip(net.operands, net.operand_dims)):
            if (channel and channel not in dims) or weight_recipe(v, self.producers) is None:
                continue
            parts = self._parts(bn, v, dims.index(channel) if channel else 0, bias, bias_shape)
            if parts is None:
                return None
            w_call, b_call = parts
            operands = net.operands[:k] + (w_call.out,) + net.operands[k + 1:]
            epilogue = (EpilogueOp("add", torch.add, (ACC, b_call.out)),)
            return [w_call, b_call, net.replace(out=bn.op.out, operands=operands, epilogue=epilogue, plan=None)]
        return None


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    folder = _Folder(new)
    users = new.users()
    outputs = {id(v) for v in new.output_values()}
    replacements: dict[int, list[Op]] = {}
    dropped: set[int] = set()
    folded: list[str] = []
    for op in new.ops:
        bn = _batch_norm(op, folder.constants)
        if bn is None:
            continue
        producer = folder.producers.get(id(bn.x))
        if producer is None or id(producer) in replacements or len(users.get(id(bn.x), [])) != 1 \
                or id(bn.x) in outputs:
            continue
        ops = folder.fold(producer, bn)
        if ops is None:
            continue
        replacements[id(producer)] = ops
        dropped.add(id(op))
        folded.append(bn.op.out.name)
    rebuilt: list[Op] = []
    for op in new.ops:
        if id(op) not in dropped:
            rebuilt.extend(replacements.get(id(op), [op]))
    new.ops = rebuilt
    removed = new.eliminate_dead_code() if folded else 0
    folder.constants.register()
    report = PassReport(NAME, changed=bool(folded))
    report.notes.append(f"{len(folded)} batch norm(s) folded into the preceding convolution or linear map"
                        + (f"; {removed} op(s) left dead removed" if removed else ""))
    report.details = {"folded": folded}
    return new, report


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
