"""Fused Monarch and Block Tensor-Train products: both block-diagonal factors in one Triton kernel.

Monarch (Dao et al., "Monarch: Expressive Structured Matrices for Efficient and Accurate Training", ICML 2022), in
their layout: ``x[..., n]`` with ``n = k·i`` is viewed as ``[rows, k, i]``; the first factor ``R[k, j, i]`` maps each of
the ``k`` input blocks to ``j`` features, the second factor ``L[j, l, k]`` mixes the ``k`` blocks for each of the ``j``
features, and the result ``out[rows, l, j]`` is flattened to ``[..., l·j]``::

    out = einsum('bki,kji,jlk->blj', x, R, L)

Block Tensor-Train of rank ``r`` (Qiu et al., "Compute Better Spent: Replacing Dense Layers with Structured
Matrices", ICML 2024) carries a rank index between the factors, ``R[k, j, i, r]`` and ``L[j, l, k, r]``::

    out = einsum('bki,kjir,jlkr->blj', x, R, L)

so Monarch is BTT of rank 1, and one kernel serves both. Computed as two batched GEMMs the product writes the
intermediate ``y[rows, k, j]`` to memory and permutes it to ``[j, rows, k]`` between them; here each program
owns a tile of ``BLOCK_ROWS`` rows × ``BLOCK_J`` features × ``BLOCK_L`` outputs and loops over chunks of ``BLOCK_K``
blocks (and over the rank): stage 1 is one 3-D ``tl.dot`` batched over the ``BLOCK_K`` blocks giving
``y[k, rows, j]`` in registers, the permutation ``[k, rows, j] → [j, rows, k]`` is a ``tl.permute`` (a register /
shared-memory layout change), and stage 2 is a 3-D ``tl.dot`` batched over the ``BLOCK_J`` features that
accumulates ``out[j, rows, l]`` in float32. The intermediate never reaches global memory; like the unfused
path it is rounded to the input dtype before the second product. Tiles are at least 16 wide (``tl.dot`` needs that of
its K dimension, older Triton versions of every dimension), so the kernel is efficient when the block counts ``k``
and ``j`` are at least 16; smaller ones are padded (masked).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

from . import codegen, runtime
from .epilogue import Epilogue, epilogue_arguments, epilogue_params, epilogue_source, signature_of

MONARCH_EQUATION = "bki,kji,jlk->blj"
BTT_EQUATION = "bki,kjir,jlkr->blj"

_BLOCKS = ("BLOCK_ROWS", "BLOCK_J", "BLOCK_K", "BLOCK_I", "BLOCK_L")
#: Autotuning candidates on GPUs: (BLOCK_ROWS, BLOCK_J, BLOCK_K, BLOCK_I, BLOCK_L), warps, pipeline stages. The
#: float32 accumulator holds BLOCK_J·BLOCK_ROWS·BLOCK_L values, so these keep that product at 16–32K: compiled for
#: sm_90 (tcomp.codegen.kernels.offline) they use ≤ 255 registers without spilling for 16-bit operands at widths
#: 1024–8192.
CONFIGS = tuple(runtime.TuningConfig.of(warps, stages, **dict(zip(_BLOCKS, blocks)))
                for *blocks, warps, stages in (
                    (32, 16, 16, 16, 64, 8, 1),
                    (32, 16, 16, 32, 64, 8, 1),
                    (16, 16, 16, 32, 64, 8, 1),
                    (16, 16, 16, 16, 64, 4, 1),
                    (16, 16, 16, 16, 128, 8, 1),
                ))
#: The one configuration used under the interpreter: the smallest tiles tl.dot allows.
INTERPRETER_CONFIG = runtime.TuningConfig.of(4, 1, **dict.fromkeys(_BLOCKS, 16))
_DIMS_OF_BLOCK = {"BLOCK_ROWS": "tune_rows", "BLOCK_J": "size_j", "BLOCK_K": "size_k", "BLOCK_I": "size_i",
                  "BLOCK_L": "size_l"}


def monarch_multiply(x: torch.Tensor, L: torch.Tensor, R: torch.Tensor, *, epilogue: Epilogue | None = None,
                     out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The Monarch product ``einsum('bki,kji,jlk->blj', x.view(rows, k, i), R, L)`` flattened to ``[..., l·j]``,
    then ``epilogue`` and a cast to ``out_dtype`` (default ``x.dtype``), in one fused kernel.

    ``x``: ``[..., k·i]``; ``R``: ``[k, j, i]`` (first block-diagonal factor); ``L``: ``[j, l, k]`` (second).
    Factors may have any strides; ``x``'s leading dims are flattened (a view when their strides allow, else a
    copy). Accumulates in float32; no backward.
    """
    where = "monarch_multiply"
    for name, factor, layout in (("L", L, "[j, l, k]"), ("R", R, "[k, j, i]")):
        if not isinstance(factor, torch.Tensor) or factor.dim() != 3:
            shape = tuple(factor.shape) if isinstance(factor, torch.Tensor) else type(factor).__name__
            raise ValueError(f"{where}: {name} must be a 3-D tensor {layout}, got {shape}")
    return plan_block_tensor_train(where, x, L.unsqueeze(-1), R.unsqueeze(-1), epilogue, out_dtype).run()


