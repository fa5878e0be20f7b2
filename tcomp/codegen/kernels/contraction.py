"""Pairwise contractions as generated strided batched-GEMM Triton kernels with fused epilogues.

A pairwise einsum ``"<a>,<b>-><out>"`` is a batched GEMM ``out[batch, M, N] = Σ_K a[batch, M, K] · b[batch, K, N]``
over groups of indices (see :mod:`tcomp.codegen.kernels.equation`). The generated kernel is the classic tiled GEMM
(one program per ``BLOCK_M × BLOCK_N`` output tile of one batch element, a loop over ``BLOCK_K`` slices of K with
``tl.dot`` accumulating in float32, and "grouped" tile order so that ``GROUP_M`` row tiles reuse the same columns of
``b`` from L2), specialised to the number of indices in each group and to the epilogue:

* a group of several indices is walked as one flat range, split back into per-index positions by division and
  remainder (:func:`codegen.unflatten`); every operand is then read through its own stride per index, so
  transposed, permuted, sliced and broadcast (stride-0) operands are used in place — never copied;
* a group the equation lacks becomes one index of size 1 (stride 0), so the kernel for ``"ik,kj->ij"`` is the one
  for ``"bik,bkj->bij"``;
* the epilogue runs on the float32 accumulator before the one masked store, in the output's dtype.

The kernel's source depends only on the group sizes and the epilogue's signature: :func:`contraction_source` returns
it, and it is what runs.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

from . import codegen, runtime
from .epilogue import Epilogue, epilogue_arguments, epilogue_params, epilogue_source, signature_of
from .equation import PairwiseEquation

#: Autotuning candidates on GPUs: (BLOCK_M, BLOCK_N, BLOCK_K) tiles, warps, pipeline stages. Compiled for sm_90
#: (tcomp.codegen.kernels.offline), all use wgmma except the 16-row tile, and none spills with a bias + GELU epilogue.
CONFIGS = tuple(runtime.TuningConfig.of(warps, stages, BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8)
                for m, n, k, warps, stages in (
                    (128, 128, 64, 8, 3),
                    (128, 128, 32, 8, 4),
                    (128, 64, 32, 4, 4),
                    (64, 128, 32, 4, 4),
                    (64, 64, 32, 4, 4),
                    (16, 128, 64, 4, 4),
                ))
#: The one configuration used under the interpreter (small tiles: tests reach several tiles and K steps cheaply).
INTERPRETER_CONFIG = runtime.TuningConfig.of(4, 1, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2)

_PREFIX = {"batch": "b", "m": "m", "n": "n", "k": "k"}


def contract_pair(equation: str, a: torch.Tensor, b: torch.Tensor, *, epilogue: Epilogue | None = None,
                  out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.einsum(equation, a, b)`` followed by ``epilogue`` and a cast to ``out_dtype``, in one Triton kernel.

    ``a`` and ``b`` may have any strides (transposed, permuted, sliced, expanded views); they are read in place.
    The result is a new contiguous tensor in the equation's output order, of ``out_dtype`` (default: the inputs'
    dtype); accumulation is always in float32. Runs on CUDA tensors, or on CPU tensors under Triton's
    interpreter. Has no backward: the result does not track gradients.
    """
    return plan_contraction(equation, a, b, epilogue=epilogue, out_dtype=out_dtype).run()


