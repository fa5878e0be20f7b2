"""Where tcomp's Triton kernels can run, and how generated kernel source becomes a cached, autotuned kernel.

Kernels are defined lazily. ``triton.jit`` reads ``TRITON_INTERPRET`` when it *decorates* a function (it then
returns an interpreted function instead of a compiled one), so a kernel defined at import time would be frozen into
whichever mode was on when ``tcomp.codegen.kernels`` was first imported. Here each generated source is executed and
decorated on its first use, and the cache is keyed on whether the interpreter is on: the value of
``TRITON_INTERPRET`` at the moment of a call decides how that call runs. The same holds for the ``@triton.jit``
functions of Triton's own standard library (``tl.cdiv``, ``tl.zeros``, ``tl.sigmoid`` ...), which are decorated
when ``triton`` is imported and so are interpreter-callable only if the variable was set before that import; the
generated kernels therefore use ``tl`` builtins alone (``tl.full``, ``tl.exp``, integer arithmetic).

Autotuning uses ``triton.autotune``. Its cache is keyed by the kernel's ``tune_*`` arguments (power-of-two buckets
of the problem sizes, so that a new sequence length of similar size does not re-tune) and the argument dtypes;
one autotuner exists per (kernel source, device name), which keys the cache by device as well. Under the
interpreter only one small configuration is used: there is nothing to tune and each program instance costs
milliseconds.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import linecache
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: dtypes a kernel reads as matrix operands (tl.dot needs both operands in the same one).
OPERAND_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class TuningConfig:
    """One autotuning candidate: constexpr block sizes plus the launch's warps and pipeline stages."""

    blocks: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int

    @staticmethod
    def of(num_warps: int, num_stages: int, **blocks: int) -> TuningConfig:
        return TuningConfig(tuple(blocks.items()), num_warps, num_stages)

    @property
    def block(self) -> dict[str, int]:
        return dict(self.blocks)


@dataclass(frozen=True)
class KernelSpec:
    """A generated kernel: its Python/Triton source and what is needed to launch and tune it.

    ``params`` are the runtime parameters in the kernel's order; ``tune_key`` the parameters the autotuner keys
    its cache on; ``prune(configs, args)`` narrows or shrinks ``configs`` to fit a problem (``args`` maps the
    kernel's parameters to the call's values).
    """

    name: str
    source: str
    params: tuple[str, ...]
    tune_key: tuple[str, ...]
    configs: tuple[TuningConfig, ...]
    interpreter_config: TuningConfig
    prune: Callable[[Sequence[TuningConfig], dict[str, Any]], list[TuningConfig]]


def triton_available(device: torch.device | str | None = None) -> bool:
    """Whether tcomp's Triton kernels can run on ``device``.

    CUDA devices: Triton imports and a GPU is present. CPU: only under Triton's interpreter
    (``TRITON_INTERPRET=1``). ``None`` asks whether they can run anywhere in this process.
    """
    if importlib.util.find_spec("triton") is None:
        return False
    if device is None:
        return torch.cuda.is_available() or interpreting()
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available()
    return kind == "cpu" and interpreting()


def interpreting() -> bool:
    """Whether Triton's interpreter is on now (``TRITON_INTERPRET`` set to a true value)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def check_operands(where: str, **tensors: torch.Tensor) -> torch.dtype:
    """Check that ``tensors`` can be read by one kernel; return their common dtype.

    They must be tensors of one dtype among float16/bfloat16/float32, all on one device.
    """
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) != 1:
        raise ValueError(f"{where}: operands must share one dtype, got {_listing(dtypes)}")
    dtype = next(iter(dtypes.values()))
    if dtype not in OPERAND_DTYPES:
        raise ValueError(f"{where}: dtype {dtype} is not supported; use one of {_names(OPERAND_DTYPES)}")
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) != 1:
        raise ValueError(f"{where}: operands must be on one device, got {_listing(devices)}")
    return dtype


def check_out_dtype(where: str, out_dtype: torch.dtype | None, default: torch.dtype) -> torch.dtype:
    """The output dtype: ``out_dtype`` when given (validated), else ``default``."""
    if out_dtype is None:
        return default
    if out_dtype not in OPERAND_DTYPES:
        raise ValueError(f"{where}: out_dtype {out_dtype} is not supported; use one of {_names(OPERAND_DTYPES)}")
    return out_dtype


def index_type(*views: torch.Tensor) -> Any:
    """``tl.int64`` when some element of ``views`` lies 2³¹ or more elements from its first, else ``tl.int32``.

    Kernels compute element offsets in this type, so 32-bit arithmetic is used whenever it cannot overflow.
    """
    import triton.language as tl

    reach = max(sum((size - 1) * abs(stride) for size, stride in zip(v.shape, v.stride())) for v in views)
    return tl.int64 if reach >= _INT32_MAX else tl.int32


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: float32 operands use TF32 only where torch would (allow_tf32)."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 and not interpreting():
        return "tf32"
    return "ieee"


def size_bucket(size: int) -> int:
    """The power of two at or above ``size`` (at least 1): the value a kernel's ``tune_*`` argument gets."""
    return 1 << max(0, math.ceil(math.log2(max(size, 1))))


