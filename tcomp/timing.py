"""Wall-clock timing of callables on a shared, noisy machine: in turns, after a warm-up.

Every time tcomp measures — an option against its dense layer (:mod:`tcomp.approx.option_time`), two layouts of a
program (:mod:`tcomp.passes.layout`), the outcomes of the selection (:mod:`tcomp.passes.select`), eager against compiled
(:mod:`tcomp.cli.bench`) — goes through :func:`in_turns`. The callables compared run in turns (round robin), so a burst
of other work slows them alike instead of making one look slow; each is called once untimed first (lazy initialisation,
oneDNN primitive creation, allocation); with ``sync`` (:func:`sync_for` gives ``torch.cuda.synchronize`` for CUDA
inputs) the device is synchronised around every timed call. Ratios of times taken in one call are what the measurements
rely on; absolute times move with the load.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def samples_in_turns(fns: Mapping[str, Callable[[], object]], *, rounds: int = 7, per_round: int = 1,
                     max_rounds: int | None = None, min_seconds: float = 0.0, warm_up: bool = True,
                     sync: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Seconds of every timed call of each function. A round calls each function ``per_round`` times in turn;
    ``rounds`` rounds run at least, then more while less than ``min_seconds`` have passed since the timing began,
    up to ``max_rounds`` (default 50 × ``rounds``)."""
    sync = sync or (lambda: None)
    limit = max(rounds, max_rounds if max_rounds is not None else 50 * rounds)
    if warm_up:
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    r = 0
    while r < limit and (r < rounds or time.perf_counter() - start < min_seconds):
        for k, fn in fns.items():
            for _ in range(per_round):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                samples[k].append(time.perf_counter() - t0)
        r += 1
    return samples


def in_turns(fns: Mapping[str, Callable[[], object]], *, statistic: Callable[[list[float]], float] = statistics.median,
             **kw) -> dict[str, float]:
    """The median (or ``statistic``: ``min`` for the fastest, which other work on the machine can only slow) of
    each function's :func:`samples_in_turns`."""
    return {k: statistic(v) for k, v in samples_in_turns(fns, **kw).items()}


def sync_for(tensors) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when any of ``tensors`` is on a CUDA device (its kernels run asynchronously, so
    a call returns before its work is done), else None."""
    if any(isinstance(t, torch.Tensor) and t.is_cuda for t in tensors):
        return torch.cuda.synchronize
    return None


def _one(fn: Callable, args: tuple | list, repeats: int, statistic) -> float:
    with torch.no_grad():
        return in_turns({"fn": lambda: fn(*args)}, rounds=repeats, max_rounds=repeats, statistic=statistic,
                        sync=sync_for(args))["fn"]


def fastest_time(fn: Callable, args: tuple | list, repeats: int = 9) -> float:
    """The fastest of ``repeats`` calls ``fn(*args)`` without gradients, after a warm-up call (other work on the
    machine only adds time)."""
    return _one(fn, args, repeats, min)


def median_time(fn: Callable, args: tuple | list, repeats: int = 5) -> float:
    """The median of ``repeats`` calls ``fn(*args)`` without gradients, after a warm-up call."""
    return _one(fn, args, repeats, statistics.median)
