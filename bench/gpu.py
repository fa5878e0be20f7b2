"""The GPU check (issue 6): one script that, on a CUDA machine, compares eager, torch.compile and tcomp (with its
generated Triton kernels, and with torch calls) and writes JSON.

1. the kernel benchmark (bench/gpu_kernels.py): fused Monarch/BTT kernels at widths 1024–8192 (fp16, bf16,
   4096–16384 tokens) vs the torch bmm path and dense cuBLAS, and ``contract_pair`` vs ``torch.einsum``;
2. models: the tensor-network zoo models and ViT-/GPT-2-style blocks, each as eager, ``torch.compile``,
   ``tcomp.compile(kernels="triton")`` and ``tcomp.compile(kernels="torch")``: median latency (CUDA events), ratio
   to eager, max error, compile time.

    python bench/gpu.py OUT_DIR                 # writes OUT_DIR/gpu_kernels.json and OUT_DIR/gpu_models.json
    python bench/gpu.py --dry-run OUT_DIR       # CPU, tiny sizes, Triton's interpreter: checks the script only

Sized for a 15-minute device budget: the kernel part stops starting cases after --kernel-budget-s, the model part
after --model-budget-s; the JSON is rewritten after every case.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time
from pathlib import Path

import torch

MODELS = ("mps_classifier", "tt_net", "peps", "equivariant_tp", "monarch_mlp")


class TransformerBlock(torch.nn.Module):
    """A ViT/GPT-2-style pre-norm block (attention written out with matmuls, then a GELU MLP)."""

    def __init__(self, d: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        if self.causal:
            s = s + torch.triu(torch.full((t, t), float("-inf"), device=x.device), 1)
        x = x + self.proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


def model_cases(dry: bool, device: torch.device):
    from tcomp.zoo import get_entry

    for name in MODELS:
        entry = get_entry(name)
        batch = 2 if dry else entry.default_batch
        yield name, entry.build(), entry.example_inputs(batch=batch)
    for name, d, heads, tokens, causal in (("vit_tiny_block", 192, 3, 197, False), ("gpt2_block", 768, 12, 256, True)):
        if dry:
            d, heads, tokens = 32, 4, 8
        torch.manual_seed(0)
        yield name, TransformerBlock(d, heads, causal).eval(), (torch.randn(8 if not dry else 1, tokens, d),)


def run_models(out: Path, dry: bool, budget_s: float, median_ms) -> dict:
    """``median_ms(fn, device, warmup, reps)`` is the kernel benchmark's timer (bench/gpu_kernels.py)."""
    import tcomp
    from tcomp.numerics import compare

    device = torch.device("cpu" if dry else "cuda")
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "cases": [], "skipped": []}
    start = time.perf_counter()
    for name, model, inputs in model_cases(dry, device):
        if time.perf_counter() - start > budget_s:
            report["skipped"].append(name)
            continue
        model = model.to(device)
        inputs = tuple(t.to(device) for t in inputs)
        case = {"model": name, "variants": {}}
        with torch.no_grad():
            ref = model(*inputs)
        variants = {"eager": lambda: model}
        if not dry:
            variants["torch.compile"] = lambda: torch.compile(model)
        variants["tcomp (triton)"] = lambda: tcomp.compile(model, inputs, kernels="triton", backend="eager")
        variants["tcomp (torch)"] = lambda: tcomp.compile(model, inputs, kernels="torch", backend="eager")
        for vname, make in variants.items():
            try:
                t0 = time.perf_counter()
                fn = make()
                with torch.no_grad():
                    y = fn(*inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                with torch.no_grad():
                    ms = median_ms(lambda: fn(*inputs), device, warmup=1 if dry else 3, reps=1 if dry else 20)
                c = compare(ref, y)
                case["variants"][vname] = {"median_ms": ms, "compile_s": compile_s, "max_rel_err": c.max_rel}
            except Exception as err:  # noqa: BLE001 - record and go on
                case["variants"][vname] = {"error": f"{type(err).__name__}: {err}"[:300]}
        eager = case["variants"]["eager"].get("median_ms")
        for v in case["variants"].values():
            if "median_ms" in v and eager:
                v["ratio_to_eager"] = eager / v["median_ms"]
        report["cases"].append(case)
        out.write_text(json.dumps(report, indent=2))
        print(json.dumps(case), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--kernel-budget-s", type=float, default=240.0)
    p.add_argument("--model-budget-s", type=float, default=180.0)
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if a.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU; use --dry-run to check the script on CPU")
    kernel_args = [str(out / "gpu_kernels.json"), "--budget-s", str(a.kernel_budget_s)]
    if a.dry_run:
        kernel_args.insert(0, "--dry-run")
    kernels = runpy.run_path(str(Path(__file__).with_name("gpu_kernels.py")))
    rc = kernels["main"](kernel_args)
    run_models(out / "gpu_models.json", a.dry_run, a.model_budget_s, kernels["median_ms"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
