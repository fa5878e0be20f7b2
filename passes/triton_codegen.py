"""triton_codegen: run contraction steps as generated Triton kernels (CUDA; the interpreter on CPU for tests).

For every planned Network the pass decides whether its pairwise GEMM steps run as tcomp's generated strided
batched-GEMM kernels (:mod:`tcomp.codegen.kernels`): each step becomes one ``contract_pair`` call over the two terms in
whatever layout they are — the kernel folds permutations, slices and broadcasts into its pointer arithmetic, so
none of the plan's transposition copies happen — and the Network's epilogue (bias, scaling, activation, residual
add) is fused into the last step's kernel when the result needs no reshape. Broadcast multiplies and reductions
stay torch calls.

``kernels="auto"``: kernels for programs compiled for CUDA inputs where Triton is available, torch elsewhere;
``"triton"``: always (on CPU that needs ``TRITON_INTERPRET=1``); ``"torch"``: never. The compiled module guards on
the device, so a program compiled for one device never runs on another. ``CompiledModule.code`` and
``tcomp inspect --kernels`` show the generated kernel sources.
"""
from __future__ import annotations

import torch

from tcomp.codegen.kernels import triton_available
from tcomp.ir import Network, Program
from tcomp.passmanager import Pass, PassContext, PassReport

NAME = "triton_codegen"


def wants_kernels(ctx: PassContext) -> bool:
    choice = ctx.options.kernels
    if choice == "torch":
        return False
    devices = {t.device for t in ctx.example_inputs if isinstance(t, torch.Tensor)}
    device = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
    if choice == "triton":
        if not triton_available(device):
            raise RuntimeError(f"kernels='triton' but Triton kernels cannot run on {device} here "
                               f"(CUDA with triton, or TRITON_INTERPRET=1 on CPU)")
        return True
    return device.type == "cuda" and triton_available(device)


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    report = PassReport(NAME)
    if not wants_kernels(ctx):
        report.notes.append(f"kernels={ctx.options.kernels!r}: torch calls (no CUDA device here)")
        return program, report
    new = program.copy()
    count = 0
    for k, op in enumerate(new.ops):
        if isinstance(op, Network) and op.plan is not None and any(s.kind == "gemm" and not s.folded
                                                                   for s in op.plan.steps):
            dtypes = {v.dtype for v in op.operands} | {op.compute_dtype or op.out.dtype}
            if not dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
                continue
            new.ops[k] = op.replace(kernel="triton")
            count += 1
    report.changed = count > 0
    report.notes.append(f"{count} network(s) run their GEMM steps as generated Triton kernels")
    return new, report


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
