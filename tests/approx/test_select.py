"""Approximate compilation end to end: the selection stays within the tolerance on held-out data, a model with
nothing worth factoring comes back unchanged, healing trains the factors, clear errors for bad options."""
import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

import tcomp
from tcomp.ir import Network


class LowRankMLP(nn.Module):
    """Weights that are low rank plus a little noise: structure pays."""

    def __init__(self, d=1024, rank=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 10)
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                layer.weight.copy_(torch.randn(d, rank, generator=g) @ torch.randn(rank, d, generator=g) / d ** 0.5
                                   / 4 + 5e-4 * torch.randn(d, d, generator=g))

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _batches(n, rows, d, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, d, generator=g) for _ in range(n)]


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def _flop_time(ops, at, training=False, repeats=9):
    """A deterministic stand-in for the measured time of ``ops`` (``tcomp.approx.option_time.time_ops``): 1 ns per
    FLOP of their networks plus 1 µs per op, so that which options are faster does not depend on the machine's
    load."""
    from tcomp.contract.plan import network_cost
    from tcomp.ir.symbolic import evaluate

    flops = sum(evaluate(network_cost(op).flops, at) for op in ops if isinstance(op, Network))
    return float(flops) * 1e-9 + 1e-6 * len(ops)


class _CountOps(TorchDispatchMode):
    """A cost of the aten ops run: 2·m·n·k for a matrix product, the elements written for anything else; a bf16
    result at half the price of a float32 one."""

    _PRODUCTS = {"mm": 0, "bmm": 0, "addmm": 1, "baddbmm": 1}  # op -> position of its left matrix

    def __init__(self):
        super().__init__()
        self.cost = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dtype.is_floating_point:
            left = self._PRODUCTS.get(func._opname)
            work = out.numel() * (2 * args[left].shape[-1] if left is not None else 1)
            self.cost += work * (0.5 if out.dtype == torch.bfloat16 else 1.0)
        return out


def _op_cost_time(fn, args, repeats=5):
    """A deterministic stand-in for a whole program's measured time: its ops' cost (:class:`_CountOps`), one
    nanosecond per float32 unit."""
    with torch.no_grad(), _CountOps() as counter:
        fn(*args)
    return counter.cost * 1e-9


def deterministic_layer_times(mp, time_fn=_flop_time):
    """Make the select pass time sites with ``time_fn`` (ops, at, ...) instead of measuring: the absolute times
    and the option-against-dense ratios alike; whole programs by their ops' cost (:func:`_op_cost_time`); and take
    the bf16 GEMM as 2× the float32 one, so the precision pass offers bf16 whatever the machine's load, and int8 as
    no faster, so that it offers no int8 (tests/approx/test_int8.py offers it)."""
    mp.setattr("tcomp.passes.precision.gemm_speedup", lambda dtype: 2.0)
    mp.setattr("tcomp.passes.precision.int8_speedup", lambda: 1.0)
    mp.setattr("tcomp.approx.selection.median_time", _op_cost_time)
    mp.setattr("tcomp.approx.selection.times_in_turns", lambda gms, args: [_op_cost_time(gm, args) for gm in gms])
    mp.setattr("tcomp.approx.selection.time_ops",
               lambda ops, at, training=False, repeats=9, machine=None: time_fn(ops, at, training, repeats))
    mp.setattr("tcomp.approx.selection.time_against",
               lambda ops, reference, at, training=False, rounds=9, machine=None:
               time_fn(ops, at, training) / time_fn(reference, at, training))


@pytest.fixture(scope="module")
def lowrank_compiled():
    model = LowRankMLP().eval()
    cal = _batches(5, 512, 1024)
    with pytest.MonkeyPatch.context() as mp:
        deterministic_layer_times(mp)
        compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    return model, compiled


def test_selection_within_tolerance_on_held_out_and_fresh_data(lowrank_compiled):
    model, compiled = lowrank_compiled
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert select.details["held_out_error"] <= 0.05
    x = _batches(1, 512, 1024, seed=99)[0]
    with torch.no_grad():
        assert _relative(compiled(x), model(x)) <= 0.05
    rows = {r["site"]: r for r in select.details["layers"]}
    assert {"fc1", "fc2"} <= set(rows) <= {"fc1", "fc2", "head"}  # head has 10 outputs: too small to factor
    for r in rows.values():  # every option the selection saw was measured faster than its dense layer
        assert all(o["time_ms"] < r["dense_ms"] for o in r["options"])


def test_factors_are_trainable_parameters_of_the_compiled_module(lowrank_compiled):
    _, compiled = lowrank_compiled
    factor_names = [n for n, _ in compiled.named_parameters() if n.startswith("tcomp_params.")]
    approximated = [r for r in next(p for p in compiled.report.passes if p.name == "select").details["layers"]
                    if r["chosen"] != "dense"]
    assert len(factor_names) >= 2 * len([r for r in approximated if "rank" in r["chosen"]])
    assert all(k.startswith("tcomp_params.") or not k.startswith("tcomp") for k in compiled.state_dict())


