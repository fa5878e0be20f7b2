"""Int8 linear layers (tcomp.codegen.quantized) and the int8 option of approximate compilation: the product is
close to float32's for any shape, its gradients are straight-through, the weight's cache follows the weight, and an
approximate compile takes int8 where it is measured faster and within the tolerance."""
import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings

import tcomp
from tcomp.codegen.quantized import int8_linear, pack_int8, unpack_int8

from test_select import deterministic_layer_times


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@settings(max_examples=60)
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), i=st.integers(1, 70), o=st.integers(1, 40),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_int8_linear_is_close_to_float32_for_any_shape(lead, i, o, bias, seed):
    """Per-channel weights, per-row activations: each output is within half a quantization step of each factor,
    so the error is bounded by the scales (zero rows and columns included); shape and dtype are float32's."""
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(*lead, i, generator=g), torch.randn(o, i, generator=g)
    if i > 1:
        x[..., 0] = 0
        w[0] = 0
    b = torch.randn(o, generator=g) if bias else None
    y, ref = int8_linear(x, pack_int8(w), b), nn.functional.linear(x, w, b)
    assert y.shape == ref.shape and y.dtype == torch.float32
    wq_t, scale = unpack_int8(pack_int8(w))
    assert (wq_t.t().float() * scale[:, None] - w).abs().max() <= scale.max() / 2 + 1e-6
    # |error| ≤ Σ_i (|x|·δw + |w|·δx + δx·δw), δ = half a step of the row's or channel's scale
    x_step = x.abs().amax(-1, keepdim=True) / 127
    bound = (x.abs().sum(-1, keepdim=True) * scale / 2 + x_step / 2 * w.abs().sum(1)
             + i * (x_step / 2) * (scale / 2))
    assert ((y - ref).abs() <= bound * 1.01 + 1e-5).all()


def test_int8_gradients_are_straight_through():
    """The input's gradient is the float product with the dequantized weight; the bias's the usual one."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, requires_grad=True)
    w, b = torch.randn(32, 64), torch.randn(32, requires_grad=True)
    packed = pack_int8(w)
    grad = torch.randn(4, 3, 32)
    int8_linear(x, packed, b).backward(grad)
    wq_t, scale = unpack_int8(packed)
    torch.testing.assert_close(x.grad, grad @ (wq_t.float() * scale).t())
    torch.testing.assert_close(b.grad, grad.sum((0, 1)))


class Wide(nn.Module):
    """Full-rank random weights: a low-rank factorization cannot approximate them, int8 can."""

    def __init__(self, d=256):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 8)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _int8_faster(mp):
    """The selection's timings by cost (tests/approx/test_select.py) with int8 offered and its product timed at a
    quarter of float32's (the stand-in prices Networks by their FLOPs and cannot read an opaque call's)."""
    from test_select import _flop_time

    from tcomp.ir.symbolic import evaluate

    def time_fn(ops, at, training=False, repeats=9):
        t = _flop_time(ops, at, training, repeats)
        for op in ops:
            if getattr(op, "target", None) is int8_linear:
                x, packed = op.args[0], op.args[1]
                rows = math.prod(evaluate(s, at) for s in x.shape[:-1])
                t += 0.25 * 2 * rows * packed.shape[0] * packed.shape[1] * 1e-9
        return t

    deterministic_layer_times(mp, time_fn)
    mp.setattr("tcomp.passes.precision.int8_speedup", lambda: 3.0)


def test_an_approximate_compile_takes_int8_where_it_pays(monkeypatch):
    torch.manual_seed(0)
    model = Wide().eval()
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(32, 256, generator=g) for _ in range(5)]
    _int8_faster(monkeypatch)
    compiled = tcomp.compile(model, cal[0], tolerance=0.03, calibration=cal, structures=("asvd",))
    assert "int8_linear" in compiled.code
    held_out = torch.randn(64, 256, generator=g)
    with torch.no_grad():
        assert 1e-4 < _relative(compiled(held_out), model(held_out)) < 0.03
        # the int8 weights are a cache of the float weights: a new weight reaches the output
        model.fc1.weight.mul_(-1)
        assert _relative(compiled(held_out), model(held_out)) < 0.03


def test_no_int8_option_where_int8_is_not_faster(monkeypatch):
    torch.manual_seed(0)
    model = Wide().eval()
    cal = [torch.randn(32, 256) for _ in range(4)]
    deterministic_layer_times(monkeypatch)
    compiled = tcomp.compile(model, cal[0], tolerance=0.03, calibration=cal, structures=("asvd",))
    notes = [n for p in compiled.report.passes if p.name == "precision" for n in p.notes]
    assert any("no int8 options" in n for n in notes)
    assert "int8_linear" not in compiled.code


@pytest.mark.parametrize("shape", [(8, 256), (2, 4, 256)])
def test_int8_sites_train_their_bias_and_pass_gradients_on(shape, monkeypatch):
    """Training through the compiled module: the bias of an int8 site gets its gradient, the layer before it too
    (straight through); the int8 weight itself gets none."""
    torch.manual_seed(0)
    model = Wide()
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(*shape, generator=g) for _ in range(5)]
    _int8_faster(monkeypatch)
    compiled = tcomp.compile(model.eval(), cal[0], tolerance=0.03, calibration=cal, structures=("asvd",))
    assert "int8_linear" in compiled.code
    compiled(cal[1]).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["head.weight"] is not None and grads["head.weight"].abs().sum() > 0
    assert all(grads[f"{fc}.bias"] is not None and grads[f"{fc}.bias"].abs().sum() > 0 for fc in ("fc1", "fc2"))


def test_int8_sites_run_dense_where_a_recompile_cannot_run_them(monkeypatch):
    """The selection is re-applied when the module recompiles (another mode, dtype or device): an int8 site runs its
    dense op where int8 cannot run as chosen — in train mode (its weight would get no gradient), in float64 — and
    the report says so; eval mode in float32 runs int8 again."""
    torch.manual_seed(0)
    model = Wide()
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(16, 256, generator=g) for _ in range(5)]
    _int8_faster(monkeypatch)
    compiled = tcomp.compile(model.eval(), cal[0], tolerance=0.03, calibration=cal, structures=("asvd",))
    assert "int8_linear" in compiled.code
    model.train()
    compiled(cal[1]).square().sum().backward()
    assert "int8_linear" not in compiled.code
    assert any("run dense here" in n for p in compiled.report.passes for n in p.notes)
    assert all(getattr(model, fc).weight.grad is not None for fc in ("fc1", "fc2", "head"))
    model.eval().double()
    with torch.no_grad():
        x = cal[2].double()
        y = compiled(x)
    assert compiled.report.status == "compiled" and "int8_linear" not in compiled.code and y.dtype == torch.float64
    model.float()
    with torch.no_grad():
        compiled(cal[2])
    assert "int8_linear" in compiled.code
