"""Fused epilogues: an ordered chain of steps applied to a kernel's float32 accumulator before it is stored.

Steps: add a tensor broadcastable to the output (``bias`` or ``residual`` — the same operation, named for the
reader), multiply by a float (``scale``), and the pointwise functions ``relu``, ``gelu`` (erf form), ``gelu_tanh``
(tanh approximation), ``silu``, ``sigmoid`` and ``tanh``. The cast to the output dtype always comes last and is the
kernel's ``out_dtype``, not a step.

Every step exists twice: as Triton source generated into a kernel (:func:`epilogue_source`) and as torch code
(:meth:`Epilogue.apply`, built on ``torch.nn.functional``; the reference and the CPU path). The Triton forms use
only ``tl`` builtins (``tl.exp``, ``tl.erf``, ``tl.maximum``): libdevice has no implementation under Triton's
interpreter, where the kernels are tested, and ``tl.sigmoid`` is a ``@triton.jit`` function of Triton's standard
library, which the interpreter can call only if ``TRITON_INTERPRET`` was set before ``triton`` was imported. So
``sigmoid(x) = 1/(1 + e^(−x))``, ``tanh(x) = 2/(1 + e^(−2x)) − 1``, and ``gelu_tanh(x) =
x/(1 + e^(−2·√(2/π)·(x + 0.044715·x³)))``, which is ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`` rewritten
exactly; all are accurate to about 1e-7 in float32 and saturate without overflow to NaN.

A kernel's source depends on the epilogue's *signature* (the step kinds, in order), never on its tensors or
scale factors, which are runtime arguments.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F

from . import codegen

#: Triton source of each pointwise function, as an expression of ``{x}``.
ACTIVATIONS: dict[str, str] = {
    "relu": "tl.maximum({x}, 0.0)",
    "gelu": "0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))",
    "gelu_tanh": "{x} / (1.0 + tl.exp(-1.5957691216057308 * ({x} + 0.044715 * {x} * {x} * {x})))",
    "silu": "{x} / (1.0 + tl.exp(-{x}))",
    "sigmoid": "1.0 / (1.0 + tl.exp(-{x}))",
    "tanh": "2.0 / (1.0 + tl.exp(-2.0 * {x})) - 1.0",
}

_TORCH_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}

TENSOR_STEPS = ("bias", "residual")
STEP_KINDS = (*TENSOR_STEPS, "scale", *ACTIVATIONS)
_TENSOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True, eq=False)
class AddTensor:
    """Add ``tensor`` (broadcastable to the output) to the accumulator; ``kind`` is ``bias`` or ``residual``."""

    kind: str
    tensor: torch.Tensor

    def __post_init__(self) -> None:
        if self.kind not in TENSOR_STEPS:
            raise ValueError(f"epilogue: tensor step kind must be one of {TENSOR_STEPS}, got {self.kind!r}")
        if not isinstance(self.tensor, torch.Tensor):
            raise TypeError(f"epilogue: {self.kind} must be a torch.Tensor, got {type(self.tensor).__name__}")
        if self.tensor.dtype not in _TENSOR_DTYPES:
            raise ValueError(f"epilogue: {self.kind} has dtype {self.tensor.dtype}; use float16, bfloat16 or float32")


@dataclass(frozen=True)
class Scale:
    """Multiply the accumulator by ``factor``."""

    factor: float

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)) or not math.isfinite(self.factor):
            raise ValueError(f"epilogue: scale factor must be a finite real number, got {self.factor!r}")
        object.__setattr__(self, "factor", float(self.factor))


@dataclass(frozen=True)
class Activation:
    """Apply the pointwise function ``name`` (a key of :data:`ACTIVATIONS`)."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise ValueError(f"epilogue: unknown activation {self.name!r}; known: {', '.join(ACTIVATIONS)}")


Step = Union[AddTensor, Scale, Activation]


@dataclass(frozen=True, eq=False)
class Epilogue:
    """An ordered chain of epilogue steps, built with the chaining methods::

        Epilogue().bias(b).activation("gelu").residual(x)      # gelu(acc + b) + x, then cast to out_dtype
    """

    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        for step in steps:
            if not isinstance(step, (AddTensor, Scale, Activation)):
                raise TypeError(f"epilogue: a step must be AddTensor, Scale or Activation, got {type(step).__name__}")
        object.__setattr__(self, "steps", steps)

    def bias(self, tensor: torch.Tensor) -> Epilogue:
        """This chain followed by adding ``tensor`` (broadcastable to the output)."""
        return Epilogue((*self.steps, AddTensor("bias", tensor)))

    def residual(self, tensor: torch.Tensor) -> Epilogue:
        """This chain followed by adding the residual ``tensor`` (broadcastable to the output)."""
        return Epilogue((*self.steps, AddTensor("residual", tensor)))

    def scale(self, factor: float) -> Epilogue:
        """This chain followed by multiplying by ``factor``."""
        return Epilogue((*self.steps, Scale(factor)))

    def activation(self, name: str) -> Epilogue:
        """This chain followed by the pointwise function ``name`` (see :data:`ACTIVATIONS`)."""
        return Epilogue((*self.steps, Activation(name)))

    @property
    def signature(self) -> tuple[str, ...]:
        """The step kinds in order: all that the generated kernel source depends on."""
        return tuple(_kind(step) for step in self.steps)

    def apply(self, value: torch.Tensor) -> torch.Tensor:
        """The chain in torch, computed in ``value``'s dtype (operands are converted to it)."""
        for step in self.steps:
            if isinstance(step, AddTensor):
                value = value + step.tensor.to(value.dtype)
            elif isinstance(step, Scale):
                value = value * step.factor
            else:
                value = _TORCH_ACTIVATIONS[step.name](value)
        return value


