"""A program in reduced precision throughout (tcomp.approx.precision.throughout) and the selection that weighs it as a
base: every floating activation in bf16 with float32 master weights, outputs cast back, re-applied on
recompilation; refused where an op cannot take bf16 inputs with float32 weights."""
import warnings

import pytest
import torch
import torch.nn as nn

from test_select import _op_cost_time, deterministic_layer_times

import tcomp
from tcomp.frontend.capture import capture
from tcomp.codegen.emit import emit
from tcomp.ir import Call, Network, Pointwise
from tcomp.frontend.lower import lower
from tcomp.approx.precision import throughout


class TinyEncoder(nn.Module):
    """Embedding, LayerNorm, an MLP block with a residual and a mean: a transformer's float32 islands in small."""

    def __init__(self, vocab=100, d=64, seq=16):
        super().__init__()
        self.emb, self.ln = nn.Embedding(vocab, d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.pos = nn.Parameter(torch.randn(seq, d) / 4)

    def forward(self, ids):
        h = self.ln(self.emb(ids) + self.pos)
        h = h + self.fc2(torch.nn.functional.gelu(self.fc1(h)))
        return self.ln(h).mean(1)


class ConvHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 64)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class WritesInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        out = torch.zeros(x.shape[0], 8)
        out[:, :4] = self.fc(x)[:, :4]
        return out


def _one_site_in_bf16(model, inputs: tuple, site: str | None = None):
    """``model``'s lowered program with one site (``site``, else its only linear site) in bf16 — its plain
    precision option applied, dtypes propagated — as the selection would apply it."""
    from tcomp.approx.apply import apply_options
    from tcomp.ir.sites import Option, find_sites

    program = lower(capture(model, inputs), type(model).__name__.lower())
    program.sites = find_sites(program)
    if site is None:
        (site,) = [n for n, s in program.sites.items() if s.kind == "linear"]
    option = Option(site, "precision", "bf16", dtype=torch.bfloat16)
    return apply_options(program, {site: option}, inputs)


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_every_floating_activation_runs_in_bf16_and_the_output_comes_back_float32():
    model = TinyEncoder().eval()
    ids = torch.randint(0, 100, (4, 16))
    program = throughout(lower(capture(model, (ids,)), "tiny"), torch.bfloat16, (ids,))
    assert program is not None
    floating = [op.out for op in program.ops if op.out.is_tensor and op.out.dtype.is_floating_point]
    assert floating[-1].dtype == torch.float32                      # the output, cast back
    users = program.users()
    made_f32 = [v for v in floating[:-1] if v.dtype == torch.float32]
    assert [v.name for v in made_f32] == ["emb"]                    # the embedding lookup, cast where it is made:
    assert all(isinstance(u, Pointwise) and u.fn == "to" for u in users[id(made_f32[0])])  # no float32 island
    assert all(op.compute_dtype == torch.bfloat16 for op in program.ops if isinstance(op, Network))
    assert all(v.dtype == torch.float32 for v in program.constants.values() if v.dtype.is_floating_point)
    with torch.no_grad():
        out, ref = emit(program)(ids), model(ids)
    assert out.dtype == torch.float32
    assert 0 < _relative(out, ref) < 3e-2  # bf16 rounding, and not float32 after all


def test_a_model_ending_in_normalize_runs_in_bf16_throughout():
    """F.normalize's signature has ``out=None``: a default, not a write (it had refused MiniLM's sentence encoder)."""
    class Normalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x):
            return torch.nn.functional.normalize(self.fc(x), dim=-1)

    model, x = Normalized().eval(), torch.randn(4, 16)
    program = throughout(lower(capture(model, (x,)), "normalized"), torch.bfloat16, (x,))
    assert program is not None
    with torch.no_grad():
        out = emit(program)(x)
    assert out.dtype == torch.float32 and _relative(out, model(x)) < 2e-2


def test_a_convolution_module_runs_in_its_weights_dtype():
    model = ConvHead().eval()
    x = torch.randn(2, 3, 8, 8)
    program = throughout(lower(capture(model, (x,)), "conv"), torch.bfloat16, (x,))
    conv = next(op for op in program.ops if isinstance(op, Call) and op.kind == "module")
    assert conv.out.dtype == torch.float32
    with torch.no_grad():
        out, ref = emit(program)(x), model(x)
    assert out.dtype == torch.float32 and _relative(out, ref) < 2e-2


