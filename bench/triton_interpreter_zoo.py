"""Every zoo model with ``kernels="triton"`` under Triton's interpreter (CPU), against eager: the full-size check
of the generated kernels that the test suite runs only on the smaller models (ViT-tiny, MLP-Mixer and GPT-2 take
minutes each here, since every kernel program instance is interpreted).

    TRITON_INTERPRET=1 python bench/triton_interpreter_zoo.py [names ...]
"""
from __future__ import annotations

import os
import sys
import time

import torch

import tcomp
from tcomp.numerics import compare
from tcomp.zoo import entries, get_entry


def small_inputs(name: str) -> tuple:
    inputs = get_entry(name).example_inputs(batch=1)
    if name in ("resnet18", "resnet50"):
        return (inputs[0][:, :, :32, :32].contiguous(),)
    if name in ("minilm", "gpt2_small"):
        return tuple(t[:, :8].contiguous() for t in inputs)
    return inputs


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 (this check runs the kernels under Triton's interpreter)", file=sys.stderr)
        return 2
    names = argv or [e.name for e in entries()]
    failed = 0
    print("| model | kernel networks | max rel err | ok | seconds |\n|---|---|---|---|---|")
    for name in names:
        model = get_entry(name).build()
        x = small_inputs(name)
        t0 = time.perf_counter()
        compiled = tcomp.compile(model, x, kernels="triton", strict=True, backend="eager")
        with torch.no_grad():
            c = compare(model(*x), compiled(*x))
        n = sum(getattr(op, "kernel", None) == "triton" for op in compiled.program.ops)
        print(f"| {name} | {n} | {c.max_rel:.1e} | {'yes' if c.ok else 'NO'} | {time.perf_counter() - t0:.0f} |",
              flush=True)
        failed += not c.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
