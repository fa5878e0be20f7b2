"""backend="inductor": tcomp's emitted module compiled by Inductor equals eager on the zoo's small models, and every
cached function of the weights (a folded constant, a weight cast to bf16) reaches the compiled graph as a buffer
— a CachedFunction called inside the graph made Dynamo recompile its ``compute`` for every weight shape until
its recompile limit. backend="auto" runs the original forward where the compiled program measured clearly slower.
"""
import pytest
import torch
import torch.nn as nn

import tcomp
from tcomp import pipeline
from tcomp.codegen.emit import emit
from tcomp.numerics import compare
from tcomp.codegen.folded import CachedFunction
from tcomp.zoo import get_entry


@pytest.mark.parametrize("name", ["mlp", "tt_net", "equivariant_tp", "monarch_mlp"])
def test_the_inductor_backend_equals_eager_on_small_zoo_models(name):
    entry = get_entry(name)
    model, inputs = entry.build().eval(), entry.example_inputs(batch=4)
    compiled = tcomp.compile(model, inputs, strict=True, backend="inductor")
    with torch.no_grad():
        c = compare(model(*inputs), compiled(*inputs))
    assert c.ok, c.detail


def _bf16_program():
    from tcomp.ir.sites import find_sites, Option
    from tcomp.frontend.capture import capture
    from tcomp.frontend.lower import lower
    from tcomp.approx.apply import apply_options

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8)).eval()
    x = torch.randn(4, 32)
    program = lower(capture(model, (x,)), "mlp")
    program.sites = find_sites(program)
    chosen = {n: Option(n, "precision", "bf16", dtype=torch.bfloat16)
              for n, s in program.sites.items() if s.kind == "linear"}
    assert len(chosen) == 3
    return model, x, apply_options(program, chosen, (x,))


def test_weight_casts_are_buffers_when_a_graph_compiler_reads_the_module():
    model, x, program = _bf16_program()
    plain, buffered = emit(program), emit(program, fold_buffers=True)
    called = [n for n in buffered.graph.nodes if n.op == "call_module"
              and isinstance(buffered.get_submodule(n.target), CachedFunction)]
    assert not called, [n.target for n in called]
    assert len(buffered.tcomp_folds) >= 3  # one bf16 copy of each weight
    read = [n.target for n in buffered.graph.nodes if n.op == "get_attr"]
    assert all(t.startswith("tcomp.") and t.endswith("_value") for t in read), read  # not the float32 masters
    with torch.no_grad():
        torch.testing.assert_close(buffered(x), plain(x))


def test_a_bf16_program_compiles_with_inductor_without_recompiling():
    import torch._dynamo

    from tcomp.codegen.inductor import compile_with_inductor

    model, x, program = _bf16_program()
    torch._dynamo.reset()
    # config.patch, not monkeypatch: monkeypatch's undo deletes the setting, and every later recompile in the
    # process then fails on the missing attribute
    with torch._dynamo.config.patch(error_on_recompile=True):
        runner = compile_with_inductor(emit(program, fold_buffers=True), emit(program), (x,))
        with torch.no_grad():
            out = runner(x)
    assert ((out - model(x)).norm() / model(x).norm()).item() < 2e-2


class Counted(nn.Module):
    """Counts the calls of its forward that run as Python (a compiled program runs none)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.relu(self.fc(x)) * 2


def _measured(times: dict[str, float], monkeypatch) -> list:
    """``backend="auto"`` with Inductor unavailable and the timings ``times``; returns the sets of names timed."""
    timed = []

    def in_turns(fns, **kw):
        timed.append(set(fns))
        return {k: times[k] for k in fns}

    def no_inductor(*a, **kw):
        raise RuntimeError("no Inductor in this test")

    monkeypatch.setattr(pipeline, "in_turns", in_turns)
    monkeypatch.setattr(pipeline, "compile_with_inductor", no_inductor)
    return timed


def test_auto_runs_the_original_forward_where_the_compiled_program_measured_slower(tmp_path, monkeypatch):
    """A compiled program that measured slower than the model it came from is not run: calls go to the original
    forward, the report says why with both times, and ``.code`` marks the program as not run."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    timed = _measured({"eager": 1e-3, "original": 0.5e-3}, monkeypatch)
    model, x = Counted().eval(), torch.randn(4, 8)
    compiled = tcomp.compile(model, backend="auto")
    compiled.compile_for(x)
    assert {"eager", "original"} in timed
    before = model.calls
    torch.testing.assert_close(compiled(x), torch.relu(model.fc(x)) * 2)
    assert model.calls == before + 1
    assert compiled.report.backend == "original" and compiled.report.status == "compiled"
    assert any("running the original forward" in n and "0.500 ms" in n for n in compiled.report.notes)
    assert compiled.code.startswith("# not run")