def _op_cost_time_ops(ops, at, training=False, repeats=9):
    """The same for a site's ops in isolation (tcomp.approx.option_time.time_ops), on the same scale."""
    from tcomp.codegen.runnable import random_inputs, runnable
    from tcomp.ir import subprogram

    program = subprogram(ops, at)
    return _op_cost_time(runnable(program, training=training), random_inputs(program, at))


@pytest.fixture
def deterministic_times(monkeypatch):
    deterministic_layer_times(monkeypatch, _op_cost_time_ops)


def test_the_selection_keeps_the_bf16_throughout_base_when_it_is_fastest_and_recompiles_with_it(deterministic_times):
    model = TinyEncoder().eval()
    g = torch.Generator().manual_seed(3)
    cal = [torch.randint(0, 100, (8, 16), generator=g) for _ in range(4)]
    compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert select.details["base"] == "bf16 throughout", select.notes
    assert any("bases measured" in n and "float32" in n for n in select.notes)
    assert select.details["held_out_error"] <= 0.05
    with torch.no_grad():
        out = compiled(cal[3])
    assert out.dtype == torch.float32 and 0 < _relative(out, model(cal[3])) <= 0.05
    compiled.train()  # another mode: a recompilation, which re-applies the selection
    with torch.no_grad():
        again = compiled(cal[3])
    compiled.eval()
    assert again.dtype == torch.float32 and torch.allclose(again, out)
    notes = [n for a in compiled._tcomp_artifacts for p in a.report.passes if p.name == "select" for n in p.notes]
    assert any("re-applied" in n and "bf16 throughout" in n for n in notes)


def test_with_heal_only_the_base_predicted_fastest_is_healed(deterministic_times, monkeypatch):
    import tcomp.approx.selection

    healed_programs = []
    real_heal = tcomp.approx.selection.heal

    def counting_heal(gm, *args):
        healed_programs.append(gm)
        return real_heal(gm, *args)

    monkeypatch.setattr(tcomp.approx.selection, "heal", counting_heal)
    model = TinyEncoder().eval()
    g = torch.Generator().manual_seed(3)
    cal = [torch.randint(0, 100, (8, 16), generator=g) for _ in range(4)]
    cfg = tcomp.HealConfig(steps=5, lr=1e-3, progress=False)
    compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",), heal=cfg)
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert select.details["base"] == "bf16 throughout", select.notes
    assert {r["base"] for r in select.details["rounds"]} == {"bf16 throughout"}
    assert len(healed_programs) == sum(1 for r in select.details["rounds"] if r["chosen"]) >= 1
    assert any("float32: not tried" in n for n in select.notes), select.notes
    with torch.no_grad():
        assert _relative(compiled(cal[3]), model(cal[3])) <= 0.05


@pytest.mark.parametrize("float32_outcome_s", [0.5, 2.0])
def test_with_heal_a_base_whose_selection_measures_slower_than_exact_does_not_stop_the_next(
        deterministic_times, monkeypatch, float32_outcome_s):
    """bf16 throughout is predicted fastest and healed first, but its selection measures slower than the exact
    program (1.0 s): the float32 base is tried next, kept when faster (0.5 s), the program unchanged when not."""
    import tcomp.approx.selection as select_pass

    outcome_time = {}
    real_rounds = select_pass._rounds

    def rounds_noting_outcomes(base, *args):
        outcome, tried = real_rounds(base, *args)
        if outcome is not None:
            outcome_time[id(outcome.gm)] = 2.0 if base.marker is not None else float32_outcome_s
        return outcome, tried

    monkeypatch.setattr(select_pass, "_rounds", rounds_noting_outcomes)
    monkeypatch.setattr(select_pass, "times_in_turns",  # the exact program 1.0 s; bf16 throughout alone 0.5 s
                        lambda gms, args: [outcome_time.get(id(gm), 1.0 if k == 0 else 0.5)
                                           for k, gm in enumerate(gms)])
    model = TinyEncoder().eval()
    g = torch.Generator().manual_seed(3)
    cal = [torch.randint(0, 100, (8, 16), generator=g) for _ in range(4)]
    cfg = tcomp.HealConfig(steps=3, lr=1e-3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tcomp.TcompWarning)  # no fallback to eager
        compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",), heal=cfg)
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert [r["base"] for r in select.details["rounds"]][0] == "bf16 throughout"
    assert "float32" in {r["base"] for r in select.details["rounds"]}
    assert select.details["base"] == "float32"
    assert select.changed == (float32_outcome_s < 1.0), select.notes
    if not select.changed:
        assert any("the program is unchanged" in n for n in select.notes)
        with torch.no_grad():
            torch.testing.assert_close(compiled(cal[3]), model(cal[3]))


