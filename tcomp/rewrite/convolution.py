"""Convolution Calls: ``nn.Conv1d/2d/3d`` submodule calls, ``F.conv1d/2d/3d`` and ``aten.convNd`` calls, in one form.

A convolution kept as a Call (a k×k convolution, or a strided 1×1 one — an unstrided 1×1 convolution is lowered to
a Network) is a call of the submodule, of the functional form or, in a graph captured by torch.export, of the aten
op of the same signature. Rewrites (fold_bn, layout) need its input,
weight, bias and parameters uniformly and re-emit it as the functional call ``F.convNd(x, w, b, stride, padding,
dilation, groups)``, which computes exactly what the submodule computes for zero padding. Not a pass itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcomp.ir import Call, Op, Value

from .weights import Constants

_MODULES = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_FUNCTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_ATEN = {torch.ops.aten.conv1d.default: 1, torch.ops.aten.conv2d.default: 2, torch.ops.aten.conv3d.default: 3}
_PARAMS = ("stride", "padding", "dilation", "groups")


def _defaults(dims: int) -> tuple:
    """The parameters' defaults, in the list form the aten ops require (the functional forms accept it too)."""
    return [1] * dims, [0] * dims, [1] * dims, 1


@dataclass(frozen=True)
class ConvCall:
    """``function(x, weight, bias, *params)``: a convolution over ``dims`` spatial dimensions."""

    function: Callable
    x: Value
    weight: Value
    bias: Value | None
    params: tuple            # (stride, padding, dilation, groups)
    dims: int

    def call(self, out: Value, x: Value, weight: Value, bias: Value | None) -> Call:
        """The functional convolution of ``x`` with ``weight`` and ``bias``, producing ``out``."""
        return Call(out, self.function, "function", (x, weight, bias, *self.params))


def conv_call(op: Op, constants: Constants) -> ConvCall | None:
    """``op`` as a convolution, or None (a non-zero padding mode, an unexpected argument, anything else)."""
    if not isinstance(op, Call):
        return None
    if op.kind == "module" and type(op.module) in _MODULES:
        m = op.module
        if m.padding_mode != "zeros" or len(op.args) != 1 or op.kwargs or not isinstance(op.args[0], Value):
            return None
        w = constants.get(f"{op.target}.weight", m.weight)
        b = constants.get(f"{op.target}.bias", m.bias) if m.bias is not None else None
        function = _MODULES[type(m)]
        return ConvCall(function, op.args[0], w, b, (m.stride, m.padding, m.dilation, m.groups), _FUNCTIONS[function])
    dims = (_FUNCTIONS.get(op.target) or _ATEN.get(op.target)) if op.kind == "function" else None
    if dims:
        names = ("input", "weight", "bias", *_PARAMS)
        a = dict(zip(names, op.args)) | op.kwargs
        if set(a) - set(names) or not isinstance(a.get("input"), Value) or not isinstance(a.get("weight"), Value):
            return None
        params = tuple(a.get(k, d) for k, d in zip(_PARAMS, _defaults(dims)))
        return ConvCall(op.target, a["input"], a["weight"], a.get("bias"), params, dims)
    return None
