"""The cost model's constants, measured by microbenchmarks on this machine and kept in the cache.

Five measurements, each the fastest of repeated runs after a warm-up (the minimum, not the median: on a shared
machine other work only ever adds time, so the fastest run is the closest to what the hardware does):

- ``gemm_flops_per_s``: ``torch.mm`` of two 512×512 fp32 matrices;
- ``bytes_per_s``: an elementwise add over 4 Mi floats (two reads and a write per element);
- ``copy_bytes_per_s``: a transposition copy ``x.t().contiguous()`` of a 2048×2048 fp32 matrix (read + write);
- ``launch_s``: the time of a tiny ``torch.mm`` (1×1 by 1×1), i.e. the per-call overhead;
- ``matrix_s``: the fixed cost of one matrix product inside a ``bmm`` — a ``bmm`` of 4096 products of 8×8
  matrices, less its launch and FLOPs, per product (a batched GEMM of many small matrices is bound by this, not
  by arithmetic).

:func:`gemm_speedup` is measured on first use in a process (the precision pass asks it): how much faster a GEMM runs
in a reduced dtype — on an AVX2 CPU bf16 is about 100× *slower* than float32.

The constants belong to the machine key of :mod:`tcomp.cache` (processor, CPU capability, torch version,
threads), so another machine or setting measures again. ``TCOMP_CALIBRATION=default`` skips measuring and uses
fixed constants (reproducible plans in tests).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Callable

import torch

from tcomp.cache import DiskCache
from tcomp.timing import fastest_time

from .model import MachineModel

_CONSTANTS = ("gemm_flops_per_s", "bytes_per_s", "copy_bytes_per_s", "launch_s", "matrix_s")
_measured: MachineModel | None = None


def machine_model() -> MachineModel:
    """This machine's constants: measured once (about a second), then read from the cache."""
    global _measured
    if os.environ.get("TCOMP_CALIBRATION") == "default":
        return MachineModel()
    if _measured is None:
        cache = DiskCache.open("machine")
        found = cache.get("constants", valid=_valid_constants)
        if found is DiskCache.MISSING:
            model = measure()
            cache.put("constants", {**model.details, **{k: getattr(model, k) for k in _CONSTANTS}})
        else:
            model = MachineModel(**{k: float(found[k]) for k in _CONSTANTS}, source=str(cache.path), details=found)
        _measured = model
    return _measured


@functools.cache
def gemm_speedup(dtype: torch.dtype) -> float:
    """How much faster a 512×512×512 GEMM runs in ``dtype`` than in float32 here, measured once per process (not
    kept on disk: one reading taken under load would otherwise decide for every later process)."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    ar, br = a.to(dtype), b.to(dtype)
    return _fastest(lambda: a @ b, 7) / _fastest(lambda: ar @ br, 7)


def _valid_constants(d) -> bool:
    """The three rates positive, the two fixed costs non-negative (a zero rate would divide by zero)."""
    return isinstance(d, dict) and all(isinstance(d.get(k), (int, float)) for k in _CONSTANTS) and \
        all(d[k] > 0 for k in _CONSTANTS[:3]) and all(d[k] >= 0 for k in _CONSTANTS[3:])


def measure() -> MachineModel:
    """Run the five microbenchmarks (about a second) and return the model."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    t_mm = _fastest(lambda: torch.mm(a, b), 15, inner=3)
    gemm = 2 * 512 ** 3 / t_mm
    x, y = torch.randn(4 << 20), torch.randn(4 << 20)
    t_add = _fastest(lambda: x + y, 9, inner=3)
    m = torch.randn(2048, 2048)
    t_copy = _fastest(lambda: m.t().contiguous(), 9, inner=3)
    s1, s2 = torch.randn(1, 1), torch.randn(1, 1)
    t_launch = _fastest(lambda: torch.mm(s1, s2), 50, inner=20)
    small_a, small_b = torch.randn(4096, 8, 8), torch.randn(4096, 8, 8)
    t_small = _fastest(lambda: torch.bmm(small_a, small_b), 9, inner=3)
    details = {"t_mm512_s": t_mm, "t_add_4Mi_s": t_add, "t_transpose_copy_2048_s": t_copy, "t_bmm_4096x8x8_s": t_small,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "measured_at": time.time()}
    return MachineModel(gemm_flops_per_s=gemm, bytes_per_s=3 * 4 * (4 << 20) / t_add,
                        copy_bytes_per_s=2 * 4 * 2048 * 2048 / t_copy, launch_s=t_launch,
                        matrix_s=max(0.0, t_small - t_launch - 2 * 4096 * 8 ** 3 / gemm) / 4096, source="measured",
                        details=details)


def _fastest(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Seconds per call of ``fn``: the fastest of ``repeats`` timings of ``inner`` calls each (a call too short to
    time alone is timed ``inner`` times in a row). Each result is dropped before the next call, so the memory
    traffic measured is that of one call, not of several results kept alive."""
    def calls() -> None:
        for _ in range(inner):
            fn()

    return fastest_time(calls, (), repeats) / inner
