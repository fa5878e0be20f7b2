"""GPU benchmark of tcomp's Triton kernels (issue 6, the kernel part of bench/gpu.py).

* Monarch and Block Tensor-Train layers at widths 1024–8192, float16 and bfloat16, 4096 and 16384 tokens: median time
  of the fused kernel (``monarch_multiply`` / ``btt_multiply``) vs the torch bmm path (two ``torch.bmm`` with the
  transposes between them) vs dense cuBLAS (``x @ W.T`` with the materialised dense weight).
* ``contract_pair`` vs ``torch.einsum`` (plus the same epilogue in torch) on attention- and MLP-shaped contractions.

Every case also records the largest error of the Triton result against the torch result. The JSON written to the
path given on the command line holds the device, versions, every case, the autotuner's chosen configuration, and
the issue's goal check (fused Monarch at width 4096, float16: ≥ 1.5× the bmm path and ≥ 3× dense cuBLAS).

    python bench/gpu_kernels.py results.json            # CUDA GPU: a few minutes on an H100, most of it autotuning
    python bench/gpu_kernels.py --dry-run results.json  # CPU: the same code at tiny sizes under Triton's interpreter

Timings are medians of CUDA-event-timed calls after warm-up; each case is independent, so one failing case is
recorded with its error and the others still run, and the JSON is rewritten after every case.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

GOAL = {"kind": "monarch", "width": 4096, "dtype": "float16", "fused_vs_bmm": 1.5, "fused_vs_dense": 3.0}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="path of the JSON file to write")
    parser.add_argument("--dry-run", action="store_true",
                        help="run on CPU under Triton's interpreter at tiny sizes (checks the script, times nothing)")
    parser.add_argument("--widths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--btt-rank", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="stop starting new cases after this many seconds (the JSON says which were skipped)")
    args = parser.parse_args(argv)

    if args.dry_run:
        # tcomp.codegen.kernels defines its kernels on first use, so setting this before the first call is enough.
        os.environ["TRITON_INTERPRET"] = "1"
        device = torch.device("cpu")
        args.widths, args.tokens, args.dtypes = [64], [48], ["float16"]
        timing = {"warmup": 0, "reps": 1}
    elif not torch.cuda.is_available():
        sys.exit("bench/gpu_kernels.py needs a CUDA GPU and none is visible; use --dry-run to check the script on "
                 "CPU under Triton's interpreter")
    else:
        device = torch.device("cuda")
        timing = {"warmup": 10, "reps": 40}

    from tcomp.codegen.kernels import triton_available
    if not triton_available(device):
        sys.exit(f"Triton kernels cannot run on {device} here (is triton installed?)")

    report: dict[str, Any] = {"environment": _environment(device, args.dry_run), "structured": [],
                              "contractions": [], "skipped": []}
    started = time.perf_counter()

    def run_case(section: str, describe: dict[str, Any], case: Callable[[], dict[str, Any]]) -> None:
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append(describe)
            return
        try:
            report[section].append({**describe, **case()})
        except Exception as error:  # one failing case must not lose the others
            report[section].append({**describe, "error": f"{type(error).__name__}: {error}"})
        print(json.dumps(report[section][-1]), flush=True)
        _write(args.output, report)

    for kind in ("monarch", "btt"):
        for dtype_name in args.dtypes:
            for width in args.widths:
                for tokens in args.tokens:
                    describe = {"kind": kind, "width": width, "dtype": dtype_name, "tokens": tokens,
                                "rank": 1 if kind == "monarch" else args.btt_rank}
                    run_case("structured", describe, lambda: structured_case(
                        kind, width, tokens, DTYPES[dtype_name], describe["rank"], device, timing))
    for name, equation, shapes, epilogue_kinds in contraction_cases(args.dry_run):
        describe = {"name": name, "equation": equation, "shapes": shapes, "epilogue": epilogue_kinds,
                    "dtype": "float16"}
        run_case("contractions", describe, lambda: contraction_case(
            equation, shapes, epilogue_kinds, torch.float16, device, timing))
    report["goal"] = _goal_check(report["structured"])
    report["wall_s"] = round(time.perf_counter() - started, 1)
    _write(args.output, report)
    print(json.dumps(report["goal"]), flush=True)
    return 0


def monarch_shape(width: int) -> tuple[int, int]:
    """(blocks, block size) of a square Monarch layer of ``width``: the power of two nearest √width blocks."""
    blocks = 2 ** round(math.log2(width) / 2)
    return blocks, width // blocks


def structured_case(kind: str, width: int, tokens: int, dtype: torch.dtype, rank: int, device: torch.device,
                    timing: dict[str, int]) -> dict[str, Any]:
    """One Monarch/BTT layer: fused kernel vs two bmm vs dense matmul."""
    from tcomp.codegen.kernels import btt_multiply, monarch_multiply
    from tcomp.codegen.kernels.monarch import btt_spec

    blocks, size = monarch_shape(width)
    k, i, j, l = blocks, size, blocks, size  # x: [tokens, k·i] -> out: [tokens, l·j]
    generator = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(device=device, dtype=dtype)

    x = randn(tokens, k * i, scale=1.0)
    R = randn(k, j, i, rank, scale=i ** -0.5)
    L = randn(j, l, k, rank, scale=(k * rank) ** -0.5)
    if kind == "monarch":
        R3, L3 = R[..., 0].contiguous(), L[..., 0].contiguous()
        fused = lambda: monarch_multiply(x, L3, R3)  # noqa: E731
    else:
        fused = lambda: btt_multiply(x, L, R)  # noqa: E731
    # torch bmm path, weights laid out for bmm once: stage 1 [k, i, j·r], stage 2 [j, k·r, l]
    right_bmm = R.permute(0, 2, 1, 3).reshape(k, i, j * rank).contiguous()
    left_bmm = L.permute(0, 2, 3, 1).reshape(j, k * rank, l).contiguous()

    def bmm_path() -> torch.Tensor:
        y = torch.bmm(x.view(tokens, k, i).transpose(0, 1), right_bmm)            # [k, tokens, j·r]
        y = y.view(k, tokens, j, rank).permute(2, 1, 0, 3).reshape(j, tokens, k * rank)
        return torch.bmm(y, left_bmm).permute(1, 2, 0).reshape(tokens, l * j)      # [tokens, l·j]

    dense_weight = torch.einsum("jlkr,kjir->ljki", L.float(), R.float()).reshape(l * j, k * i).to(dtype)
    dense = lambda: x @ dense_weight.T  # noqa: E731

    reference = bmm_path().float()
    error = (fused().float() - reference).abs().max().item() / max(reference.abs().max().item(), 1e-30)
    dense_error = (dense().float() - reference).abs().max().item() / max(reference.abs().max().item(), 1e-30)
    times = {name: median_ms(fn, device, **timing) for name, fn in
             (("fused_ms", fused), ("bmm_ms", bmm_path), ("dense_ms", dense))}
    return {"blocks": blocks, "block_size": size, **{n: round(t, 4) for n, t in times.items()},
            "fused_vs_bmm": round(times["bmm_ms"] / times["fused_ms"], 3),
            "fused_vs_dense": round(times["dense_ms"] / times["fused_ms"], 3),
            "max_rel_error_fused_vs_bmm": error, "max_rel_error_dense_vs_bmm": dense_error,
            "config": _chosen_config(btt_spec(()), device)}


def contraction_cases(dry_run: bool) -> list[tuple[str, str, list[list[int]], list[str]]]:
    """(name, equation, operand shapes, epilogue kinds); attention: batch 8, 16 heads, 1024 tokens, head dim 64."""
    b, h, t, d, e, f = (2, 2, 24, 16, 32, 48) if dry_run else (8, 16, 1024, 64, 1024, 4096)
    return [
        ("attention scores, scaled", "bhqd,bhkd->bhqk", [[b, h, t, d], [b, h, t, d]], ["scale"]),
        ("attention output", "bhqk,bhkd->bhqd", [[b, h, t, t], [b, h, t, d]], []),
        ("MLP up + bias + gelu", "btd,fd->btf", [[b, t, e], [f, e]], ["bias", "gelu"]),
        ("MLP down + bias + residual", "btf,df->btd", [[b, t, f], [e, f]], ["bias", "residual"]),
        ("head merge (K = heads × head dim)", "bthd,hde->bte", [[b, t, h, d], [h, d, e]], []),
    ]


def contraction_case(equation: str, shapes: list[list[int]], epilogue_kinds: list[str], dtype: torch.dtype,
                     device: torch.device, timing: dict[str, int]) -> dict[str, Any]:
    """contract_pair with a fused epilogue vs torch.einsum followed by the same epilogue in torch."""
    from tcomp.codegen.kernels import Epilogue, contract_pair
    from tcomp.codegen.kernels.contraction import contraction_spec
    from tcomp.codegen.kernels.equation import PairwiseEquation

    generator = torch.Generator(device="cpu").manual_seed(0)
    a, b = ((torch.randn(*shape, generator=generator) * shape[-1] ** -0.25).to(device=device, dtype=dtype)
            for shape in shapes)
    parsed = PairwiseEquation.parse(equation)
    sizes = parsed.sizes(a, b)
    out_shape = [sizes[index] for index in parsed.out]
    epilogue = Epilogue()
    for kind in epilogue_kinds:
        if kind == "scale":
            epilogue = epilogue.scale(0.125)
        elif kind == "bias":
            epilogue = epilogue.bias(torch.randn(out_shape[-1], generator=generator).to(device=device, dtype=dtype))
        elif kind == "residual":
            epilogue = epilogue.residual(torch.randn(*out_shape, generator=generator).to(device=device, dtype=dtype))
        else:
            epilogue = epilogue.activation(kind)
    triton_fn = lambda: contract_pair(equation, a, b, epilogue=epilogue)  # noqa: E731
    torch_fn = lambda: epilogue.apply(torch.einsum(equation, a, b))  # noqa: E731
    reference = torch_fn().float()
    error = (triton_fn().float() - reference).abs().max().item() / max(reference.abs().max().item(), 1e-30)
    times = {"contract_pair_ms": median_ms(triton_fn, device, **timing),
             "einsum_ms": median_ms(torch_fn, device, **timing)}
    spec = contraction_spec(parsed.role_counts(), epilogue.signature)
    return {**{n: round(t, 4) for n, t in times.items()},
            "speedup": round(times["einsum_ms"] / times["contract_pair_ms"], 3), "max_rel_error": error,
            "config": _chosen_config(spec, device)}


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA events on GPUs), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def _chosen_config(spec: Any, device: torch.device) -> str | None:
    from tcomp.codegen.kernels import runtime

    return runtime.chosen_config(spec, device)


def _goal_check(structured: list[dict[str, Any]]) -> dict[str, Any]:
    cases = [c for c in structured if all(c.get(key) == GOAL[key] for key in ("kind", "width", "dtype"))
             and "fused_ms" in c]
    check: dict[str, Any] = {**GOAL, "cases": len(cases)}
    if cases:
        check["measured_fused_vs_bmm"] = min(c["fused_vs_bmm"] for c in cases)
        check["measured_fused_vs_dense"] = min(c["fused_vs_dense"] for c in cases)
        check["met"] = (check["measured_fused_vs_bmm"] >= GOAL["fused_vs_bmm"]
                        and check["measured_fused_vs_dense"] >= GOAL["fused_vs_dense"])
    return check


def _environment(device: torch.device, dry_run: bool) -> dict[str, Any]:
    import triton

    environment = {"device": str(device), "dry_run": dry_run, "torch": torch.__version__,
                   "triton": triton.__version__, "python": platform.python_version(),
                   "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
        environment["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return environment


def _write(path: str, report: dict[str, Any]) -> None:
    with open(path, "w") as file:
        json.dump(report, file, indent=2)


if __name__ == "__main__":
    sys.exit(main())
