"""backend="inductor": tcomp's emitted module compiled by Inductor equals eager on the zoo's small models, and every
cached function of the weights (a folded constant, a weight cast to bf16) reaches the compiled graph as a buffer
— a CachedFunction called inside the graph made Dynamo recompile its ``compute`` for every weight shape until
its recompile limit."""
import pytest
import torch
import torch.nn as nn

import tcomp
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