def plan_contraction(equation: str, a: torch.Tensor, b: torch.Tensor, *, epilogue: Epilogue | None = None,
                     out_dtype: torch.dtype | None = None) -> runtime.Launch:
    """Validate a :func:`contract_pair` call and plan its kernel launch (allocating the output) without running
    it; the tensors may be on any device (``meta`` too — see :mod:`tcomp.codegen.kernels.offline`)."""
    where = f"contract_pair({equation!r})"
    parsed = _parse(equation)
    dtype = runtime.check_operands(where, a=a, b=b)
    out_dtype = runtime.check_out_dtype(where, out_dtype, dtype)
    if epilogue is not None and not isinstance(epilogue, Epilogue):
        raise TypeError(f"{where}: epilogue must be an Epilogue, got {type(epilogue).__name__}")
    sizes = parsed.sizes(a, b)
    out = torch.empty([sizes[c] for c in parsed.out], dtype=out_dtype, device=a.device)
    dims = _kernel_dims(parsed, a, b)
    spec = contraction_spec(parsed.role_counts(), signature_of(epilogue))

    def dim_strides(tensor: torch.Tensor, indices: str, kernel_dims: Sequence[str]) -> dict[str, int]:
        return {d: tensor.stride(indices.index(dims[d])) if dims[d] is not None and dims[d] in indices else 0
                for d in kernel_dims}

    def stride_values(name: str, tensor: torch.Tensor, indices: str, kernel_dims: Sequence[str]) -> dict[str, int]:
        return {codegen.stride(name, d): s for d, s in dim_strides(tensor, indices, kernel_dims).items()}

    out_dims = [d for d in dims if d[0] in "bmn"]
    values: dict[str, Any] = {"a_ptr": a, "b_ptr": b, "out_ptr": out}
    values.update({codegen.size(d): (sizes[c] if c is not None else 1) for d, c in dims.items()})
    values.update(stride_values("a", a, parsed.a, [d for d in dims if d[0] in "bmk"]))
    values.update(stride_values("b", b, parsed.b, [d for d in dims if d[0] in "bnk"]))
    values.update(stride_values("out", out, parsed.out, out_dims))
    epilogue_values, epilogue_reads = epilogue_arguments(
        where, epilogue, out.shape, out.device, lambda t: (t, dim_strides(t, parsed.out, out_dims)))
    values.update(epilogue_values)
    extent = {role: math.prod(sizes[c] for c in getattr(parsed, role)) for role in ("batch", "m", "n", "k")}
    values.update(tune_m=runtime.size_bucket(extent["m"]), tune_n=runtime.size_bucket(extent["n"]),
                  tune_k=runtime.size_bucket(extent["k"]))

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles = -(-extent["m"] // meta["BLOCK_M"]) * -(-extent["n"] // meta["BLOCK_N"])
        return (extent["batch"] * tiles,)

    constants = {"INDEX_TYPE": runtime.index_type(a, b, out, *epilogue_reads),
                 "DOT_PRECISION": runtime.dot_precision(dtype)}
    return runtime.Launch(where, spec, a.device, values, constants, grid, out)


def contraction_source(equation: str, epilogue: Epilogue | Sequence[str] | None = None) -> str:
    """The source of the kernel that :func:`contract_pair` runs for ``equation`` and an epilogue of this
    signature (an :class:`Epilogue`, or its step kinds such as ``("bias", "gelu")``)."""
    return contraction_spec(_parse(equation).role_counts(), signature_of(epilogue)).source


@functools.lru_cache(maxsize=None)
def contraction_spec(counts: tuple[int, int, int, int], signature: tuple[str, ...]) -> runtime.KernelSpec:
    """The generated kernel for index groups of ``counts`` (batch, M, N, K) and an epilogue ``signature``."""
    groups = {role: [f"{_PREFIX[role]}{i}" for i in range(max(1, count))] for role, count in zip(_PREFIX, counts)}
    batch, m, n, k = groups["batch"], groups["m"], groups["n"], groups["k"]
    name = "contract_" + "_".join(f"{role}{count}" for role, count in zip(_PREFIX, counts))
    name += "".join(f"_{kind}" for kind in signature)
    param_groups = [["a_ptr", "b_ptr", "out_ptr"], *epilogue_params(signature, batch + m + n),
                    [codegen.size(d) for d in batch + m + n + k],
                    [codegen.stride("a", d) for d in batch + m + k],
                    [codegen.stride("b", d) for d in batch + n + k],
                    [codegen.stride("out", d) for d in batch + m + n],
                    ["tune_m", "tune_n", "tune_k"]]
    params = [p for group in param_groups for p in group]
    constexprs = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "INDEX_TYPE", "DOT_PRECISION"]

    def described(role: str, dims: list[str]) -> str:
        return f"{role} ({', '.join(dims)})"

    body = [
        f"size_m = {codegen.product(m)}",
        f"size_n = {codegen.product(n)}",
        f"size_k = {codegen.product(k)}",
        "tiles_m = (size_m + BLOCK_M - 1) // BLOCK_M",
        "tiles_n = (size_n + BLOCK_N - 1) // BLOCK_N",
        "# program -> (batch element, output tile); GROUP_M consecutive row tiles share the columns of b in L2",
        "pid = tl.program_id(0)",
        "batch = pid // (tiles_m * tiles_n)",
        "tile = pid % (tiles_m * tiles_n)",
        "in_group = tile % (GROUP_M * tiles_n)",
        "first_m = (tile // (GROUP_M * tiles_n)) * GROUP_M",
        "group_rows = tl.minimum(tiles_m - first_m, GROUP_M)",
        "tile_m = first_m + in_group % group_rows",
        "tile_n = in_group // group_rows",
        "# the batch position and the M and N positions of this tile, per index",
        *codegen.unflatten("batch.to(INDEX_TYPE)", batch),
        "offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)",
        "offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)",
        "mask_m = offs_m < size_m",
        "mask_n = offs_n < size_n",
        *codegen.unflatten("offs_m.to(INDEX_TYPE)", m),
        *codegen.unflatten("offs_n.to(INDEX_TYPE)", n),
        f"a_rows = a_ptr + {codegen.linear_offset('a', batch)} + {codegen.tile_offset('a', [m, []])}",
        f"b_cols = b_ptr + {codegen.linear_offset('b', batch)} + {codegen.tile_offset('b', [[], n])}",
        "acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)",
        "for k_start in range(0, size_k, BLOCK_K):",
        "    offs_k = k_start + tl.arange(0, BLOCK_K)",
        "    mask_k = offs_k < size_k",
        *("    " + line for line in codegen.unflatten("offs_k.to(INDEX_TYPE)", k)),
        f"    a_tile = tl.load(a_rows + {codegen.tile_offset('a', [[], k])}, "
        "mask=mask_m[:, None] & mask_k[None, :], other=0.0)",
        f"    b_tile = tl.load(b_cols + {codegen.tile_offset('b', [k, []])}, "
        "mask=mask_k[:, None] & mask_n[None, :], other=0.0)",
        "    acc = tl.dot(a_tile, b_tile, acc, input_precision=DOT_PRECISION)",
        "mask = mask_m[:, None] & mask_n[None, :]",
        *epilogue_source(signature, "acc", "mask", [m, n], batch),
        f"tl.store(out_ptr + {codegen.tile_offset('out', [m, n], batch)}, acc.to(out_ptr.dtype.element_ty), "
        "mask=mask)",
    ]
    doc = [
        '"""out[batch, M, N] = epilogue(Σ_K a[batch, M, K] · b[batch, K, N]), accumulated in float32: one',
        "BLOCK_M × BLOCK_N output tile of one batch element per program.",
        "",
        f"Index groups: {described('batch', batch)}, {described('M', m)}, {described('N', n)}, "
        f"{described('K', k)}.",
        "A group that the equation lacks is one index of size 1. Every tensor is read and written through its own",
        f"strides (no layout copies). Epilogue: {', '.join(signature) or 'none'}.",
        'tune_m, tune_n, tune_k: power-of-two size buckets, read only by the autotuner."""',
    ]
    source = "\n".join([
        '@triton.jit(do_not_specialize=["tune_m", "tune_n", "tune_k"])',
        f"def {name}(",
        *codegen.parameter_lines([*param_groups, [c + ": tl.constexpr" for c in constexprs]]),
        "):",
        *("    " + line if line else "" for line in doc + body),
    ]) + "\n"
    return runtime.KernelSpec(name=name, source=source, params=tuple(params), tune_key=("tune_m", "tune_n", "tune_k"),
                              configs=CONFIGS, interpreter_config=INTERPRETER_CONFIG, prune=prune_configs)


