"""Measured peak memory of a piece of PyTorch code.

On CPU the profiler's memory events (`torch.profiler` with `profile_memory=True`) give every allocation and free
with its time; their running sum, in time order, is the memory allocated since the start, and its maximum is the
peak. On CUDA, `torch.cuda.max_memory_allocated` after a reset gives the same quantity directly. Either way the
result counts only what is allocated while `fn` runs, above what was allocated before it (parameters, inputs).
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def measure_peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated on `device` while `fn()` runs, above the allocation when it started.

    On CPU, memory allocated before `fn` and released inside it counts as a negative amount only if the profiler
    recorded its allocation (an earlier measurement), so release such memory (old gradients) before calling."""
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


_SILENCE_LOCK = threading.Lock()


@contextmanager
def _native_stderr_silenced():
    """File descriptor 2 points to /dev/null inside the block (silences C++ logging that Python cannot filter).

    One block at a time in the process (a lock: fd 2 is process-wide); where fd 2 cannot be redirected (closed,
    or another thread holds the lock) the block runs unsilenced."""
    if not _SILENCE_LOCK.acquire(blocking=False):
        yield
        return
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            finally:
                os.close(devnull)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        _SILENCE_LOCK.release()


OP_WORKSPACE_MIN_BYTES = 1 << 20
"""Operations whose inputs and outputs are all smaller than this are not measured (their workspace is negligible)."""


def op_workspaces(graph: torch.fx.Graph, cache: dict | None = None) -> dict[torch.fx.Node, int]:
    """The temporaries each operation of `graph` allocates beyond its outputs, measured by running it once.

    Kernels allocate memory of their own that the graph does not show: on CPU a convolution holds a second
    output-sized buffer, and the batch-norm backward allocates its input gradient twice. Each distinct operation
    (target, argument shapes, strides and dtypes, other arguments) runs once on made-up inputs (random floats,
    zero integers, which are valid indices) under `measure_peak_memory`; its workspace is the peak minus the bytes
    of its outputs. Views, random, mutating and small operations are not run (workspace 0), nor is anything that
    fails on made-up inputs. `cache` (signature -> bytes) can be shared between calls.
    """
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    cache = {} if cache is None else cache
    result: dict[torch.fx.Node, int] = {}
    with unset_fake_temporarily():  # AOTAutograd calls its partition function under a fake mode
        for node in graph.nodes:
            if node.op != "call_function" or not _measurable(node):
                continue
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: a.meta.get("val"))
            key = _signature(node.target, args, kwargs)
            if key not in cache:
                cache[key] = _measure_op(node.target, args, kwargs)
            if cache[key]:
                result[node] = cache[key]
    return result


def _measurable(node: torch.fx.Node) -> bool:
    target = node.target
    if not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable:
        return False
    if torch.Tag.nondeterministic_seeded in target.tags:
        return False
    if any(r.alias_info is not None for r in target._schema.returns):  # a view
        return False
    values = [node.meta.get("val"), *(a.meta.get("val") for a in node.all_input_nodes)]
    tensors = [t for t in _leaves(values) if isinstance(t, torch.Tensor)]
    if not tensors or any(t.device.type not in ("cpu", "cuda") for t in tensors):
        return False
    return max(t.numel() * t.element_size() for t in tensors) >= OP_WORKSPACE_MIN_BYTES


def _leaves(value: object) -> list:
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _signature(target: object, args: object, kwargs: object) -> tuple:
    def key(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type)
        if isinstance(value, (tuple, list)):
            return tuple(key(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, key(v)) for k, v in value.items()))
        return value if isinstance(value, (int, float, bool, str, type(None), torch.dtype)) else repr(value)
    return (target, key(args), key(kwargs))


def _measure_op(target: object, args: object, kwargs: object) -> int:
    def real(value: object) -> object:
        if isinstance(value, torch.Tensor):
            t = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device.type)
            return t.normal_() if t.is_floating_point() else t.zero_()
        if isinstance(value, (tuple, list)):
            return type(value)(real(v) for v in value)
        return value

    try:
        args, kwargs = real(args), real(kwargs)
        device = next((t.device for t in _leaves([args, list(kwargs.values())]) if isinstance(t, torch.Tensor)),
                      torch.device("cpu"))
        outputs: list = []
        peak = measure_peak_memory(lambda: outputs.append(target(*args, **kwargs)), device)
    except Exception:  # noqa: BLE001 - made-up inputs an operation rejects: no measurement, no workspace
        return 0
    produced = sum(t.untyped_storage().nbytes() for t in _leaves(outputs) if isinstance(t, torch.Tensor))
    return max(peak - produced, 0)
