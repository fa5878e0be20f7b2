"""Resolving a CLI target to a model and its example inputs.

A target is ``zoo:NAME`` (a built-in model), ``path/to/file.py:factory`` or ``package.module:factory``. A
factory is called with no arguments and returns a model, or a ``(model, example_inputs)`` pair. Input shapes come
from the zoo entry, from the factory, or from ``--input`` specs such as ``8x3x224x224`` (float32) or
``32x128:int64`` (random integers in [0, 100), e.g. token ids); ``--batch`` changes the first dimension.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from tcomp.zoo import UnknownModelError, get_entry


class TargetError(ValueError):
    """The target or its input specification cannot be resolved (the message says how to fix it)."""


@dataclass
class Target:
    name: str
    model: nn.Module
    inputs: tuple


_DTYPES = {"float32": torch.float32, "float": torch.float32, "f32": torch.float32, "float16": torch.float16,
           "f16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64,
           "int64": torch.int64, "long": torch.int64, "int32": torch.int32}


def parse_input_spec(spec: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``8x3x224x224`` or ``32x128:int64`` -> a random tensor of that shape and dtype."""
    shape_part, _, dtype_part = spec.partition(":")
    try:
        shape = tuple(int(s) for s in shape_part.lower().split("x"))
    except ValueError:
        raise TargetError(f"bad input spec {spec!r}: expected sizes separated by 'x', like 8x3x224x224") from None
    if any(s < 1 for s in shape):
        raise TargetError(f"bad input spec {spec!r}: sizes must be positive")
    dtype = _DTYPES.get(dtype_part or "float32")
    if dtype is None:
        raise TargetError(f"bad input spec {spec!r}: unknown dtype {dtype_part!r} (one of {sorted(_DTYPES)})")
    g = generator or torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(0, 100, shape, generator=g, dtype=dtype)


def resolve(target: str, input_specs: list[str] | None = None, batch: int | None = None) -> Target:
    """The model (in eval mode) and example inputs named by ``target``."""
    inputs: tuple | None = None
    if target.startswith("zoo:"):
        try:
            entry = get_entry(target[4:])
        except UnknownModelError as e:
            raise TargetError(str(e)) from None
        model = entry.build()
        if not input_specs:
            inputs = entry.example_inputs(batch=batch)
        name = entry.name
    else:
        module_part, sep, factory_name = target.rpartition(":")
        if not sep or not module_part or not factory_name:
            raise TargetError(f"bad target {target!r}: use zoo:NAME, path/to/file.py:factory or "
                              f"package.module:factory (see `tcomp zoo` for names)")
        module = _import(module_part)
        factory = getattr(module, factory_name, None)
        if factory is None or not callable(factory):
            raise TargetError(f"{module_part} has no callable {factory_name!r}")
        made = factory()
        if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
            model, inputs = made
            inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        elif isinstance(made, nn.Module):
            model = made
        else:
            raise TargetError(f"{target} returned {type(made).__name__}; expected an nn.Module or "
                              f"(nn.Module, example_inputs)")
        model.eval()
        name = factory_name
    if input_specs:
        inputs = tuple(parse_input_spec(s) for s in input_specs)
    if inputs is None:
        raise TargetError(f"{target}: no example inputs; pass --input SHAPE (e.g. --input 8x3x224x224)")
    if batch is not None and not target.startswith("zoo:"):
        inputs = tuple(_rebatch(t, batch) for t in inputs)
    return Target(name, model, inputs)


def _rebatch(t: Any, batch: int) -> Any:
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return t
    reps = -(-batch // t.shape[0])
    return torch.cat([t] * reps)[:batch]


def _import(module_part: str):
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part)
        if not path.exists():
            raise TargetError(f"no such file: {module_part}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_part)
    except ImportError as e:
        raise TargetError(f"cannot import {module_part}: {e}") from None