def prune_configs(configs: Sequence[runtime.TuningConfig], args: dict[str, Any]) -> list[runtime.TuningConfig]:
    """Drop tiles larger than the problem (by its size buckets); keep the smallest tile when none fits."""
    def fits(c: runtime.TuningConfig) -> bool:
        block = c.block
        return all(block[f"BLOCK_{r}"] <= max(16, args[f"tune_{r.lower()}"]) for r in "MNK")

    kept = [c for c in configs if fits(c)]
    return kept or [min(configs, key=lambda c: c.block["BLOCK_M"] * c.block["BLOCK_N"] * c.block["BLOCK_K"])]


@functools.lru_cache(maxsize=256)
def _parse(equation: str) -> PairwiseEquation:
    return PairwiseEquation.parse(equation)


def _kernel_dims(parsed: PairwiseEquation, a: torch.Tensor, b: torch.Tensor) -> dict[str, str | None]:
    """Kernel dim name -> equation index (``None`` for the size-1 stand-in of an empty group).

    K indices are ordered by decreasing stride in ``a`` (then ``b``), so that the fastest-moving K position walks
    the smallest strides — unit-stride K loads stay contiguous; M, N and batch follow the output order, which makes
    the stores contiguous.
    """
    def stride_in(tensor: torch.Tensor, indices: str, index: str) -> int:
        return tensor.stride(indices.index(index))

    k_order = sorted(parsed.k, key=lambda c: (stride_in(a, parsed.a, c), stride_in(b, parsed.b, c)), reverse=True)
    dims: dict[str, str | None] = {}
    for role, indices in (("batch", parsed.batch), ("m", parsed.m), ("n", parsed.n), ("k", k_order)):
        for position, index in enumerate(indices or (None,)):
            dims[f"{_PREFIX[role]}{position}"] = index
    return dims
