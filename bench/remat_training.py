"""Training-step memory and time: eager, per-block checkpointing, torch.compile's memory budget, and tcomp.

For each model (ResNet-18 at batch 32 with 3×224×224 images and a cross-entropy loss; the GPT-2-small-style
stack at batch 4 × 256 tokens with its next-token loss) it measures one training step (forward, loss,
backward, gradients set to None before, outside the measured region) four ways:
  - eager: the model as is;
  - checkpoint: every residual / transformer block wrapped in `torch.utils.checkpoint` (non-reentrant);
  - torch.compile: Inductor with `torch._functorch.config.activation_memory_budget` set to the budget;
  - tcomp: `rematerialize_module(model, inputs, budget)`.
When the budget is infeasible for tcomp (BudgetInfeasibleError), tcomp runs at the smallest budget the solver
found feasible (plus 0.5%; at most three tries), and the table says so.
GPT-2's loss is computed inside the module by default, as a language model given labels does (Hugging Face's
GPT2LMHeadModel), so that every configuration compiles or checkpoints it with the model; `--gpt2-loss outside`
computes it on the logits the module returns, outside anything tcomp or torch.compile sees. Its buffers then
bound the step: the logits, their log-probabilities and their two gradients, 4 × 206 MB, are 57% of eager's peak.
Peak memory is `measure_peak_memory` (profiler memory events on CPU: bytes allocated during the step above what
existed before it); step time is the median of --steps steps after a warm-up step, taken in turns (one step of each
configuration per round, so that the shared machine's load weighs on all alike). Gradients of tcomp's
module are compared with eager's. Results print as a markdown table and go to bench/results/remat_training.json.

    python bench/remat_training.py                       # both models, budget 0.6: about half an hour here
    python bench/remat_training.py --models resnet18 --steps 2 --skip-compile
    python bench/remat_training.py --models gpt2_small --gpt2-loss outside --skip-compile
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch._functorch.config  # activation_memory_budget for the torch.compile configuration
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tcomp.passes.rematerialize import rematerialize_module
from tcomp.remat import BudgetInfeasibleError, measure_peak_memory
from tcomp.zoo import get_entry

ROOT = Path(__file__).resolve().parents[1]
BATCH = {"resnet18": 32, "gpt2_small": 4}


class Checkpointed(nn.Module):
    """A block whose activations are recomputed in the backward pass (torch.utils.checkpoint)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)


class WithNextTokenLoss(nn.Module):
    """A language model that returns its next-token loss on the input ids, as one given labels does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return next_token_loss(self.model(ids), ids)


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def checkpoint_blocks(name: str, model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    core = model.model if isinstance(model, WithNextTokenLoss) else model
    stages = [core.layer1, core.layer2, core.layer3, core.layer4] if name == "resnet18" else [core.h]
    for stage in stages:
        for i, block in enumerate(stage):
            stage[i] = Checkpointed(block)
    return model


def loss_function(name: str, inputs: tuple, loss_inside: bool = False):
    if name == "resnet18":
        labels = torch.arange(inputs[0].shape[0]) % 1000
        return lambda logits: F.cross_entropy(logits, labels)
    if loss_inside:
        return lambda loss: loss
    (ids,) = inputs
    return lambda logits: next_token_loss(logits, ids)


def training_step(module: nn.Module, inputs: tuple, loss):
    def step():
        outputs = module(*inputs)
        loss(outputs).backward()
    return step


def measure_peak(module: nn.Module, params: nn.Module, inputs: tuple, loss) -> dict:
    """A warm-up step (for torch.compile, its compilation), then the peak of one step."""
    step = training_step(module, inputs, loss)
    params.zero_grad(set_to_none=True)
    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    # gradients cleared outside the measured region: the profiler counts the release of a block allocated while
    # it last ran but not of one allocated while it was off, so releasing them inside would read up to their size
    # too low, depending on what earlier measurements allocated
    params.zero_grad(set_to_none=True)
    return {"peak": measure_peak_memory(step), "first_step_time": first}


def measure_times(configurations: dict, steps: int) -> dict[str, list[float]]:
    """Step times of every configuration, taken in turns (one step of each per round), so that the machine's load
    weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in configurations}
    for _ in range(steps):
        for name, (module, params, inputs, loss) in configurations.items():
            step = training_step(module, inputs, loss)
            params.zero_grad(set_to_none=True)
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return times


def gradients(module: nn.Module, params: nn.Module, inputs: tuple, loss, state: dict) -> list[torch.Tensor]:
    params.load_state_dict(state)
    params.zero_grad(set_to_none=True)
    loss(module(*inputs)).backward()
    return [p.grad.clone() for p in params.parameters()]


