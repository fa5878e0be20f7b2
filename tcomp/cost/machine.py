"""Calibration of the cost model's constants by microbenchmarks on this machine (cached on disk).

Five measurements, each the fastest of repeated runs after a warm-up (the minimum, not the median: on a shared
machine other work only ever adds time, so the fastest run is the closest to what the hardware does):

- ``gemm_flops_per_s``: ``torch.mm`` of two 512×512 fp32 matrices;
- ``bytes_per_s``: an elementwise add over 4 Mi floats (two reads and a write per element);
- ``copy_bytes_per_s``: a transposition copy ``x.t().contiguous()`` of a 2048×2048 fp32 matrix (read + write);
- ``launch_s``: the time of a tiny ``torch.mm`` (1×1 by 1×1), i.e. the per-call overhead;
- ``matrix_s``: the fixed cost of one matrix product inside a ``bmm`` — a ``bmm`` of 4096 products of 8×8
  matrices, less its launch and FLOPs, per product (a batched GEMM of many small matrices is bound by this, not
  by arithmetic).

The cache key is the processor, the torch version, the thread count and the device, so a different machine or
setting measures again. ``TCOMP_CACHE_DIR`` moves the cache (default ``~/.cache/tcomp``);
``TCOMP_CALIBRATION=default`` skips measuring and uses fixed constants (reproducible plans in tests).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from .model import MachineModel


def cache_dir() -> Path:
    return Path(os.environ.get("TCOMP_CACHE_DIR", Path.home() / ".cache" / "tcomp"))


def machine_key() -> str:
    """The processor, torch version, thread count and device, hashed: what measured times depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    raw = f"{cpu}|{torch.__version__}|{torch.get_num_threads()}|cpu"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def load_or_calibrate() -> MachineModel:
    if os.environ.get("TCOMP_CALIBRATION") == "default":
        return MachineModel()
    path = cache_dir() / f"machine-{machine_key()}.json"
    if path.exists():
        try:
            d = json.loads(path.read_text())
            return MachineModel(**{k: d[k] for k in ("gemm_flops_per_s", "bytes_per_s", "copy_bytes_per_s",
                                                     "launch_s", "matrix_s")}, source=str(path), details=d)
        except (ValueError, KeyError):
            pass
    model = calibrate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**model.details, "gemm_flops_per_s": model.gemm_flops_per_s,
                                    "bytes_per_s": model.bytes_per_s, "copy_bytes_per_s": model.copy_bytes_per_s,
                                    "launch_s": model.launch_s, "matrix_s": model.matrix_s}, indent=2))
    except OSError:
        pass
    return model


def _fastest_time(fn: Callable[[], object], repeats: int = 15, inner: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def calibrate() -> MachineModel:
    """Run the four microbenchmarks (about a second) and return the model."""
    with torch.no_grad():
        a = torch.randn(512, 512)
        b = torch.randn(512, 512)
        t_mm = _fastest_time(lambda: torch.mm(a, b))
        gemm = 2 * 512 ** 3 / t_mm
        x = torch.randn(4 << 20)
        y = torch.randn(4 << 20)
        t_add = _fastest_time(lambda: x + y, repeats=9)
        bw = 3 * 4 * (4 << 20) / t_add
        m = torch.randn(2048, 2048)
        t_copy = _fastest_time(lambda: m.t().contiguous(), repeats=9)
        copy_bw = 2 * 4 * 2048 * 2048 / t_copy
        s1 = torch.randn(1, 1)
        s2 = torch.randn(1, 1)
        t_launch = _fastest_time(lambda: torch.mm(s1, s2), repeats=50, inner=20)
        small_a, small_b = torch.randn(4096, 8, 8), torch.randn(4096, 8, 8)
        t_small = _fastest_time(lambda: torch.bmm(small_a, small_b), repeats=9)
        matrix_s = max(0.0, t_small - t_launch - 2 * 4096 * 8 ** 3 / gemm) / 4096
    details = {"t_mm512_s": t_mm, "t_add_4Mi_s": t_add, "t_transpose_copy_2048_s": t_copy, "t_bmm_4096x8x8_s": t_small,
               "threads": torch.get_num_threads(), "torch": torch.__version__, "measured_at": time.time()}
    return MachineModel(gemm_flops_per_s=gemm, bytes_per_s=bw, copy_bytes_per_s=copy_bw, launch_s=t_launch,
                        matrix_s=matrix_s, source="measured", details=details)