def test_a_model_that_cannot_run_in_bf16_throughout_is_selected_per_site(deterministic_times):
    model = WritesInPlace().eval()
    g = torch.Generator().manual_seed(4)
    cal = [torch.randn(4, 8, generator=g) for _ in range(4)]
    compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    assert select.details["base"] == "float32"
    assert any("bf16 throughout: not possible" in n for n in select.notes), select.notes
    with torch.no_grad():
        assert _relative(compiled(cal[3]), model(cal[3])) <= 0.05


class OffsetAfter(nn.Module):
    """fc1's result shifted by 100 and back before fc2: exact in float32, but bf16 holds 100 + h only in steps of
    0.5 — harmless to fc1's result cast back to float32, ruinous once the bf16 flows into the shift."""

    def __init__(self, d=64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return self.fc2((self.fc1(x) + 100.0) - 100.0)


def test_a_precision_option_is_charged_for_the_ops_after_it_that_run_in_its_dtype(deterministic_times):
    model = OffsetAfter().eval()
    g = torch.Generator().manual_seed(5)
    cal = [torch.randn(16, 64, generator=g) for _ in range(4)]
    compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    fc1 = next(r for r in select.details["layers"] if r["site"] == "fc1")
    bf16 = next(o for o in fc1["options"] if o["name"] == "bf16")
    assert bf16["sensitivity"] > 0.05  # the shift in bf16, not only fc1's rounding (about 4e-3)
    assert "bf16" not in fc1["chosen"]
    with torch.no_grad():
        assert _relative(compiled(cal[3]), model(cal[3])) <= 0.05


class Attention(nn.Module):
    def __init__(self, d: int = 32):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        return torch.nn.functional.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))


def test_a_bf16_query_meets_float32_key_and_value_at_the_attention_call():
    """scaled_dot_product_attention refuses mixed dtypes: the call's floating inputs are promoted to one dtype
    (float32 here), as an elementwise op would (it failed MiniLM's compile when the query alone was measured in
    bf16)."""
    model = Attention().eval()
    x = torch.randn(4, 8, 32)
    mixed = _one_site_in_bf16(model, (x,), "q")
    with torch.no_grad():
        out, ref = emit(mixed)(x), model(x)
    assert out.dtype == torch.float32
    assert 0 < _relative(out, ref) < 2e-2  # bf16 rounding of the query alone