def test_nothing_worth_factoring_comes_back_unchanged():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    cal = _batches(4, 8, 16)
    compiled = tcomp.compile(model, cal[0], tolerance=0.01, calibration=cal)
    assert not any(n.startswith("tcomp.") for n in compiled.program.constants)
    assert all(op.compute_dtype is None for op in compiled.program.ops if isinstance(op, Network))
    x = cal[0]
    torch.testing.assert_close(compiled(x), model(x))


def _select_report(compiled):
    return next(p for p in compiled.report.passes if p.name == "select")


def test_heal_reduces_the_error(monkeypatch):
    deterministic_layer_times(monkeypatch)
    model = LowRankMLP(d=256, rank=96, seed=3).eval()  # rank 64, the largest offered, loses a part
    cal = _batches(4, 256, 256)
    plain = tcomp.compile(model, cal[0], tolerance=0.3, calibration=cal, structures=("asvd",))
    cfg = tcomp.HealConfig(steps=60, lr=1e-3, progress=False, budget_factor=1.0)
    compiled = tcomp.compile(model, cal[0], tolerance=0.3, calibration=cal, structures=("asvd",), heal=cfg)
    select = _select_report(compiled)
    assert select.changed
    assert [r["chosen"] for r in select.details["layers"]] == [r["chosen"] for r in _select_report(plain).details[
        "layers"]]
    first, last = select.details["heal_loss"]
    assert last < first
    assert select.details["held_out_error"] < _select_report(plain).details["held_out_error"]
    x = _batches(1, 256, 256, seed=99)[0]
    with torch.no_grad():
        assert _relative(compiled(x), model(x)) < _relative(plain(x), model(x))
    # the healed module still trains: gradients reach the factors
    params = [p for n, p in compiled.named_parameters() if n.startswith("tcomp_params.")]
    loss = compiled(cal[0]).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_healing_that_raises_the_held_out_error_is_not_kept(monkeypatch):
    def harmful_heal(gm, params, *args):
        with torch.no_grad():
            for p in params:
                p.add_(0.05 * torch.randn_like(p))
        return [1.0, 0.5]

    deterministic_layer_times(monkeypatch)
    monkeypatch.setattr("tcomp.approx.selection.heal", harmful_heal)
    model = LowRankMLP(d=256, rank=96, seed=3).eval()
    cal = _batches(4, 256, 256)
    plain = tcomp.compile(model, cal[0], tolerance=0.3, calibration=cal, structures=("asvd",))
    cfg = tcomp.HealConfig(steps=5, progress=False, budget_factor=1.0)
    compiled = tcomp.compile(model, cal[0], tolerance=0.3, calibration=cal, structures=("asvd",), heal=cfg)
    select = _select_report(compiled)
    assert select.changed and select.details["heal_loss"] is None
    assert all(r["healed"] is False and r["unhealed"] == r["measured"] for r in select.details["rounds"])
    x = _batches(1, 256, 256, seed=99)[0]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), plain(x))


def test_clear_errors_for_bad_options():
    m = LowRankMLP(d=64)
    with pytest.raises(ValueError, match="calibration"):
        tcomp.compile(m, torch.randn(2, 64), tolerance=0.01)
    with pytest.raises(ValueError, match="metric"):
        tcomp.compile(m, torch.randn(2, 64), tolerance=0.01, calibration=_batches(3, 2, 64), metric="l7")
    with pytest.raises(ValueError, match="heal"):
        tcomp.compile(m, torch.randn(2, 64), heal=True)
    with pytest.raises(ValueError, match="target_speedup"):
        tcomp.compile(m, torch.randn(2, 64), target_speedup=0.5, calibration=_batches(3, 2, 64))
    with pytest.raises(ValueError, match="at least 2"):
        tcomp.compile(m, torch.randn(2, 64), tolerance=0.1, calibration=_batches(1, 2, 64), strict=True)


def test_recompilation_reuses_the_selection_and_its_parameters(lowrank_compiled):
    model, compiled = lowrank_compiled
    first = compiled._tcomp_artifacts[0]
    assert first.selection
    factors = {n: p for n, p in compiled.named_parameters() if n.startswith("tcomp_params.")}
    compiled.train()  # another mode: a recompilation
    x = _batches(1, 512, 1024, seed=5)[0]
    with torch.no_grad():
        compiled(x)
    second = compiled._tcomp_artifacts[0]
    assert second is not first and second.selection.sites.keys() == first.selection.sites.keys()
    select = next(p for p in second.report.passes if p.name == "select")
    assert "re-applied" in select.notes[0]
    again = {n: p for n, p in compiled.named_parameters() if n.startswith("tcomp_params.")}
    assert again.keys() == factors.keys() and all(again[n] is factors[n] for n in factors)
    compiled.eval()


