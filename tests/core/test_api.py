"""tcomp.compile: fallbacks and clear errors, guards and recompilation, state dicts, gradients, decorators,
the torch.compile backend, verification."""
import io
import warnings

import pytest
import torch
import torch.nn as nn

import tcomp
from tcomp.ir import Network
from tcomp.passmanager import Pass, PassReport


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32, bias=False)
        self.fc3 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc3(self.fc2(torch.relu(self.fc1(x))))


class DataDependent(nn.Module):
    """Python control flow on tensor values: neither torch.fx nor torch.export can capture it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -x


class Uncapturable(DataDependent):
    """What TorchDynamo is told to leave alone, and neither torch.fx nor torch.export can trace."""

    @torch._dynamo.disable
    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -x


class ShapeDependent(nn.Module):
    """Control flow on a shape: torch.fx fails, torch.export specialises it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.shape[0] > 2:
            return self.fc(x) * 2
        return self.fc(x)


def test_a_model_fx_and_export_cannot_trace_is_compiled_in_pieces():
    """Control flow on a tensor's value stops torch.fx and torch.export; TorchDynamo breaks the graph there, the
    pieces on either side compile, the branch runs eagerly, and the report names the break and its line."""
    m = DataDependent().eval()
    x = torch.randn(3, 4).abs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = tcomp.compile(m, x, strict=True)
        for z in (x, -x, torch.randn(6, 4).abs()):
            torch.testing.assert_close(c(z), m(z))
    assert c.report.status == "compiled in pieces" and c.report.capture == "dynamo"
    assert any("graph break" in n and "if x.sum() > 0" in n for n in c.report.notes), c.report.notes
    assert any(isinstance(op, Network) for piece in c.report.pieces for op in piece.program.ops)
    assert "piece 1" in c.explain() and "# piece 1" in c.code
    grads = [torch.autograd.grad(f(x).square().sum(), m.fc.weight)[0] for f in (m, c)]
    torch.testing.assert_close(grads[1], grads[0])


def test_the_report_of_pieces_counts_those_that_run_eagerly(monkeypatch):
    """A piece whose own compile fails runs eagerly: the report's summary line says how many of the pieces did,
    instead of calling them all compiled."""
    import tcomp.api as api

    build = api.build

    def failing_on_negation(model, *args, **kwargs):
        if "neg" in getattr(model, "code", ""):
            raise RuntimeError("this piece does not compile")
        return build(model, *args, **kwargs)

    monkeypatch.setattr(api, "build", failing_on_negation)
    m = DataDependent().eval()
    c = tcomp.compile(m)
    with pytest.warns(tcomp.TcompWarning, match="this piece does not compile"):
        for z in (torch.randn(3, 4).abs(), -torch.randn(3, 4).abs()):
            torch.testing.assert_close(c(z), m(z))
    statuses = [p.report.status for p in c.report.pieces]
    assert "eager fallback" in statuses and "compiled" in statuses
    assert f"({statuses.count('compiled')} compiled, 1 eager fallback)" in c.explain()


def test_untraceable_model_runs_eagerly_with_one_warning():
    m = Uncapturable().eval()
    x = torch.randn(3, 4).abs()
    with pytest.warns(tcomp.TcompWarning, match="cannot compile Uncapturable") as record:
        c = tcomp.compile(m, x)
    assert len(record) == 1 and record[0].filename == __file__  # the user's line, not tcomp's or torch's
    c = tcomp.compile(m)
    with pytest.warns(tcomp.TcompWarning, match="cannot compile Uncapturable") as record:
        c(x)
    assert len(record) == 1 and record[0].filename == __file__
    assert "in pieces through TorchDynamo failed" in c.report.fallback_reason
    assert "torch.fx failed" in c.report.fallback_reason and "torch.export failed" in c.report.fallback_reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(c(x), m(x))
        torch.testing.assert_close(c(-x), m(-x))
    assert c.report.status == "eager fallback"


