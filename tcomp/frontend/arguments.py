"""Binding a call to ``forward``'s signature: the flat argument values tcomp compiles for and guards on, their names,
and the way back to positional and keyword arguments.

``forward(self, x, mask=None, *rest, scale=1.0, **extra)`` called as ``m(a, b, c, scale=2.0, bias=t)`` binds to the
values ``(a, b, c, 2.0, t)`` named ``x, mask, rest_0, scale, bias``: one value per parameter (``*args`` and
``**kwargs`` spread, defaults filled in). The names are part of a binding — two calls that pass the same tensor as
``bias=`` and as ``gain=`` are different calls. Capture traces a wrapper that takes the tensor values and rebuilds the
call around the fixed non-tensor ones (:class:`CallTemplate`).
"""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
               inspect.Parameter.VAR_POSITIONAL)


_PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout,
                torch.memory_format, enum.Enum, slice, type(Ellipsis))


def plain_value(v: Any) -> bool:
    """Whether a non-tensor argument is a plain value, which a guard compares by equality: numbers, strings, None,
    dtypes, devices, enums, and tuples, lists, dicts and sets of them. Anything else (a cache object, a dataclass
    holding tensors) may change between calls in ways no guard sees."""
    if isinstance(v, _PLAIN_TYPES):
        return True
    if isinstance(v, dict) and type(v) is dict:
        return all(plain_value(k) and plain_value(x) for k, x in v.items())
    if type(v) in (tuple, list, set, frozenset, torch.Size):
        return all(plain_value(x) for x in v)
    return False


@dataclass(frozen=True)
class Positional:
    """How a call that passes every argument by position binds, where that needs no ``Signature.bind`` (which costs
    more than a small model's call): ``names`` when every parameter can be passed by position (none is ``*args``,
    ``**kwargs`` or keyword-only); ``varargs``, the name of ``*args`` when it is the only parameter besides
    ``**kwargs`` (a GraphModule's ``forward`` as ``inspect`` sees it)."""

    names: tuple[str, ...] | None = None
    varargs: str | None = None

    @staticmethod
    def of(signature: inspect.Signature) -> "Positional":
        params = list(signature.parameters.values())
        if all(p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params):
            return Positional(names=tuple(p.name for p in params))
        rest = [p for p in params if p.kind != inspect.Parameter.VAR_KEYWORD]
        if len(rest) == 1 and rest[0].kind == inspect.Parameter.VAR_POSITIONAL:
            return Positional(varargs=rest[0].name)
        return Positional()

    def bind(self, args: tuple) -> "Arguments | None":
        n = len(args)
        if self.names is not None and n == len(self.names):
            return Arguments(tuple(args), self.names, (None,) * n, (True,) * n, True)
        if self.varargs is not None:
            return Arguments(tuple(args), tuple(f"{self.varargs}_{j}" for j in range(n)), (None,) * n, (True,) * n,
                             False)
        return None


@dataclass(frozen=True)
class Arguments:
    """One call of ``forward``, bound (see the module docstring). ``slots``: per value, whether it goes back as a
    positional argument (None) or a keyword (its name); ``given``: whether the call gave it (a default the call
    left out is left out again: a decorator may read its keywords, as transformers' ``deprecate_kwarg`` does);
    ``fixed_arity``: ``forward`` has neither ``*args`` nor ``**kwargs`` nor keyword-only parameters."""

    values: tuple
    names: tuple[str, ...]
    slots: tuple[str | None, ...]
    given: tuple[bool, ...]
    fixed_arity: bool = True

    @staticmethod
    def bind(signature: inspect.Signature, args: tuple, kwargs: dict,
             positional: Positional | None = None) -> "Arguments":
        """``positional``: :meth:`Positional.of` the signature, where the caller keeps it."""
        positional = positional or Positional.of(signature)
        fast = None if kwargs else positional.bind(args)  # what the general path gives, 10x faster
        if fast is not None:
            return fast
        bound = signature.bind(*args, **kwargs)
        passed = set(bound.arguments)
        bound.apply_defaults()
        values: list = []
        names: list[str] = []
        slots: list[str | None] = []
        given: list[bool] = []
        for position, (name, value) in enumerate(bound.arguments.items()):
            kind = signature.parameters[name].kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                values += value
                names += [f"{name}_{j}" for j in range(len(value))]
                slots += [None] * len(value)
                given += [True] * len(value)
            elif kind == inspect.Parameter.VAR_KEYWORD:
                values += value.values()
                names += value.keys()
                slots += value.keys()
                given += [True] * len(value)
            else:  # by position as the call passed it, else by name (a positional-only one is left out or given)
                values.append(value)
                names.append(name)
                by_position = (kind == inspect.Parameter.POSITIONAL_ONLY
                               or (kind in _POSITIONAL and position < len(args)))
                slots.append(None if by_position else name)
                given.append(name in passed)
        return Arguments(tuple(values), tuple(names), tuple(slots), tuple(given),
                         Positional.of(signature).names is not None)

    def call_args(self) -> tuple[tuple, dict]:
        """``(args, kwargs)`` that bind to these values, the defaults the call left out left out."""
        args = tuple(v for v, slot, g in zip(self.values, self.slots, self.given) if slot is None and g)
        return args, {slot: v for v, slot, g in zip(self.values, self.slots, self.given) if slot is not None and g}

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