def signature_of(epilogue: Epilogue | Sequence[str] | None) -> tuple[str, ...]:
    """The signature of an :class:`Epilogue`, or a validated sequence of step kinds, or ``()`` for ``None``."""
    if epilogue is None:
        return ()
    if isinstance(epilogue, Epilogue):
        return epilogue.signature
    if isinstance(epilogue, str) or not all(isinstance(kind, str) for kind in epilogue):
        raise TypeError("epilogue: expected an Epilogue or a sequence of step kinds such as ('bias', 'gelu')")
    unknown = [kind for kind in epilogue if kind not in STEP_KINDS]
    if unknown:
        raise ValueError(f"epilogue: unknown step kinds {unknown}; known: {', '.join(STEP_KINDS)}")
    return tuple(epilogue)


def epilogue_params(signature: Sequence[str], dims: Sequence[str]) -> list[list[str]]:
    """Kernel parameters of an epilogue over an output whose dims are named ``dims``, one group per step that has
    any: a tensor step's pointer and its stride per dim, a scale step's factor."""
    groups: list[list[str]] = []
    for position, kind in enumerate(signature):
        name = f"{kind}{position}"
        if kind in TENSOR_STEPS:
            groups.append([f"{name}_ptr", *(codegen.stride(name, d) for d in dims)])
        elif kind == "scale":
            groups.append([name])
    return groups


def epilogue_source(signature: Sequence[str], value: str, mask: str, axes: Sequence[Sequence[str]],
                    scalars: Sequence[str] = ()) -> list[str]:
    """Source lines applying the epilogue to the float32 tile ``value``; tensor steps load through the tile's
    index vectors (``axes``/``scalars`` as in :func:`codegen.tile_offset`), masked by ``mask``."""
    lines: list[str] = []
    for position, kind in enumerate(signature):
        name = f"{kind}{position}"
        if kind in TENSOR_STEPS:
            offset = codegen.tile_offset(name, axes, scalars)
            lines += [f"# epilogue step {position}: add {kind}",
                      f"{value} += tl.load({name}_ptr + {offset}, mask={mask}, other=0.0).to(tl.float32)"]
        elif kind == "scale":
            lines += [f"# epilogue step {position}: scale", f"{value} = {value} * {name}"]
        else:
            lines += [f"# epilogue step {position}: {kind}", f"{value} = {ACTIVATIONS[kind].format(x=value)}"]
    return lines


def epilogue_arguments(where: str, epilogue: Epilogue | None, out_shape: Sequence[int], device: torch.device,
                       layout: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, int]]],
                       ) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Runtime values of the epilogue's parameters, and the tensors the kernel will read.

    Each tensor step is expanded to ``out_shape`` (a view: broadcast dims get stride 0); ``layout`` maps such a
    tensor to the one the kernel reads and its stride per kernel dim — the same mapping the launcher applies to
    the output itself, so the epilogue reads each element at the output position it is added to.
    """
    values: dict[str, Any] = {}
    read: list[torch.Tensor] = []
    for position, step in enumerate(epilogue.steps if epilogue is not None else ()):
        name = f"{_kind(step)}{position}"
        if isinstance(step, Scale):
            values[name] = step.factor
        elif isinstance(step, AddTensor):
            tensor, strides = layout(_expanded(where, step, tuple(out_shape), device))
            values[f"{name}_ptr"] = tensor
            values.update({codegen.stride(name, dim): s for dim, s in strides.items()})
            read.append(tensor)
    return values, read


def _expanded(where: str, step: AddTensor, out_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    tensor = step.tensor
    if tensor.device != device:
        raise ValueError(f"{where}: epilogue {step.kind} is on {tensor.device}, the operands on {device}")
    try:
        broadcast = torch.broadcast_shapes(tuple(tensor.shape), out_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != out_shape:
        raise ValueError(f"{where}: epilogue {step.kind} of shape {tuple(tensor.shape)} does not broadcast to the "
                         f"output shape {out_shape}")
    return tensor.expand(out_shape)


def _kind(step: Step) -> str:
    if isinstance(step, AddTensor):
        return step.kind
    if isinstance(step, Scale):
        return "scale"
    return step.name