def test_strict_raises_a_capture_error_naming_the_construct():
    with pytest.raises(tcomp.CaptureError) as err:
        tcomp.compile(Uncapturable().eval(), torch.randn(3, 4), strict=True)
    msg = str(err.value)
    assert "if x.sum() > 0" in msg  # the offending line of the user's code


def test_shape_dependent_control_flow_uses_torch_export():
    m = ShapeDependent().eval()
    x = torch.randn(3, 4)
    c = tcomp.compile(m, x, strict=True)
    assert c.report.capture == "export" and c.report.batch_symbolic  # export's guard: the batch is at least 3
    assert any(isinstance(op, Network) for op in c.program.ops)
    torch.testing.assert_close(c(x), m(x))
    z = torch.randn(7, 4)  # the same branch: the same program
    torch.testing.assert_close(c(z), m(z))
    assert len(c._tcomp_artifacts) == 1
    y = torch.randn(2, 4)  # the other branch: a guarded recompile, not a wrong answer
    torch.testing.assert_close(c(y), m(y))
    assert len(c._tcomp_artifacts) == 2


def test_batch_size_changes_without_recompiling_when_symbolic():
    m = MLP().eval()
    c = tcomp.compile(m, torch.randn(8, 16))
    assert c.report.batch_symbolic
    for b in (3, 24, 2, 8):  # the sizes fitted on: 2 to 2 * 8 + 8
        x = torch.randn(b, 16)
        torch.testing.assert_close(c(x), m(x))
    assert len(c._tcomp_artifacts) == 1
    x = torch.randn(1, 16)  # a batch of one is another signature (a model may squeeze or broadcast it)
    torch.testing.assert_close(c(x), m(x))
    x = torch.randn(64, 16)  # beyond the sizes fitted on: another program, fitted up to 2 * 64 + 8
    torch.testing.assert_close(c(x), m(x))
    assert sorted(a.guard.ranges for a in c._tcomp_artifacts) == [((1, 10),), ((2, 24),), ((2, 136),)]


def test_a_program_compiled_at_batch_one_serves_batch_one_and_the_others():
    m = MLP().eval()
    c = tcomp.compile(m, torch.randn(1, 16))
    assert c.report.symbolic == {"B": 1}
    for b in (1, 5, 2, 1):
        x = torch.randn(b, 16)
        torch.testing.assert_close(c(x), m(x))
    assert len(c._tcomp_artifacts) == 1


def test_dtype_and_mode_changes_recompile():
    m = MLP().eval()
    c = tcomp.compile(m, torch.randn(8, 16))
    x = torch.randn(4, 16, dtype=torch.float64)
    m.double()
    c(x)
    assert len(c._tcomp_artifacts) >= 1 and c(x).dtype == torch.float64
    torch.testing.assert_close(c(x), m(x))
    c.train()
    assert m.training
    n_before = len(c._tcomp_artifacts)
    c(x)
    assert len(c._tcomp_artifacts) == n_before + 1


def test_state_dict_keys_and_round_trip():
    m = MLP().eval()
    c = tcomp.compile(m, torch.randn(2, 16))
    assert list(c.state_dict()) == list(m.state_dict())
    buf = io.BytesIO()
    torch.save(c.state_dict(), buf)
    other = MLP().eval()
    c2 = tcomp.compile(other, torch.randn(2, 16))
    x = torch.randn(5, 16)
    before = c2(x).clone()
    buf.seek(0)
    c2.load_state_dict(torch.load(buf))
    torch.testing.assert_close(c2(x), m(x))  # folded constants follow the loaded weights
    assert not torch.allclose(before, c2(x))