def btt_multiply(x: torch.Tensor, L: torch.Tensor, R: torch.Tensor, *, epilogue: Epilogue | None = None,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The rank-r Block Tensor-Train product ``einsum('bki,kjir,jlkr->blj', x.view(rows, k, i), R, L)`` flattened
    to ``[..., l·j]``, then ``epilogue`` and a cast to ``out_dtype`` (default ``x.dtype``), in one fused kernel.

    ``x``: ``[..., k·i]``; ``R``: ``[k, j, i, r]`` (first factor); ``L``: ``[j, l, k, r]`` (second).
    Factors may have any strides; ``x``'s leading dims are flattened (a view when their strides allow, else a
    copy). Accumulates in float32; no backward.
    """
    return plan_block_tensor_train("btt_multiply", x, L, R, epilogue, out_dtype).run()


def btt_source(epilogue: Epilogue | Sequence[str] | None = None) -> str:
    """The source of the fused kernel that :func:`monarch_multiply` and :func:`btt_multiply` run with an epilogue
    of this signature (an :class:`Epilogue`, or its step kinds)."""
    return btt_spec(signature_of(epilogue)).source


def plan_block_tensor_train(where: str, x: torch.Tensor, L: torch.Tensor, R: torch.Tensor, epilogue: Epilogue | None,
                            out_dtype: torch.dtype | None) -> runtime.Launch:
    """Validate a :func:`btt_multiply` call (``where`` names the caller in errors) and plan its kernel launch
    (allocating the output) without running it; the tensors may be on any device (``meta`` too)."""
    dtype = runtime.check_operands(where, x=x, L=L, R=R)
    out_dtype = runtime.check_out_dtype(where, out_dtype, dtype)
    if epilogue is not None and not isinstance(epilogue, Epilogue):
        raise TypeError(f"{where}: epilogue must be an Epilogue, got {type(epilogue).__name__}")
    if R.dim() != 4 or L.dim() != 4:
        raise ValueError(f"{where}: R must be [k, j, i, r] and L [j, l, k, r], got R {tuple(R.shape)} and "
                         f"L {tuple(L.shape)}")
    k, j, i, rank = R.shape
    if (L.shape[0], L.shape[2], L.shape[3]) != (j, k, rank):
        raise ValueError(f"{where}: L {tuple(L.shape)} does not fit R {tuple(R.shape)}: expected L of shape "
                         f"[j={j}, l, k={k}, r={rank}]")
    if x.dim() == 0 or x.shape[-1] != k * i:
        raise ValueError(f"{where}: x must end in k·i = {k}·{i} = {k * i} features, got x of shape "
                         f"{tuple(x.shape)}")
    l = L.shape[1]
    rows = math.prod(x.shape[:-1])
    x_rows = x.reshape(rows, k * i)
    out = torch.empty((*x.shape[:-1], l * j), dtype=out_dtype, device=x.device)

    def kernel_view(t: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
        view = t.reshape(rows, l, j)
        return view, dict(zip(("row", "l", "j"), view.stride()))

    out_view, out_strides = kernel_view(out)
    epilogue_values, epilogue_reads = epilogue_arguments(where, epilogue, out.shape, out.device, kernel_view)
    values: dict[str, Any] = {
        "x_ptr": x_rows, "right_ptr": R, "left_ptr": L, "out_ptr": out_view, **epilogue_values,
        "size_row": rows, "size_k": k, "size_i": i, "size_j": j, "size_l": l, "rank": rank,
        "x_stride_row": x_rows.stride(0), "x_stride_col": x_rows.stride(1),
        **{codegen.stride("right", d): s for d, s in zip("kjir", R.stride())},
        **{codegen.stride("left", d): s for d, s in zip("jlkr", L.stride())},
        **{codegen.stride("out", d): s for d, s in out_strides.items()},
        "tune_rows": runtime.size_bucket(rows),
    }

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles = [-(-size // meta[block]) for size, block in ((rows, "BLOCK_ROWS"), (j, "BLOCK_J"), (l, "BLOCK_L"))]
        return (math.prod(tiles),)

    spec = btt_spec(signature_of(epilogue))
    constants = {"INDEX_TYPE": runtime.index_type(x_rows, R, L, out_view, *epilogue_reads),
                 "DOT_PRECISION": runtime.dot_precision(dtype)}
    return runtime.Launch(where, spec, x.device, values, constants, grid, out)


@functools.lru_cache(maxsize=None)
def btt_spec(signature: tuple[str, ...]) -> runtime.KernelSpec:
    """The fused Monarch/BTT kernel for an epilogue ``signature``."""
    name = "block_tensor_train" + "".join(f"_{kind}" for kind in signature)
    param_groups = [["x_ptr", "right_ptr", "left_ptr", "out_ptr"], *epilogue_params(signature, ("row", "l", "j")),
                    ["size_row", "size_k", "size_i", "size_j", "size_l", "rank"],
                    ["x_stride_row", "x_stride_col"],
                    [codegen.stride("right", d) for d in "kjir"],
                    [codegen.stride("left", d) for d in "jlkr"],
                    [codegen.stride("out", d) for d in ("row", "l", "j")],
                    ["tune_rows"]]
    params = [p for group in param_groups for p in group]
    constexprs = [*_BLOCKS, "INDEX_TYPE", "DOT_PRECISION"]
    x_offset = "(row * x_stride_row)[None, :, None] + ((k * size_i)[:, None, None] + i[None, None, :]) * x_stride_col"
    lines = [
        '"""out[row, l, j] = epilogue(Σ_{k,r} left[j, l, k, r] · Σ_i right[k, j, i, r] · x[row, k·size_i + i]),',
        "i.e. einsum('bki,kjir,jlkr->blj') (Monarch: rank 1), for one BLOCK_ROWS × BLOCK_L × BLOCK_J output tile",
        "per program. The intermediate y[k, row, j] stays on chip; accumulation is in float32.",
        f"Epilogue: {', '.join(signature) or 'none'}. tune_rows: a power-of-two bucket of size_row, read only by",
        'the autotuner."""',
        "tiles_j = (size_j + BLOCK_J - 1) // BLOCK_J",
        "tiles_l = (size_l + BLOCK_L - 1) // BLOCK_L",
        "# program -> (row tile, j tile, l tile); the programs of one row tile run together and share x in L2",
        "pid = tl.program_id(0)",
        "tile_l = pid % tiles_l",
        "tile_j = (pid // tiles_l) % tiles_j",
        "tile_row = pid // (tiles_l * tiles_j)",
        "offs_row = tile_row * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)",
        "offs_j = tile_j * BLOCK_J + tl.arange(0, BLOCK_J)",
        "offs_l = tile_l * BLOCK_L + tl.arange(0, BLOCK_L)",
        "mask_row = offs_row < size_row",
        "mask_j = offs_j < size_j",
        "mask_l = offs_l < size_l",
        "row = offs_row.to(INDEX_TYPE)",
        "j = offs_j.to(INDEX_TYPE)",
        "l = offs_l.to(INDEX_TYPE)",
        "acc = tl.full((BLOCK_J, BLOCK_ROWS, BLOCK_L), 0.0, dtype=tl.float32)",
        "for k_start in range(0, size_k, BLOCK_K):",
        "    offs_k = k_start + tl.arange(0, BLOCK_K)",
        "    mask_k = offs_k < size_k",
        "    k = offs_k.to(INDEX_TYPE)",
        "    for r in range(0, rank):",
        "        # stage 1, batched over BLOCK_K blocks: y[k, row, j] = Σ_i x[row, k, i] · right[k, j, i, r]",
        "        y = tl.full((BLOCK_K, BLOCK_ROWS, BLOCK_J), 0.0, dtype=tl.float32)",
        "        for i_start in range(0, size_i, BLOCK_I):",
        "            offs_i = i_start + tl.arange(0, BLOCK_I)",
        "            mask_i = offs_i < size_i",
        "            i = offs_i.to(INDEX_TYPE)",
        f"            x_tile = tl.load(x_ptr + {x_offset},",
        "                             mask=mask_k[:, None, None] & mask_row[None, :, None] & mask_i[None, None, :],",
        "                             other=0.0)",
        f"            right_tile = tl.load(right_ptr + r * right_stride_r + "
        f"{codegen.tile_offset('right', [['k'], ['i'], ['j']])},",
        "                                 mask=mask_k[:, None, None] & mask_i[None, :, None] & mask_j[None, None, :],",
        "                                 other=0.0)",
        "            y = tl.dot(x_tile, right_tile, y, input_precision=DOT_PRECISION)",
        "        # the permutation between the factors, on chip: [k, row, j] -> [j, row, k]",
        "        y_by_j = tl.permute(y, (2, 1, 0)).to(x_ptr.dtype.element_ty)",
        "        # stage 2, batched over BLOCK_J features: out[j, row, l] += Σ_k y[j, row, k] · left[j, l, k, r]",
        f"        left_tile = tl.load(left_ptr + r * left_stride_r + {codegen.tile_offset('left', [['j'], ['k'], ['l']])},",
        "                            mask=mask_j[:, None, None] & mask_k[None, :, None] & mask_l[None, None, :],",
        "                            other=0.0)",
        "        acc = tl.dot(y_by_j, left_tile, acc, input_precision=DOT_PRECISION)",
        "mask = mask_j[:, None, None] & mask_row[None, :, None] & mask_l[None, None, :]",
        *epilogue_source(signature, "acc", "mask", [["j"], ["row"], ["l"]]),
        f"tl.store(out_ptr + {codegen.tile_offset('out', [['j'], ['row'], ['l']])}, "
        "acc.to(out_ptr.dtype.element_ty), mask=mask)",
    ]
    source = "\n".join([
        '@triton.jit(do_not_specialize=["tune_rows"])',
        f"def {name}(",
        *codegen.parameter_lines([*param_groups, [c + ": tl.constexpr" for c in constexprs]]),
        "):",
        *("    " + line for line in lines),
    ]) + "\n"
    return runtime.KernelSpec(name=name, source=source, params=tuple(params),
                              tune_key=("tune_rows", "size_k", "size_i", "size_j", "size_l", "rank"),
                              configs=CONFIGS, interpreter_config=INTERPRETER_CONFIG, prune=prune_configs)


def prune_configs(configs: Sequence[runtime.TuningConfig], args: dict[str, Any]) -> list[runtime.TuningConfig]:
    """Shrink every tile to the problem (the power of two at or above each size, at least 16), dropping the
    duplicates that leaves."""
    shrunk: dict[runtime.TuningConfig, None] = {}
    for config in configs:
        block = {name: min(value, max(16, runtime.size_bucket(args[_DIMS_OF_BLOCK[name]])))
                 for name, value in config.block.items()}
        shrunk[runtime.TuningConfig.of(config.num_warps, config.num_stages, **block)] = None
    return list(shrunk)
