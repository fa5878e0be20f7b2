"""Measured times of small GEMMs, where the BLAS library's speed depends on the product's orientation and on which
operands are transposed far beyond what FLOPs price.

Measured here (AMD EPYC, AVX-512, float32, one thread): ``x @ W`` for ``x`` 5×2209 and ``W`` 2209×47 takes 42 µs;
the same product transposed, ``W.t() @ x.t()`` (47×5 out), 190 µs; ``W.t().contiguous() @ x.t()`` 38 µs. A tree
tensor network planned as the second form ran 2.2× slower than eager. The roofline sum of :mod:`tcomp.cost.model`
cannot tell these apart (the same FLOPs, bytes and launches), so the planner asks for a measurement where a step's
candidate layouts could differ this way (:meth:`tcomp.contract.plan._Planner.best_step`).

A measurement is the fastest of a few runs of ``torch.mm``/``torch.bmm`` on operands in the layout the plan would
pass (row-major, ``N``, or a transposed view, ``T``), in the plan's dtype, on operands drawn from a generator of
its own (the caller's random stream is not touched): about 1-20 ms for the products measured (modeled time under
:data:`MEASURED_BELOW_S`). It is kept in this process only, per thread count — not on disk: a reading taken while
the machine was busy (one found 16 ms for a product measured 6 µs otherwise) would decide every later process's
plans. ``TCOMP_CALIBRATION=default`` (reproducible plans in tests) measures nothing.
"""
from __future__ import annotations

import functools

import torch

from tcomp.timing import fastest_time

MEASURED_BELOW_S = 2e-3
"""A GEMM the roofline model prices under this is measured (above it, orientation matters less than FLOPs, and a
measurement costs more)."""

SIGNIFICANT = 1.3
"""Measurements change a step's choice only where its candidates' measured times differ by more than this factor:
below it, the model's ranking stands (measurements on a shared machine vary by ±25%)..."""

SIGNIFICANT_S = 5e-6
"""... and by more than this many seconds (a tiny product's call overhead, which the model already prices)."""


def gemm_seconds(dtype: torch.dtype, batch: int, m: int, k: int, n: int, trans_a: bool, trans_b: bool) -> float:
    """Seconds of one ``[batch, m, k] @ [batch, k, n]`` product (``batch`` 0: a plain ``mm``) with the left operand
    a transposed view where ``trans_a`` (its ``m`` dim contiguous) and the right one where ``trans_b``."""
    return _measured(dtype, batch, m, k, n, trans_a, trans_b, torch.get_num_threads())


@functools.lru_cache(maxsize=4096)
def _measured(dtype, batch, m, k, n, trans_a, trans_b, threads: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = _operand(dtype, batch, m, k, trans_a, generator)
    b = _operand(dtype, batch, k, n, trans_b, generator)
    product = torch.bmm if batch else torch.mm
    return fastest_time(product, (a, b), repeats=7)


def _operand(dtype: torch.dtype, batch: int, rows: int, cols: int, transposed: bool,
             generator: torch.Generator) -> torch.Tensor:
    lead = (batch,) if batch else ()
    if transposed:
        return torch.randn(*lead, cols, rows, generator=generator).to(dtype).transpose(-1, -2)
    return torch.randn(*lead, rows, cols, generator=generator).to(dtype)
