"""Binding a call to ``forward``'s signature: the flat argument values tcomp compiles for and guards on, and the way
back to positional and keyword arguments.

``forward(self, x, mask=None, *rest, scale=1.0, **extra)`` called as ``m(a, b, c, scale=2.0)`` flattens to
``(a, b, c, 2.0)`` with names ``x, mask, rest_0, scale``: one value per parameter (``*args``/``**kwargs`` spread,
defaults filled in). Capture traces a wrapper that takes the tensor values and rebuilds the call around the fixed
non-tensor ones (:class:`CallTemplate`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable


def flatten_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple[tuple, list[str], Callable]:
    """Bind a call to ``forward``'s signature: the flat argument values (``*args``/``**kwargs`` spread), a name for
    each, and a function that rebuilds ``(args, kwargs)`` from flat values."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    flat: list = []
    names: list[str] = []
    layout: list[tuple[str, str, Any]] = []  # (parameter kind, name, key)
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind == inspect.Parameter.VAR_POSITIONAL:
            for j, v in enumerate(value):
                flat.append(v)
                names.append(f"{name}_{j}")
                layout.append(("var_positional", name, j))
        elif kind == inspect.Parameter.VAR_KEYWORD:
            for key, v in value.items():
                flat.append(v)
                names.append(key)
                layout.append(("var_keyword", name, key))
        else:
            flat.append(value)
            names.append(name)
            layout.append(("keyword" if kind == inspect.Parameter.KEYWORD_ONLY else "positional", name, None))

    def rebuild(values: tuple) -> tuple[tuple, dict]:
        pos: list = []
        kw: dict = {}
        for (kind, _, key), v in zip(layout, values):
            if kind in ("positional", "var_positional"):
                pos.append(v)
            elif kind == "var_keyword":
                kw[key] = v
            else:
                kw[_] = v
        return tuple(pos), kw

    return tuple(flat), names, rebuild


def rebuild_call(signature: inspect.Signature, flat: tuple) -> tuple[tuple, dict]:
    """Positional/keyword arguments that bind to ``flat`` (the inverse of flattening, for plain signatures and
    ``*args``: flat values in parameter order)."""
    args: list = []
    kwargs: dict = {}
    it = iter(flat)
    params = list(signature.parameters.values())
    for k, p in enumerate(params):
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            n_after = sum(1 for q in params[k + 1:] if q.kind != inspect.Parameter.VAR_KEYWORD)
            remaining = list(it)
            args.extend(remaining[:len(remaining) - n_after])
            it = iter(remaining[len(remaining) - n_after:])
        elif p.kind in (inspect.Parameter.KEYWORD_ONLY,):
            kwargs[p.name] = next(it)
        elif p.kind == inspect.Parameter.VAR_KEYWORD:
            continue
        else:
            args.append(next(it))
    return tuple(args), kwargs


@dataclass
class CallTemplate:
    """How the traced wrapper calls ``forward``: tensor parameter names, and the fixed non-tensor values."""

    tensor_names: list[str]
    tensor_positions: list[int]
    flat: tuple
    rebuild: Callable

    def call(self, forward: Callable, tensors: tuple):
        values = list(self.flat)
        for pos, t in zip(self.tensor_positions, tensors):
            values[pos] = t
        args, kwargs = self.rebuild(tuple(values))
        return forward(*args, **kwargs)