def test_gradients_equal_eager_including_folded_weights():
    m = MLP().eval()
    x = torch.randn(6, 16)
    c = tcomp.compile(m, x)
    assert "fold_0" in c.code  # fc2 and fc3 meet with no activation between them
    ref = torch.autograd.grad(m(x).pow(2).sum(), list(m.parameters()))
    out = torch.autograd.grad(c(x).pow(2).sum(), list(m.parameters()))
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_training_a_compiled_module_matches_eager_training():
    torch.manual_seed(0)
    m1, m2 = MLP(), MLP()
    m2.load_state_dict(m1.state_dict())
    c = tcomp.compile(m2)
    opt1 = torch.optim.SGD(m1.parameters(), lr=0.1)
    opt2 = torch.optim.SGD(c.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 16)
        for model, opt in ((m1, opt1), (c, opt2)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_decorator_on_class_and_function():
    @tcomp.compile
    class Net(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc = nn.Linear(d, 3)

        def forward(self, x):
            return self.fc(x).relu()

    net = Net(5)
    assert isinstance(net, tcomp.CompiledModule)
    x = torch.randn(2, 5)
    torch.testing.assert_close(net(x), net._orig_mod(x))

    @tcomp.compile(strict=True)
    def contract(a, b, scale=2.0):
        return torch.einsum("ij,jk->ik", a, b) * scale

    a, b = torch.randn(3, 4), torch.randn(4, 5)
    torch.testing.assert_close(contract(a, b), a @ b * 2.0)
    torch.testing.assert_close(contract(a, b, scale=3.0), a @ b * 3.0)  # a new value of a non-tensor argument


def test_torch_compile_backend_is_registered():
    m = MLP().eval()
    f = torch.compile(m, backend="tcomp")
    for b in (3, 5):
        x = torch.randn(b, 16)
        torch.testing.assert_close(f(x), m(x))


def test_the_backend_sees_the_models_parameters_as_its_weights():
    """Dynamo lifts parameters to graph inputs; the backend puts them back as the model's own tensors, so weight
    passes apply (two linears with nothing between fold into one product), training updates them, and a call after
    a parameter is replaced reads the new one."""
    from tcomp.dynamo_backend import tcomp_backend

    seen = []

    def spy(gm, example_inputs):
        seen.append(tcomp_backend(gm, example_inputs))
        return seen[-1]

    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(16, 32, bias=False), nn.Linear(32, 4)).eval()
    twin = nn.Sequential(nn.Linear(16, 32, bias=False), nn.Linear(32, 4)).eval()
    twin.load_state_dict(model.state_dict())
    f = torch.compile(model, backend=spy)
    x = torch.randn(8, 16)
    with torch.no_grad():  # inference: the product of the two weights is worth folding once
        torch.testing.assert_close(f(x), twin(x))
    assert "fold_0" in seen[0].tcomp_module.code
    model.train(), twin.train()
    opt, opt_twin = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(3):
        x = torch.randn(8, 16)
        for fn, o in ((f, opt), (twin, opt_twin)):
            o.zero_grad()
            fn(x).square().sum().backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)
    model[1].weight = nn.Parameter(torch.ones(4, 32))
    twin[1].weight = nn.Parameter(torch.ones(4, 32))
    torch.testing.assert_close(f(x), twin(x))
    torch._dynamo.reset()


def test_verify_names_the_pass_that_breaks_equality(monkeypatch):
    from tcomp import passes

    def corrupt(program, ctx):
        new = program.copy()
        for k, op in enumerate(new.ops):
            if isinstance(op, Network):
                new.ops[k] = op.replace(epilogue=op.epilogue[:-1])  # drop a bias add
                break
        return new, PassReport("corrupt", changed=True)

    real = passes.pipeline
    monkeypatch.setattr(passes, "pipeline", lambda: real() + [Pass("corrupt", corrupt)])
    with pytest.raises(tcomp.VerificationError, match="pass 'corrupt'"):
        tcomp.compile(MLP().eval(), torch.randn(4, 16), verify=True, strict=True)
    # without verify nothing checks, and with verify and only good passes it compiles
    tcomp.compile(MLP().eval(), torch.randn(4, 16), verify=True, strict=True, passes={"corrupt": False})