def test_target_speedup_mode():
    model = LowRankMLP(d=512, seed=4).eval()
    cal = _batches(4, 256, 512, seed=6)
    compiled = tcomp.compile(model, cal[0], target_speedup=1.5, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert select.details["target_speedup"] == 1.5
    if select.changed:  # the knapsack found options saving a third of the measured time
        assert select.details["predicted_saving_s"] >= select.details["base_time_s"] * (1 - 1 / 1.5) * 0.999


def _with_site_in_bf16(model, cal, site="fc1"):
    """The program the selection works on for ``model`` (calibrated on ``cal``), with ``site`` alone applied in
    bf16 (its dense option, no structure) and the new dtypes propagated."""
    from tcomp.approx.apply import apply_options

    with pytest.MonkeyPatch.context() as mp:
        deterministic_layer_times(mp)
        captured = {}

        def keep(program, chosen, example):
            captured.setdefault("program", program)
            captured.setdefault("example", example)
            return apply_options(program, chosen, example)

        mp.setattr("tcomp.approx.selection.apply_options", keep)
        tcomp.compile(model, cal[0], tolerance=0.5, calibration=cal, structures=("svd",))
    program = captured["program"]
    option = next(o for o in program.sites[site].options if o.dtype == torch.bfloat16 and "rank" not in o.name)
    return apply_options(program, {site: option}, captured["example"])


def test_a_bf16_layer_read_by_a_layer_kept_in_fp32():
    """fc1 in bf16 and fc2 (and head) kept fp32: the fp32 networks cast the bf16 activation up — also while the
    selection propagates the new dtypes (the recorded ones are stale then) — and the output stays float32."""
    from tcomp.codegen.emit import emit

    model = LowRankMLP(d=64, rank=4).eval()
    cal = _batches(3, 16, 64)
    gm = emit(_with_site_in_bf16(model, cal))
    with torch.no_grad():
        out, ref = gm(cal[1]), model(cal[1])
    assert out.dtype == torch.float32
    assert _relative(out, ref) < 2e-2  # bf16 rounding of one layer


class PermutedBetween(nn.Module):
    """fc1, its output's features permuted (a relabel Network: reshape, transpose), a softmax, then fc2 -- as
    ViT's qkv projection, head split and attention call."""

    def __init__(self, d: int = 64, rank: int = 4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        with torch.no_grad():  # low rank, so that the selection takes some option and applies it
            for layer in (self.fc1, self.fc2):
                layer.weight.copy_(torch.randn(d, rank, generator=g) @ torch.randn(rank, d, generator=g) / d ** 0.5)

    def forward(self, x):
        h = self.fc1(x)
        weights = torch.softmax(h.reshape(-1, 8, h.shape[-1] // 8).transpose(1, 2), -1)
        return self.fc2(weights.reshape(-1, h.shape[-1]))


def test_a_bf16_layer_read_through_a_relabel_by_a_layer_kept_in_fp32():
    """Propagating dtypes must carry bf16 through a relabel (it used to be cast to its stale recorded float32 there,
    so the fp32 layer after it was not told to cast its input up: a dtype error in ViT-tiny's selection)."""
    from tcomp.codegen.emit import emit

    model = PermutedBetween().eval()
    cal = _batches(3, 16, 64)
    mixed = _with_site_in_bf16(model, cal)
    relabel = [op for op in mixed.ops if isinstance(op, Network) and len(op.operands) == 1]
    assert relabel and relabel[0].out.dtype == torch.bfloat16  # the recorded dtype follows the bf16 layer
    with torch.no_grad():
        out, ref = emit(mixed)(cal[1]), model(cal[1])
    assert out.dtype == torch.float32
    assert _relative(out, ref) < 2e-2  # bf16 rounding of one layer



class Head(nn.Module):
    def __init__(self, d: int = 64):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x):
        return self.fc(x)


def test_a_factorization_is_judged_on_batches_it_was_not_fitted_to():
    """Few rows per batch (a classifier head reading one token per image): an activation-aware SVD fitted to the
    rows it is then judged on looks exact there (its rank exceeds their count) and is far off on others."""
    model = Head().eval()
    cal = _batches(6, 2, 64, seed=9)   # 2 rows a batch: rank 16 fits all the fit rows exactly
    with pytest.MonkeyPatch.context() as mp:
        deterministic_layer_times(mp)
        compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    (fc,) = select.details["layers"]
    asvd = [o for o in fc["options"] if o["name"].startswith("asvd(rank=16)")]
    assert asvd and all(o["sensitivity"] > 0.1 for o in asvd)  # not the ~0 of judging it on its own rows
    with torch.no_grad():
        assert _relative(compiled(cal[5]), model(cal[5])) <= 0.05
