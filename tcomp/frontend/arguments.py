"""Binding a call to ``forward``'s signature: the flat argument values tcomp compiles for and guards on, their names,
and the way back to positional and keyword arguments.

``forward(self, x, mask=None, *rest, scale=1.0, **extra)`` called as ``m(a, b, c, scale=2.0, bias=t)`` binds to the
values ``(a, b, c, 2.0, t)`` named ``x, mask, rest_0, scale, bias``: one value per parameter (``*args`` and
``**kwargs`` spread, defaults filled in). The names are part of a binding — two calls that pass the same tensor as
``bias=`` and as ``gain=`` are different calls. Capture traces a wrapper that takes the tensor values and rebuilds the
call around the fixed non-tensor ones (:class:`CallTemplate`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
               inspect.Parameter.VAR_POSITIONAL)


@dataclass(frozen=True)
class Arguments:
    """One call of ``forward``, bound (see the module docstring). ``slots``: per value, whether it goes back as a
    positional argument (None) or a keyword (its name); ``fixed_arity``: ``forward`` has neither ``*args`` nor
    ``**kwargs`` nor keyword-only parameters."""

    values: tuple
    names: tuple[str, ...]
    slots: tuple[str | None, ...]
    fixed_arity: bool = True

    @staticmethod
    def bind(signature: inspect.Signature, args: tuple, kwargs: dict) -> "Arguments":
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values: list = []
        names: list[str] = []
        slots: list[str | None] = []
        for position, (name, value) in enumerate(bound.arguments.items()):
            kind = signature.parameters[name].kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                values += value
                names += [f"{name}_{j}" for j in range(len(value))]
                slots += [None] * len(value)
            elif kind == inspect.Parameter.VAR_KEYWORD:
                values += value.values()
                names += value.keys()
                slots += value.keys()
            else:  # a parameter the call left to its default goes back by name: wrappers (Hugging Face's
                values.append(value)  # decorators) may fill it in as a keyword themselves
                names.append(name)
                passed_by_position = kind in _POSITIONAL and position < len(args)
                slots.append(None if passed_by_position or kind == inspect.Parameter.POSITIONAL_ONLY else name)
        fixed = all(p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                    for p in signature.parameters.values())
        return Arguments(tuple(values), tuple(names), tuple(slots), fixed)

    def call_args(self) -> tuple[tuple, dict]:
        """``(args, kwargs)`` that bind to these values."""
        args = tuple(v for v, slot in zip(self.values, self.slots) if slot is None)
        return args, {slot: v for v, slot in zip(self.values, self.slots) if slot is not None}

    def with_values(self, values: tuple) -> "Arguments":
        return replace(self, values=tuple(values))

    @property
    def tensor_positions(self) -> list[int]:
        return [k for k, v in enumerate(self.values) if isinstance(v, torch.Tensor)]

    @property
    def tensors(self) -> tuple:
        return tuple(v for v in self.values if isinstance(v, torch.Tensor))

    @property
    def plain(self) -> bool:
        """Tensors only, for a ``forward`` of fixed arity: the traced graph's inputs are its parameters, in order."""
        return self.fixed_arity and all(isinstance(v, torch.Tensor) for v in self.values)


@dataclass
class CallTemplate:
    """How the traced wrapper calls ``forward``: the tensor parameters' names, and the call with its fixed non-tensor
    values."""

    arguments: Arguments

    @property
    def tensor_names(self) -> list[str]:
        return [self.arguments.names[k] for k in self.arguments.tensor_positions]

    def call(self, forward: Callable, tensors: tuple) -> Any:
        values = list(self.arguments.values)
        for position, t in zip(self.arguments.tensor_positions, tensors):
            values[position] = t
        args, kwargs = self.arguments.with_values(tuple(values)).call_args()
        return forward(*args, **kwargs)