def test_bad_options_and_unavailable_passes_say_so():
    with pytest.raises(ValueError, match="kernels"):
        tcomp.compile(MLP(), kernels="cuda")
    with pytest.raises(ValueError, match="unknown pass"):
        tcomp.compile(MLP(), torch.randn(2, 16), passes=["no_such_pass"], strict=True)


def test_report_is_json_serialisable_and_explains():
    import json

    c = tcomp.compile(MLP().eval(), torch.randn(4, 16))
    d = json.loads(json.dumps(c.report.to_dict()))
    assert [p["name"] for p in d["passes"]] == ["cse", "algebraic", "select_through", "fuse_networks", "fold_bn",
                                                "conv_calls", "epilogue", "batch_siblings", "layout",
                                                "contraction_order", "triton_codegen"]
    assert d["flops_after_at_example"] <= d["flops_before_at_example"]
    text = c.explain()
    assert "fuse_networks" in text and "program MLP" in text


def test_runtime_failure_falls_back_to_eager(monkeypatch):
    m = MLP().eval()
    x = torch.randn(3, 16)
    c = tcomp.compile(m, x)

    def broken(*args):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(c._tcomp_artifacts[0], "runner", broken)
    with pytest.warns(tcomp.TcompWarning, match="simulated kernel failure"):
        out = c(x)
    torch.testing.assert_close(out, m(x))


def test_compiling_a_training_model_leaves_its_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tcomp.compile(model, torch.randn(2, 3, 8, 8), verify=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class NormalisedBranch(nn.Module):
    """A batch norm in training, then a branch on a value: compiled in pieces, the statistics passed to a piece."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x):
        h = self.norm(self.fc(x))
        if h.sum() > 0:
            return h * 2
        return h - 1


class SizedBranch(nn.Module):
    """A branch on a value after a reshape by the batch size: once Dynamo compiles the frame for dynamic shapes, it
    passes the batch size to the graph as an input of its own."""

    def __init__(self):
        super().__init__()
        self.fc, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x).reshape(x.shape[0], 2, 2).reshape(x.shape[0], 4)
        if h.sum() > 0:
            return self.fc2(h)
        return -h


def test_pieces_read_a_symbolic_batch_size_from_their_tensors():
    """The batch size Dynamo passes a piece as a value was guarded as one: every new batch compiled each piece
    again. Read from the tensor it sizes, one program per piece serves every batch."""
    torch.manual_seed(0)
    m = SizedBranch().eval()
    c = tcomp.compile(m)
    with torch.no_grad():
        for b in (4, 6, 8, 10, 12):
            x = torch.randn(b, 4).abs()
            torch.testing.assert_close(c(x), m(x))
    assert c.report.status == "compiled in pieces"
    assert [len(p._tcomp_artifacts) for p in c.report.pieces] == [1] * len(c.report.pieces)
    assert any(p._tcomp_artifacts[0].guard.dynamic for p in c.report.pieces)  # symbolic in the batch


def test_pieces_in_training_update_batch_norm_statistics_once_per_call():
    """Compiling a piece for a new shape runs it on its example; the running statistics Dynamo passes as inputs must
    not be updated by those runs (they were: an uneven last batch moved running_mean by 0.4)."""
    import copy

    torch.manual_seed(0)
    model = NormalisedBranch().train()
    twin = copy.deepcopy(model)
    compiled = tcomp.compile(model)
    for batch in (4, 4, 6, 6, 5):
        x = torch.randn(batch, 4)
        torch.testing.assert_close(compiled(x), twin(x))
        assert compiled.report.status == "compiled in pieces"
        assert int(model.norm.num_batches_tracked) == int(twin.norm.num_batches_tracked)
        torch.testing.assert_close(model.norm.running_mean, twin.norm.running_mean)
        torch.testing.assert_close(model.norm.running_var, twin.norm.running_var)
