"""Measured peak memory of a piece of PyTorch code.

On CPU the profiler's memory events (`torch.profiler` with `profile_memory=True`) give every allocation and free
with its time; their running sum, in time order, is the memory allocated since the start, and its maximum is the
peak. On CUDA, `torch.cuda.max_memory_allocated` after a reset gives the same quantity directly. Either way the
result counts only what is allocated while `fn` runs, above what was allocated before it (parameters, inputs).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def measure_peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated on `device` while `fn()` runs, above the allocation when it started."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(torch.cuda.max_memory_allocated(device) - before, 0)
    if device.type != "cpu":
        raise ValueError(f"measure_peak_memory supports cpu and cuda devices, not {device.type}")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # Kineto prints a line to stderr on each start and stop
        prof.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    events = sorted(  # stable: events at the same nanosecond keep their recorded order
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
         if e.name() == "[memory]" and e.device_type() == DeviceType.CPU),
        key=lambda event: event[0],
    )
    peak = current = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


@contextmanager
def _native_stderr_silenced():
    """File descriptor 2 points to /dev/null inside the block (silences C++ logging that Python cannot filter)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