class ReturnsSources(nn.Module):
    """Returns a float input as it came and an embedding lookup besides a computed value."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(50, 16), nn.Linear(16, 16)

    def forward(self, ids, x):
        e = self.emb(ids)
        return e, self.fc(e) + x, x, ids


def test_the_outputs_keep_their_values_and_dtypes():
    model = ReturnsSources().eval()
    ids, x = torch.randint(0, 50, (2, 8)), torch.randn(2, 8, 16)
    program = throughout(lower(capture(model, (ids, x)), "sources"), torch.bfloat16, (ids, x))
    with torch.no_grad():
        out, ref = emit(program)(ids, x), model(ids, x)
    assert [t.dtype for t in out] == [t.dtype for t in ref] == [torch.float32, torch.float32, torch.float32,
                                                                 torch.int64]
    assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2]) and torch.equal(out[3], ref[3])
    assert 0 < _relative(out[1], ref[1]) < 2e-2


def test_a_target_the_bf16_base_cannot_reach_is_not_claimed(deterministic_times):
    model = TinyEncoder().eval()
    g = torch.Generator().manual_seed(6)
    cal = [torch.randint(0, 100, (8, 16), generator=g) for _ in range(4)]
    compiled = tcomp.compile(model, cal[0], target_speedup=50.0, calibration=cal, structures=("asvd",))
    select = next(p for p in compiled.report.passes if p.name == "select")
    if select.changed:  # whatever was kept saves what a 50x speed-up needs, by the knapsack's account
        assert select.details["predicted_saving_s"] >= select.details["base_time_s"] * (1 - 1 / 50.0) * 0.999
    assert any(r["base"] == "bf16 throughout" for r in select.details["rounds"]) or \
        any("bf16 throughout" in n for n in select.notes)


def test_a_program_that_writes_in_place_is_not_run_in_bf16_throughout():
    """Its destination would be a cast copy: the write would be lost."""
    model = WritesInPlace().eval()
    x = torch.randn(3, 8)
    assert throughout(lower(capture(model, (x,)), "writes"), torch.bfloat16, (x,)) is None


class WrittenAfter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        out = self.fc(x)
        out[:, :4] = x[:, :4] * 2
        return out


def test_a_write_in_place_into_a_bf16_result_reaches_it():
    """A call that writes in place keeps its destination, whatever the dtypes it mixes."""
    model = WrittenAfter().eval()
    x = torch.randn(3, 8)
    mixed = _one_site_in_bf16(model, (x,))
    assert any(isinstance(op, Network) and op.compute_dtype == torch.bfloat16 for op in mixed.ops)
    with torch.no_grad():
        out, ref = emit(mixed)(x), model(x)
    assert torch.allclose(out[:, :4], ref[:, :4], rtol=1e-2, atol=1e-2)  # the write: 2x, not fc's values
    assert 0 < _relative(out[:, 4:], ref[:, 4:]) < 2e-2


class Decoder(nn.Module):
    """A linear layer whose result is reshaped into a convolution module's input (a VAE decoder's shape)."""

    def __init__(self):
        super().__init__()
        self.fc, self.conv = nn.Linear(16, 3 * 8 * 8), nn.Conv2d(3, 4, 3)

    def forward(self, z):
        return self.conv(self.fc(z).view(-1, 3, 8, 8))


def test_a_bf16_result_reaching_a_convolution_module_is_cast_to_its_weights_dtype(deterministic_times):
    """torch refuses a bf16 input to a convolution with float32 weights (it failed ResNet-50's compile, where two
    bf16 1×1 convolutions met at a residual add before the next 3×3 convolution)."""
    model = Decoder().eval()
    z = torch.randn(8, 16)
    mixed = _one_site_in_bf16(model, (z,))
    with torch.no_grad():
        out, ref = emit(mixed)(z), model(z)
    assert out.dtype == torch.float32 and 0 < _relative(out, ref) < 2e-2
    g = torch.Generator().manual_seed(8)
    cal = [torch.randn(8, 16, generator=g) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", tcomp.TcompWarning)  # no fallback to eager
        compiled = tcomp.compile(model, cal[0], tolerance=0.05, calibration=cal, structures=("asvd",))
    with torch.no_grad():
        assert _relative(compiled(cal[3]), model(cal[3])) <= 0.05


class Positions(nn.Module):
    """Angles from integer positions, as rotary embeddings make them: the model casts the positions itself."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        positions = torch.arange(x.shape[1]).float() * 1000.0
        return self.fc(x) + torch.sin(positions)[None, :, None]


def test_a_float_the_model_makes_from_integers_itself_stays_float32():
    model = Positions().eval()
    x = torch.randn(2, 300, 16)
    program = throughout(lower(capture(model, (x,)), "positions"), torch.bfloat16, (x,))
    made = next(op.out for op in program.ops if isinstance(op, Call) and op.target == "float")
    assert made.dtype == torch.float32
    assert not any(isinstance(op, Pointwise) and op.fn == "to" and op.args[0] is made for op in program.ops)
    with torch.no_grad():  # positions up to 299 000: in bf16 they would round by up to 1 024
        assert _relative(emit(program)(x), model(x)) < 2e-2
