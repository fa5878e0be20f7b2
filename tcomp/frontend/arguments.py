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


class _From:
    """A marker bound in place of a call's value: it came from positional argument ``key`` (``keyword`` False) or
    from keyword ``key``."""

    __slots__ = ("keyword", "key")

    def __init__(self, keyword: bool, key: Any):
        self.keyword, self.key = keyword, key


@dataclass(frozen=True)
class _Template:
    """How every call of one shape binds: per value its source — ``(0, i)`` positional argument ``i``, ``(1, name)``
    keyword ``name``, ``(2, value)`` a default — and the binding's names, slots and flags, which the shape fixes."""

    sources: tuple
    names: tuple[str, ...]
    slots: tuple[str | None, ...]
    given: tuple[bool, ...]
    fixed_arity: bool
    in_order: bool  # the values are the positional arguments themselves, in order

    def fill(self, args: tuple, kwargs: dict) -> "Arguments":
        if self.in_order:
            values = args if type(args) is tuple else tuple(args)
        else:
            values = tuple(args[x] if s == 0 else kwargs[x] if s == 1 else x for s, x in self.sources)
        return Arguments(values, self.names, self.slots, self.given, self.fixed_arity)


class Binder:
    """Binds the calls of one ``forward`` signature, faster than ``Signature.bind`` (which costs more than a small
    model's call). A call's shape — how many arguments it passes by position, and which keywords in which order —
    fixes where each bound value comes from (an argument, a keyword, a default) and the binding's names, slots and
    flags. The first call of a shape binds through :meth:`Arguments.bind` with markers in place of its values (so a
    call that does not bind raises ``Signature.bind``'s TypeError); later calls of that shape only pick values."""

    MAX_SHAPES = 64  # past this many call shapes, a new one binds through the general path each time

    def __init__(self, signature: inspect.Signature):
        self.signature = signature
        self._templates: dict = {}

    def bind(self, args: tuple, kwargs: dict) -> "Arguments":
        shape = (len(args), tuple(kwargs)) if kwargs else len(args)
        template = self._templates.get(shape)
        if template is None:
            template = self._template(len(args), tuple(kwargs))
            if len(self._templates) < self.MAX_SHAPES:
                self._templates[shape] = template
        return template.fill(args, kwargs)

    def _template(self, n_args: int, keywords: tuple[str, ...]) -> _Template:
        marked = Arguments.bind(self.signature, tuple(_From(False, i) for i in range(n_args)),
                                {k: _From(True, k) for k in keywords})
        sources = tuple((int(v.keyword), v.key) if isinstance(v, _From) else (2, v) for v in marked.values)
        in_order = sources == tuple((0, i) for i in range(n_args))
        return _Template(sources, marked.names, marked.slots, marked.given, marked.fixed_arity, in_order)


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
    def bind(signature: inspect.Signature, args: tuple, kwargs: dict) -> "Arguments":
        """The general path (a caller that binds many calls keeps a :class:`Binder`)."""
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
        fixed_arity = all(p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                          for p in signature.parameters.values())
        return Arguments(tuple(values), tuple(names), tuple(slots), tuple(given), fixed_arity)

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
    def cuda_devices(self) -> list[int]:
        """The CUDA devices its tensors are on (whose random generators ``torch.random.fork_rng`` must fork)."""
        return sorted({t.device.index or 0 for t in self.tensors if t.is_cuda})

    def copied(self) -> "Arguments":
        """These arguments with every tensor copied, detached, ``requires_grad`` kept (a tensor passed twice is copied
        once, so aliasing is kept): what compiling runs the model on, so that the caller's tensors are never
        touched."""
        memo: dict[int, torch.Tensor] = {}

        def copy(v):
            if not isinstance(v, torch.Tensor):
                return v
            if id(v) not in memo:
                memo[id(v)] = v.detach().clone().requires_grad_(v.requires_grad)
            return memo[id(v)]

        return self.with_values(tuple(copy(v) for v in self.values))

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
