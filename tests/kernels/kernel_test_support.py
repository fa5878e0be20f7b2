"""Shared helpers for tests/kernels: operands in assorted memory layouts, and dtype-fitting tolerances."""
from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "permuted", "sliced", "expanded")


def make_operand(shape: tuple[int, ...], dtype: torch.dtype, layout: str, generator: torch.Generator,
                 choice: int = 0) -> torch.Tensor:
    """A tensor of ``shape`` whose memory layout is ``layout``; ``choice`` picks the permuted/sliced/expanded dim.

    * contiguous — row-major;
    * permuted — stored in reversed dim order, so every stride is out of order (a transposed view);
    * sliced — every other element along one dim of a twice-as-long tensor, offset by one (a strided view);
    * expanded — one dim of size 1 broadcast to its length (stride 0).
    """
    def randn(size) -> torch.Tensor:
        return torch.randn(tuple(size), generator=generator).to(dtype)

    if layout == "contiguous" or not shape:
        return randn(shape)
    dim = choice % len(shape)
    if layout == "permuted":
        order = list(reversed(range(len(shape))))
        return randn(shape[d] for d in order).permute(*order)
    if layout == "sliced":
        longer = list(shape)
        longer[dim] = 2 * shape[dim] + 1
        every_other = [slice(None)] * len(shape)
        every_other[dim] = slice(1, None, 2)
        return randn(longer)[tuple(every_other)]
    if layout == "expanded":
        single = list(shape)
        single[dim] = 1
        return randn(single).expand(*shape)
    raise ValueError(f"unknown layout {layout!r}")


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """assert_close tolerances for a result stored in ``dtype`` and accumulated in float32, against float64."""
    if dtype == torch.float16:
        return {"rtol": 1e-3, "atol": 1e-3}
    return {"rtol": 1e-4, "atol": 1e-4}
