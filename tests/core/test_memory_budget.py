"""``tcomp.compile(..., memory_budget=...)``: the training step rematerialized under a budget (issue 5), through the
API and ``tcomp inspect --memory-budget``."""
import textwrap
import warnings

import pytest
import torch
from torch import nn

import tcomp
from tcomp.cli.main import main, parse_budget
from tcomp.cli.html import sparkline
from tcomp.remat import BudgetInfeasibleError


def activation_heavy_mlp() -> nn.Module:
    """Activations (4096×256 per layer) far larger than the weights (256×256): recomputation pays."""
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.GELU()) for _ in range(8)], nn.Linear(256, 10))


def eager_gradients(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_training_step_fits_the_budget_with_eager_gradients():
    model, x = activation_heavy_mlp(), torch.randn(4096, 256)
    expected = eager_gradients(model, x)
    compiled = tcomp.compile(model, (x,), memory_budget=0.6, backend="eager")
    memory = compiled.report.to_dict()["extra"]["memory"]
    assert memory["measured_peak"] <= memory["budget"] == int(0.6 * memory["eager_peak"])
    assert memory["recomputed"] > 0 and memory["tdi"] > 0
    assert "memory: training step peak" in compiled.explain()
    compiled(x).sum().backward()
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


def test_eval_mode_is_not_rematerialized_and_stays_exact():
    model, x = activation_heavy_mlp().eval(), torch.randn(64, 256)
    compiled = tcomp.compile(model, (x,), memory_budget=0.6, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert "memory" not in compiled.report.extra
    assert any("nothing is rematerialized" in n for n in compiled.report.notes)


def test_an_impossible_budget_raises_under_strict_and_falls_back_otherwise():
    model, x = activation_heavy_mlp(), torch.randn(512, 256)
    with pytest.raises(BudgetInfeasibleError, match="smallest budget found feasible"):
        tcomp.compile(model, (x,), memory_budget=0.05, strict=True, backend="eager")
    with pytest.warns(tcomp.TcompWarning, match="no schedule within the memory budget"):
        compiled = tcomp.compile(model, (x,), memory_budget=0.05, backend="eager")
    assert compiled.report.status == "eager fallback"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("budget, error", [(1.5, ValueError), (0.0, ValueError), (-3, ValueError),
                                           ("half", TypeError)])
def test_bad_budgets_are_rejected_at_compile_time(budget, error):
    with pytest.raises(error):
        tcomp.compile(nn.Linear(4, 4), (torch.randn(2, 4),), memory_budget=budget)


def test_parse_budget_units():
    assert parse_budget("0.6") == 0.6
    assert parse_budget("512MiB") == 512 * 2**20
    assert parse_budget("2GB") == 2 * 10**9
    assert parse_budget("123456") == 123456
    with pytest.raises(ValueError, match="--memory-budget"):
        parse_budget("lots")


def test_sparkline_scales_to_the_top_value():
    assert sparkline([0, 4, 8], top=8) == " ▄█"
    assert len(sparkline(list(range(1000)), top=1000, width=50)) == 50


MODEL_FILE = """
    import torch
    def make():
        torch.manual_seed(0)
        layers = [m for _ in range(8) for m in (torch.nn.Linear(256, 256), torch.nn.GELU())]
        return torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
"""


def test_inspect_memory_budget_text_and_html(tmp_path, capsys):
    f = tmp_path / "heavy.py"
    f.write_text(textwrap.dedent(MODEL_FILE))
    assert main(["inspect", f"{f}:make", "--input", "4096x256", "--memory-budget", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "-- memory (training step) --" in out and "before |" in out and "after  |" in out
    assert main(["inspect", f"{f}:make", "--input", "4096x256", "--memory-budget", "0.6", "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!doctype html>") and "<svg" in page and "<polyline" in page
    assert main(["inspect", f"{f}:make", "--input", "512x256", "--memory-budget", "0.05"]) == 2
    assert "smallest budget found feasible" in capsys.readouterr().err


def test_compiling_leaves_the_callers_tensors_and_graph_alone():
    """Measuring runs training steps: they must not reach an input that requires grad, nor the graph behind it."""
    torch.manual_seed(1)
    pre, model = nn.Linear(256, 256), activation_heavy_mlp()
    z = torch.randn(4096, 256)
    x = torch.tanh(pre(z))  # not a leaf: the block sits after a trainable layer
    compiled = tcomp.compile(model, (x,), memory_budget=0.6, backend="eager", strict=True)
    assert pre.weight.grad is None
    out = compiled(torch.tanh(pre(z)))
    out.sum().backward()  # the caller's own graph is intact
    expected_pre = pre.weight.grad.clone()
    pre.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    model(torch.tanh(pre(z))).sum().backward()
    torch.testing.assert_close(expected_pre, pre.weight.grad, rtol=1e-4, atol=1e-6)


def test_input_gradients_and_grad_mode_are_guarded():
    model = activation_heavy_mlp()
    x = torch.randn(4096, 256)
    compiled = tcomp.compile(model, backend="eager", memory_budget=0.6)
    with torch.no_grad():
        compiled(x)  # first call without gradients: nothing to rematerialize
    assert "memory" not in compiled.report.extra
    compiled(x).sum().backward()  # with gradients: a new, rematerialized artifact
    assert "memory" in compiled.report.extra and not compiled.report.batch_symbolic
    leaf = x.clone().requires_grad_()
    compiled(leaf).sum().backward()  # an input that requires grad gets its gradient
    reference = x.clone().requires_grad_()
    model(reference).sum().backward()
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-4, atol=1e-6)


class TupleOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = activation_heavy_mlp()

    def forward(self, x):
        y = self.body(x)
        return y, y.argmax(-1), 3


def test_outputs_that_are_not_floating_tensors_pass_through():
    model, x = TupleOutput(), torch.randn(4096, 256)
    compiled = tcomp.compile(model, (x,), memory_budget=0.6, backend="eager", strict=True)
    y, labels, three = compiled(x)
    ref_y, ref_labels, _ = model(x)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-5)
    assert three == 3 and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("budget", ["0", "-2", "1.5", "inf", "lots"])
def test_inspect_rejects_bad_budgets_with_a_message(budget, capsys):
    assert main(["inspect", "zoo:mlp", "--batch", "2", "--memory-budget", budget]) == 2
    assert "--memory-budget" in capsys.readouterr().err


def test_native_stderr_is_restored_after_an_exception():
    import os

    from tcomp.remat.measure import _native_stderr_silenced

    before = os.fstat(2)
    with pytest.raises(RuntimeError), _native_stderr_silenced():
        raise RuntimeError("inside")
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)
