"""Triton kernels for tcomp's contraction steps (issue 6, the kernel side).

* :func:`contract_pair` — one pairwise contraction (an einsum equation) as a generated strided batched-GEMM
  kernel: operand permutations, slices and broadcasts folded into the pointer arithmetic, an :class:`Epilogue`
  (bias, scale, pointwise functions, residual, output cast) fused before the store;
* :func:`monarch_multiply`, :func:`btt_multiply` — a whole Monarch (Dao et al. 2022) or Block Tensor-Train
  (Qiu et al. 2024) product in one kernel, the intermediate kept on chip;
* :func:`kernel_source` — the generated source of the kernel that runs for an equation;
* :func:`triton_available` — whether the kernels can run on a device.

Kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``). They are
generated, compiled and autotuned on first use, so the interpreter setting at the time of a call decides how that
call runs (see :mod:`tcomp.codegen.kernels.runtime`). See docs/kernels.md.
"""
from .contraction import contract_pair
from .epilogue import ACTIVATIONS, Activation, AddTensor, Epilogue, Scale
from .monarch import BTT_EQUATION, MONARCH_EQUATION, btt_multiply, monarch_multiply
from .runtime import triton_available
from .source import kernel_source

__all__ = [
    "ACTIVATIONS", "Activation", "AddTensor", "BTT_EQUATION", "Epilogue", "MONARCH_EQUATION", "Scale",
    "btt_multiply", "contract_pair", "kernel_source", "monarch_multiply", "triton_available",
]