def run_model(name: str, budget: float, steps: int, time_limit: float, skip_compile: bool,
              gpt2_loss: str = "inside") -> dict:
    entry = get_entry(name)
    model = entry.build().train()
    loss_inside = name == "gpt2_small" and gpt2_loss == "inside"
    if loss_inside:
        model = WithNextTokenLoss(model)
    inputs = entry.example_inputs(batch=BATCH[name])
    loss = loss_function(name, inputs, loss_inside)
    state = copy.deepcopy(model.state_dict())
    configurations = {"eager": (model, model, inputs, loss)}
    blocks = checkpoint_blocks(name, model)
    configurations["checkpoint"] = (blocks, blocks, inputs, loss)
    rows: dict[str, dict] = {}
    if not skip_compile:
        compiled_model = copy.deepcopy(model)
        with torch._functorch.config.patch(activation_memory_budget=budget):
            compiled = torch.compile(compiled_model)
            rows["torch.compile"] = measure_peak(compiled, compiled_model, inputs, loss)  # compiles here
        configurations["torch.compile"] = (compiled, compiled_model, inputs, loss)

    model.load_state_dict(state)
    started = time.perf_counter()
    infeasible = None
    target: float | int = budget
    for _ in range(3):  # on BudgetInfeasibleError, again at the smallest budget the solver found feasible (bytes)
        try:
            remat = rematerialize_module(model, inputs, target, time_limit=time_limit, loss=loss)
            break
        except BudgetInfeasibleError as error:
            infeasible = {"message": str(error), "smallest_feasible": error.smallest_feasible,
                          "lower_bound": error.lower_bound}
            print(f"{name} tcomp at {target}: {error}", flush=True)
            model.load_state_dict(state)
            target = int(error.smallest_feasible * 1.005)
    else:
        raise RuntimeError(f"{name}: no budget tcomp could meet after three tries; see the errors above")
    compile_time = time.perf_counter() - started
    configurations["tcomp"] = (remat, model, inputs, loss)
    for config, arguments in configurations.items():
        if config not in rows:
            rows[config] = measure_peak(*arguments)
    for config, times in measure_times(configurations, steps).items():
        rows[config].update(step_time=statistics.median(times), step_times=times)
        print(f"{name} {config}: {rows[config]}", flush=True)
    rows = {config: rows[config] for config in configurations}  # the table's order
    rows["tcomp"]["compile_time"] = compile_time
    rows["tcomp"]["report"] = remat.remat_report.to_dict()
    rows["tcomp"]["infeasible_at_budget"] = infeasible
    reference = gradients(model, model, inputs, loss, state)
    ours = gradients(remat, model, inputs, loss, state)
    rows["tcomp"]["max_relative_grad_error"] = max(
        ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item() for a, b in zip(reference, ours)
    )
    print(f"{name} tcomp gradients: largest relative difference {rows['tcomp']['max_relative_grad_error']}",
          flush=True)
    return {"batch": BATCH[name], "budget": budget, "loss": "inside the module" if loss_inside else "outside",
            "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,gpt2_small")
    parser.add_argument("--budget", type=float, default=0.6, help="fraction of eager's measured peak")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per tcomp solve")
    parser.add_argument("--skip-compile", action="store_true", help="leave out torch.compile (slow to compile)")
    parser.add_argument("--gpt2-loss", choices=("inside", "outside"), default="inside",
                        help="GPT-2's next-token loss inside the module (as given labels) or on its logits")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "remat_training.json")
    args = parser.parse_args(argv)

    results = {}
    for name in args.models.split(","):
        results[name] = run_model(name, args.budget, args.steps, args.time_limit, args.skip_compile, args.gpt2_loss)
    print(f"\nBudget {args.budget} of eager's measured peak; {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f}\n")
    print("| model | configuration | peak MB | peak / eager | step s | step / eager | compile s |")
    print("|---|---|---|---|---|---|---|")
    for name, result in results.items():
        eager = result["rows"]["eager"]
        for config, row in result["rows"].items():
            compile_s = row.get("compile_time", row["first_step_time"] - row["step_time"])
            if row.get("infeasible_at_budget"):
                config = f"{config} (budget {row['report']['budget'] / 2**20:.0f} MB: {args.budget} infeasible)"
            print(f"| {name} (batch {result['batch']}) | {config} | {row['peak'] / 2**20:.0f} | "
                  f"{row['peak'] / eager['peak']:.2f} | {row['step_time']:.2f} | "
                  f"{row['step_time'] / eager['step_time']:.2f} | {max(compile_s, 0):.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"budget": args.budget, "steps": args.steps, "cpu_count": os.cpu_count(),
                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "models": results}, indent=1))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
