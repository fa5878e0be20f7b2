"""The Inductor backend: tcomp decides *what* is computed, torch.compile's Inductor generates *how*.

The emitted GraphModule (with folded constants read from buffers, see :func:`tcomp.codegen.emit.emit`) is compiled with
``torch.compile(backend="inductor")``. Folded constants are refreshed outside the compiled region before each
call (a version check per fold; a copy only when a parameter changed), so the compiled graph sees plain tensors.
A call that needs gradients through a folded constant runs the eager-backend module instead, whose folds
differentiate exactly (the compiled graph would treat them as constants).

``choose_backend`` measures both on the example inputs for ``backend="auto"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx


@dataclass
class InductorRunner:
    compiled: object                    # torch.compile(gm_with_fold_buffers)
    eager: fx.GraphModule               # the eager-backend module (folds called, differentiable)
    folds: list = field(default_factory=list)
    pattern_rewrites: bool = True       # compiled with Inductor's pattern rewrites (see compile_with_inductor)
    _last: list = field(default_factory=list)

    def __post_init__(self):
        self._last = [None] * len(self.folds)

    def needs_eager(self) -> bool:
        return bool(self.folds) and torch.is_grad_enabled() and any(
            p.requires_grad for _, params, _ in self.folds for p in params)

    def refresh(self) -> None:
        with torch.no_grad():
            for k, (fold, params, buffer) in enumerate(self.folds):
                value = fold(*params)
                if value is not self._last[k]:
                    buffer.copy_(value)
                    self._last[k] = value

    def __call__(self, *tensors):
        if self.needs_eager():
            return self.eager(*tensors)
        self.refresh()
        return self.compiled(*tensors)


def compile_with_inductor(fast_gm: fx.GraphModule, eager_gm: fx.GraphModule, example: tuple) -> InductorRunner:
    """torch.compile the buffer-fold module and run it once on the example (the cold compile happens here). Where
    Inductor fails, it is tried once more without its pattern rewrites (``pattern_matcher=False``), for every later
    recompile too: a rewrite that matches and then cannot be built fails the whole compile (torch 2.13's
    scaled-dot-product-attention pattern 30, on the Whisper encoder's attention at batch 8 and head size 8, raised a
    broadcasting error tracing its own replacement); the runner's ``pattern_rewrites`` says which compiled."""
    from torch._dynamo.exc import BackendCompilerFailed  # imported with torch.compile (not at tcomp's start-up)

    try:
        return _compiled(fast_gm, eager_gm, example, {})
    except BackendCompilerFailed as first:  # a failure inside Inductor, not one running the example
        try:
            runner = _compiled(fast_gm, eager_gm, example, {"pattern_matcher": False})
        except Exception as second:
            raise second from first
        runner.pattern_rewrites = False
        return runner


def _compiled(fast_gm: fx.GraphModule, eager_gm: fx.GraphModule, example: tuple, options: dict) -> InductorRunner:
    compiled = torch.compile(fast_gm, backend="inductor", options=options or None)
    runner = InductorRunner(compiled, eager_gm, list(fast_gm.tcomp_folds))
    with torch.no_grad():
        runner(*example)
    return runner