@dataclass(frozen=True, eq=False)
class Launch:
    """One planned kernel call: the kernel, its runtime ``values`` by parameter name, the constexpr ``constants``
    that are not tuned, the grid (a function of the tuned block sizes) and the output it writes."""

    where: str
    spec: KernelSpec
    device: torch.device
    values: dict[str, Any]
    constants: dict[str, Any]
    grid: Callable[[dict[str, int]], tuple[int]]
    out: torch.Tensor

    def run(self) -> torch.Tensor:
        """Run the kernel (defined and autotuned on first use, see the module docstring); return ``out``."""
        if not triton_available(self.device):
            raise RuntimeError(f"{self.where}: Triton kernels cannot run on device '{self.device}': they need a CUDA "
                               "device with triton installed, or CPU tensors under Triton's interpreter "
                               "(TRITON_INTERPRET=1)")
        if interpreting() and any(isinstance(v, torch.Tensor) and v.dtype == torch.bfloat16
                                  for v in (*self.values.values(), self.out)):
            raise ValueError(f"{self.where}: bfloat16 is not supported under Triton's interpreter (it computes "
                             "bf16 wrongly); use float16 or float32, or run on a CUDA device")
        if self.out.numel() == 0:
            return self.out
        kernel = _tuned_kernel(self.spec, _device_key(self.device))
        with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            kernel[self.grid](*(self.values[p] for p in self.spec.params), **self.constants)
        return self.out


def chosen_config(spec: KernelSpec, device: torch.device) -> str | None:
    """The configuration the autotuner chose for the latest run of ``spec``'s kernel on devices like ``device``
    (``None`` before the first run)."""
    best = getattr(_tuned_kernel(spec, _device_key(device)), "best_config", None)
    return None if best is None else str(best)


def _device_key(device: torch.device) -> str:
    if interpreting():
        return "interpreter"
    return f"{torch.cuda.get_device_name(device)} (sm_{''.join(map(str, torch.cuda.get_device_capability(device)))})"


@functools.cache
def _tuned_kernel(spec: KernelSpec, device_key: str) -> Any:
    """The autotuned kernel of ``spec`` for one device kind (``device_key``); ``interpreter`` under the
    interpreter, which is part of the key so that the mode at call time decides."""
    import triton

    jitted = define_kernel(spec)
    if device_key == "interpreter":
        configs = [spec.interpreter_config]
    else:
        configs = list(spec.configs)

    def prune(candidates: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
        kept = spec.prune([_as_tuning_config(c) for c in candidates], {**named_args, **kwargs})
        return [_triton_config(c) for c in kept]

    return triton.autotune([_triton_config(c) for c in configs], key=list(spec.tune_key),
                           prune_configs_by={"early_config_prune": prune})(jitted)


def define_kernel(spec: KernelSpec) -> Any:
    """Execute the generated source of ``spec`` (which decorates itself with ``@triton.jit``) and return the
    kernel. The source is registered with ``linecache`` under a unique file name so that ``inspect`` — which
    ``triton.jit`` uses to read a kernel's source — and tracebacks find it."""
    import triton
    import triton.language as tl

    digest = hashlib.sha1(spec.source.encode()).hexdigest()[:12]
    filename = f"<tcomp.codegen.kernels generated {spec.name} {digest}>"
    linecache.cache[filename] = (len(spec.source), None, spec.source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"triton": triton, "tl": tl, "__name__": "tcomp.codegen.kernels.generated"}
    exec(compile(spec.source, filename, "exec"), namespace)
    return namespace[spec.name]


def _triton_config(config: TuningConfig) -> Any:
    import triton

    return triton.Config(config.block, num_warps=config.num_warps, num_stages=config.num_stages)


def _as_tuning_config(config: Any) -> TuningConfig:
    return TuningConfig(tuple(config.kwargs.items()), config.num_warps, config.num_stages)


def _listing(mapping: dict[str, object]) -> str:
    return ", ".join(f"{name}: {value}" for name, value in mapping.items())


def _names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)
