"""The cost model: FLOPs, memory traffic, transposition copies and kernel launches, priced in seconds.

Every quantity is a size expression (an ``int`` or a sympy expression in the batch and sequence symbols ``B``,
``S``), so a plan's cost can be evaluated over a range of batch sizes and sequence lengths. The time of a cost is
a roofline-style sum

    time = flops / gemm_rate + bytes / bandwidth + copy_bytes / copy_bandwidth + launches * launch_overhead
           + measured correction


whose constants are measured once per machine by :mod:`tcomp.cost.machine` (cached on disk) and documented in
docs/passes/contraction_order.md. The model is deliberately simple: it must rank contraction orders and layouts,
not predict wall time to the microsecond. Where it cannot rank at all — small GEMMs whose speed depends on their
orientation and transposes — the planner measures (:mod:`tcomp.cost.gemm`) and the step's cost carries the
difference between the measured and the modeled time (``measured_s``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy
import torch
import torch.nn as nn
import torch.nn.functional as F

from tcomp.ir import Call, Pointwise
from tcomp.ir.symbolic import Point, Size, as_size, complete, value_at


@dataclass
class Cost:
    flops: Size = 0           # multiply-adds count twice
    bytes: Size = 0           # bytes read and written by the kernels themselves
    copy_bytes: Size = 0      # bytes moved by transposition copies the lowering cannot avoid
    launches: int = 0         # torch calls / kernel launches
    matrices: Size = 0        # matrix products inside batched GEMMs (each has a fixed cost beyond its FLOPs)
    measured_s: float = 0.0   # seconds a GEMM measured on this machine takes beyond (or short of) what its FLOPs
    #                           price, at the decision point (tcomp.cost.gemm)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(as_size(self.flops + other.flops), as_size(self.bytes + other.bytes),
                    as_size(self.copy_bytes + other.copy_bytes), self.launches + other.launches,
                    as_size(self.matrices + other.matrices), self.measured_s + other.measured_s)

    def scaled(self, k: int) -> "Cost":
        return Cost(as_size(self.flops * k), as_size(self.bytes * k), as_size(self.copy_bytes * k), self.launches * k,
                    as_size(self.matrices * k), self.measured_s * k)

    def time_at(self, at: Point | int | None, machine: "MachineModel") -> float:
        """Seconds on ``machine`` at a point (a batch size alone, or a value per symbol; a symbol not given counts
        as 2): each quantity evaluated there, then priced as the module docstring's sum."""
        where = complete(at)

        def number(x: Size) -> float:
            return float(x) if isinstance(x, (int, float)) else float(value_at(x, where))

        return (number(self.flops) / machine.gemm_flops_per_s + number(self.bytes) / machine.bytes_per_s
                + number(self.matrices) * machine.matrix_s + number(self.copy_bytes) / machine.copy_bytes_per_s
                + self.launches * machine.launch_s + self.measured_s)

    def flops_str(self) -> str:
        return _fmt(self.flops)


def _fmt(x: Size) -> str:
    if isinstance(x, int):
        return f"{x:.3g}" if x >= 1e4 else str(x)
    return str(sympy.nsimplify(x)).replace("**", "^")


@dataclass(frozen=True)
class MachineModel:
    """Measured constants of the device the plan is made for (see :mod:`tcomp.cost.machine`)."""

    gemm_flops_per_s: float = 5.0e10
    bytes_per_s: float = 1.0e10
    copy_bytes_per_s: float = 5.0e9
    launch_s: float = 5.0e-6
    matrix_s: float = 1.0e-6     # the fixed cost of one matrix product inside a batched GEMM
    source: str = "default"
    details: dict = field(default_factory=dict, compare=False, hash=False)


def dtype_bytes(dtype: torch.dtype | None) -> int:
    if dtype is None:
        return 4
    return torch.empty((), dtype=dtype).element_size()


def _traffic(op) -> Size:
    """Bytes of the op's result written once and of each tensor it reads read once."""
    written = as_size(op.out.numel * dtype_bytes(op.out.dtype))
    return as_size(written + sum(as_size(v.numel * dtype_bytes(v.dtype)) for v in op.inputs() if v.is_tensor))


def pointwise_cost(op: Pointwise) -> Cost:
    """One FLOP per element, and the op's traffic."""
    if not op.out.is_tensor:
        return Cost()
    return Cost(flops=op.out.numel, bytes=_traffic(op), launches=1)


def call_cost(op: Call) -> Cost:
    """FLOPs of the Calls whose work is known from shapes (convolutions), and the op's traffic."""
    if not op.out.is_tensor:
        return Cost()
    w = _conv_weight(op)
    flops = as_size(2 * op.out.numel * math.prod(w.shape[1:])) if w is not None and len(op.out.shape) >= 3 else 0
    return Cost(flops=flops, bytes=_traffic(op), launches=1)


def _conv_weight(op: Call) -> torch.Tensor | None:
    if op.kind == "module" and isinstance(op.module, nn.modules.conv._ConvNd):
        return op.module.weight
    if op.kind == "function" and op.target in (F.conv2d, torch.conv2d, F.conv1d, F.conv3d,
                                                torch.ops.aten.conv2d.default):
        w = op.args[1] if len(op.args) > 1 else op.kwargs.get("weight")
        return w if getattr(w, "shape", None) is not None else None
    return None