def test_auto_keeps_the_compiled_program_on_a_near_tie(tmp_path, monkeypatch):
    """Within the margin timings move by (the original 5% faster), the compiled program runs."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    _measured({"eager": 1e-3, "original": 0.95e-3}, monkeypatch)
    model, x = Counted().eval(), torch.randn(4, 8)
    compiled = tcomp.compile(model, backend="auto")
    compiled.compile_for(x)
    before = model.calls
    torch.testing.assert_close(compiled(x), torch.relu(model.fc(x)) * 2)
    assert model.calls == before
    assert compiled.report.backend == "eager"
    assert not compiled.code.startswith("# not run")


def test_inductor_is_tried_again_without_its_pattern_rewrites(monkeypatch):
    """An Inductor pattern rewrite that fails to build its replacement failed the whole compile: tcomp compiles
    again without the rewrites (a failure stood in for here), says so, and the result equals eager."""
    from torch._dynamo.exc import BackendCompilerFailed

    import tcomp.codegen.inductor as inductor

    compiled = inductor._compiled
    tries = []

    def failing_with_rewrites(fast_gm, eager_gm, example, options):
        tries.append(dict(options))
        if not options:
            raise BackendCompilerFailed(None, RuntimeError("a rewrite failed"), None)
        return compiled(fast_gm, eager_gm, example, options)

    monkeypatch.setattr(inductor, "_compiled", failing_with_rewrites)
    model, x = Counted().eval(), torch.randn(4, 8)
    c = tcomp.compile(model, x, backend="inductor")
    assert tries == [{}, {"pattern_matcher": False}]
    assert c.report.backend == "inductor" and any("without them" in n for n in c.report.notes)
    torch.testing.assert_close(c(x), torch.relu(model.fc(x)) * 2)


def test_inductor_is_not_tried_again_for_a_failure_outside_it(monkeypatch):
    """A failure that is not Inductor's own (here: running the example) is not hidden behind a second compile."""
    import tcomp.codegen.inductor as inductor

    tries = []

    def failing(fast_gm, eager_gm, example, options):
        tries.append(dict(options))
        raise RuntimeError("the example does not run")

    monkeypatch.setattr(inductor, "_compiled", failing)
    with pytest.raises(RuntimeError, match="the example does not run"):
        inductor.compile_with_inductor(None, None, ())
    assert tries == [{}]


class Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.fc2(torch.dropout(self.fc1(x), 0.5, self.training))


def test_choosing_the_backend_leaves_the_random_stream_as_a_call_does(tmp_path, monkeypatch):
    """Compiling runs the model (shape probes, checks; backend="auto" times the original forward and the program a
    number of times that depends on timing), and a dropout draws at every run: the caller's random stream after the
    first call, which compiles, is what one eager call leaves."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(pipeline, "compile_with_inductor", lambda *a: (_ for _ in ()).throw(RuntimeError("none")))
    model, x = Dropped().train(), torch.randn(4, 8)
    compiled = tcomp.compile(model, backend="auto")
    torch.manual_seed(3)
    compiled(x)
    after_compiled = torch.rand(3)
    torch.manual_seed(3)
    model(x)
    torch.testing.assert_close(after_compiled, torch.rand(3))


def test_the_original_forward_serves_sizes_up_to_the_measured_one(tmp_path, monkeypatch):
    """Where the original measured faster at the example's batch, smaller batches run it too; a larger batch (where
    a compiled program's fixed costs weigh less) compiles again and is measured afresh."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    timed = _measured({"eager": 1e-3, "original": 0.5e-3}, monkeypatch)
    model = Counted().eval()
    compiled = tcomp.compile(model, backend="auto")
    with torch.no_grad():
        for batch in (4, 2, 3):
            x = torch.randn(batch, 8)
            torch.testing.assert_close(compiled(x), torch.relu(model.fc(x)) * 2)
        assert len(compiled._tcomp_artifacts) == 1 and compiled.report.backend == "original"
        compiled(torch.randn(16, 8))
    assert len(compiled._tcomp_artifacts) == 2 and len([t for t in timed if "original" in t]) == 2
