"""Shared helpers of the rewrite-pass tests: compiling with a chosen pipeline, comparing forward results and
parameter gradients with eager, reading the compiled program."""
from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch
import torch.nn as nn

import tcomp
import tcomp.passes
from tcomp.ir import Call
from tcomp.numerics import compare
from tcomp.passes import (algebraic, contraction_order, conv_calls, cse, epilogue, fold_bn, fuse_networks, layout,
                          select_through)
from tcomp.passmanager import Pass


def layout_pass(choice: str) -> Pass:
    """The layout pass with its decision fixed (no measuring)."""
    return Pass(layout.NAME, lambda p, ctx: layout.run(p, dataclasses.replace(
        ctx, options=dataclasses.replace(ctx.options, layout=choice))))


def simplify_passes(layout_choice: str = "channels_last") -> list[Pass]:
    """The exact passes in the pipeline's order (tcomp.passes.pipeline), with the layout decision fixed."""
    return [cse.PASS, algebraic.PASS, select_through.PASS, fuse_networks.PASS, fold_bn.PASS, conv_calls.PASS,
            epilogue.PASS, layout_pass(layout_choice), contraction_order.PASS]


@contextlib.contextmanager
def pipeline(passes: list[Pass]):
    """``tcomp.compile`` runs exactly these passes inside the block (for hypothesis tests, which take no
    function-scoped fixtures; other tests use the ``use_passes`` fixture)."""
    original = tcomp.passes.pipeline
    tcomp.passes.pipeline = lambda: list(passes)
    try:
        yield
    finally:
        tcomp.passes.pipeline = original


def compiled(model: nn.Module, *inputs: torch.Tensor):
    return tcomp.compile(model, inputs, strict=True, backend="eager")


def assert_forward_equal(model: nn.Module, compiled_model, *inputs: torch.Tensor) -> None:
    with torch.no_grad():
        c = compare(model(*inputs), compiled_model(*inputs))
    assert c.ok, c.detail


def _loss(out) -> torch.Tensor:
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).reshape(t.shape)).sum() for t in leaves)


def assert_gradients_equal(model: nn.Module, *inputs: torch.Tensor, rtol: float = 1e-9) -> None:
    """Compile a float64 copy of ``model`` and compare every parameter gradient (and input gradient) with eager.

    Float64: exact rewrites reassociate sums, and float32 gradients through ReLUs move under reassociation."""
    model = copy.deepcopy(model).double()
    inputs = tuple(t.detach().double().requires_grad_(True) for t in inputs)
    c = compiled(model, *inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    wanted = params + list(inputs)
    g_ref = torch.autograd.grad(_loss(model(*inputs)), wanted, allow_unused=True)
    g_out = torch.autograd.grad(_loss(c(*inputs)), wanted, allow_unused=True)
    floor = 1e-12 * max(g.norm().item() for g in g_ref if g is not None)
    for a, b in zip(g_out, g_ref):
        if b is None:
            assert a is None or not a.any()
            continue
        assert a is not None
        err = (a - b).norm().item()
        assert err <= rtol * b.norm().item() + floor, f"gradient differs by {err:.3e} (norm {b.norm().item():.3e})"


def ops_of(compiled_model, kind=None) -> list:
    ops = compiled_model.program.ops
    return [op for op in ops if kind is None or isinstance(op, kind)]


def module_calls(compiled_model, module_type: type) -> list[Call]:
    return [op for op in ops_of(compiled_model, Call) if op.kind == "module" and isinstance(op.module, module_type)]


def report_of(compiled_model, name: str):
    return next(r for r in compiled_model.report.passes if r.name == name)

