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
    """torch.compile the buffer-fold module and run it once on the example (the cold compile happens here)."""
    runner = InductorRunner(torch.compile(fast_gm, backend="inductor"), eager_gm, list(fast_gm.tcomp_folds))
    with torch.no_grad():
        runner(*example)
    return runner

