"""`python -m tcomp.zoo [names…] [--compile]`: the figures of docs/zoo.md, measured on this machine.

Per entry: default input and output shapes, parameter count, FLOPs of one forward at the default input (matmul,
conv and attention FLOPs as counted by `torch.utils.flop_counter.FlopCounterMode`; a multiply-add is 2 FLOPs),
and the CPU time of one forward — the median over repeats after warm-up — in eager mode and, with `--compile`,
of the cold `torch.compile` (compile plus first call, Inductor's caches disabled) and of a compiled forward.

Times are CPU seconds of this process and the compilers it starts, with one intra-op thread and Inductor
compiling in-process. Unlike wall time, CPU time barely changes when other jobs share the cores; on n idle cores
a forward's wall time lies between 1/n of it (GEMM- and conv-bound models) and all of it (overhead-bound ones).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from tcomp.zoo import ZooEntry, entries, get_entry


def _cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _median_cpu_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _shapes(tensors) -> str:
    return " ".join("×".join(map(str, t.shape)) for t in tensors)


def measure(entry: ZooEntry, compile_: bool, repeats: int) -> list[str]:
    """One table row for `entry`."""
    model, inputs = entry.build(), entry.example_inputs()
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            output = model(*inputs)
        row = [f"`{entry.name}`", _shapes(inputs), _shapes([output]),
               f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f} M", f"{counter.get_total_flops() / 1e9:.3f}",
               f"{_median_cpu_seconds(lambda: model(*inputs), 2, repeats) * 1e3:.1f}"]
        if compile_:
            torch._dynamo.reset()
            compiled = torch.compile(model)
            start = _cpu_seconds()
            compiled(*inputs)
            row.append(f"{_cpu_seconds() - start:.1f}")
            row.append(f"{_median_cpu_seconds(lambda: compiled(*inputs), 1, repeats) * 1e3:.1f}")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tcomp.zoo", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="zoo entries (default: all)")
    parser.add_argument("--compile", action="store_true", help="also measure a cold torch.compile")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per measurement (default 5)")
    args = parser.parse_args(argv)
    selected = [get_entry(name) for name in args.names] if args.names else entries()
    torch.set_num_threads(1)
    torch._inductor.config.compile_threads = 1
    torch._inductor.config.force_disable_caches = True
    warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # a consequence of the line above
    header = ["model", "inputs", "output", "params", "GFLOP", "eager CPU ms"]
    if args.compile:
        header += ["compile CPU s", "compiled CPU ms"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for entry in selected:
        print("| " + " | ".join(measure(entry, args.compile, args.repeats)) + " |", flush=True)


if __name__ == "__main__":
    main()
