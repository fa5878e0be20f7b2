"""Compiling a generated kernel for an NVIDIA GPU that is not present, to read its register and memory use.

Triton compiles ahead of time when given a target (``triton.compile(ASTSource(...), target=GPUTarget(...))``): the
whole pipeline — Triton IR, TritonGPU IR, LLVM, PTX, and ``ptxas`` to a cubin — runs on the CPU with the tools in
Triton's wheel. The launch-time specialisation is reproduced from example argument values the way Triton's JIT does
it (an integer equal to 1 becomes a constant, one divisible by 16 gets a divisibility hint, pointers are assumed
16-byte aligned), and ``cuobjdump --dump-resource-usage`` reads the cubin's registers, stack (spills) and static
shared memory. This is how the kernels' tile configurations are checked against a Hopper GPU's register file on a
machine without one; it says nothing about speed.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from . import contraction, monarch
from .epilogue import Epilogue
from .runtime import KernelSpec, Launch, TuningConfig, define_kernel

_TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass(frozen=True)
class CompiledResources:
    """What one compiled kernel uses per thread and per program."""

    registers: int
    stack_bytes: int
    shared_bytes: int
    uses_wgmma: bool

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0


def compile_for_target(launch: Launch, config: TuningConfig, capability: int = 90) -> CompiledResources:
    """Compile the kernel of a planned ``launch`` with ``config`` for compute capability ``capability`` and report
    its resource use. The launch's tensors may live on any device, ``meta`` included: only their dtypes, and the
    launch's integer values, matter."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec, values = launch.spec, launch.values
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {**config.block, **launch.constants}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for position, name in enumerate(spec.params):
        value = values[name]
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
            attrs[(position,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1 and name not in _unspecialised(spec):
            constexprs[name] = 1
        else:
            signature[name] = "i64" if abs(value) > 2**31 - 1 else "i32"
            if value % 16 == 0 and name not in _unspecialised(spec):
                attrs[(position,)] = [["tt.divisibility", 16]]
    signature.update(dict.fromkeys(constexprs, "constexpr"))
    kernel = _compiled_definition(spec)
    source = ASTSource(kernel, signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    usage = _resource_usage(compiled.asm["cubin"])
    return CompiledResources(registers=usage["REG"], stack_bytes=usage["STACK"], shared_bytes=compiled.metadata.shared,
                             uses_wgmma="wgmma.mma_async" in compiled.asm["ptx"])


def _compiled_definition(spec: KernelSpec) -> Any:
    """The kernel decorated as a compiled (not interpreted) function, whatever ``TRITON_INTERPRET`` says now:
    ``triton.jit`` reads the variable while decorating, so it is switched off for that moment only."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        return define_kernel(spec)
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _unspecialised(spec: KernelSpec) -> set[str]:
    """Parameters the kernel's ``@triton.jit(do_not_specialize=...)`` exempts from specialisation."""
    found = re.search(r"do_not_specialize=\[([^\]]*)\]", spec.source)
    return set(re.findall(r'"(\w+)"', found.group(1))) if found else set()


def _resource_usage(cubin: bytes) -> dict[str, int]:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as file:
            file.write(cubin)
        report = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True)
    return {key: int(number) for key, number in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", report.stdout)}


def _report() -> None:
    """Print the resource use, on sm_90 in float16, of every GPU configuration of the fused Monarch kernel (width
    4096: 64 blocks of 64, 16384 rows) and of the contraction kernel (``btd,fd->btf`` + bias + GELU, 8×1024 tokens,
    1024 → 4096 features)."""
    meta = {"device": "meta", "dtype": torch.float16}
    x, factor = torch.empty(16384, 4096, **meta), torch.empty(64, 64, 64, **meta)
    fused = monarch.plan_block_tensor_train("monarch", x, factor.unsqueeze(-1), factor.unsqueeze(-1), None, None)
    gemm = contraction.plan_contraction("btd,fd->btf", torch.empty(8, 1024, 1024, **meta),
                                        torch.empty(4096, 1024, **meta),
                                        epilogue=Epilogue().bias(torch.empty(4096, **meta)).activation("gelu"))
    print("kernel      tile constexprs            warps stages  registers  spill bytes  shared bytes  wgmma")
    for label, launch, configs in (("monarch", fused, monarch.prune_configs(monarch.CONFIGS, fused.values)),
                                   ("contract", gemm, contraction.CONFIGS)):
        for config in configs:
            used = compile_for_target(launch, config)
            blocks = "x".join(str(v) for v in config.block.values())
            print(f"{label:<11} {blocks:<26} {config.num_warps:>5} {config.num_stages:>6} {used.registers:>10} "
                  f"{used.stack_bytes:>12} {used.shared_bytes:>13}  {'yes' if used.uses_wgmma else 'no'}", flush=True)


if __name__ == "__main__":
    _report()
