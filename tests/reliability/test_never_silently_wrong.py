"""The bad-input sweep's silent wrong results (issue 18), one test each: every one gave a wrong answer without a
warning before; each now computes what eager computes, raises eager's error, or runs eagerly with a warning."""
import pytest
import torch
import torch.nn as nn

import tcomp
from tcomp.passmanager import Pass, PassReport


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class ScaledByMax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) / x.abs().max().item()


def test_a_value_read_with_item_is_computed_on_every_call():
    model, x = ScaledByMax().eval(), torch.randn(3, 4)
    compiled = tcomp.compile(model, x, strict=True)
    for scale in (10.0, 0.1):
        x2 = torch.randn(3, 4) * scale
        _close(compiled(x2), model(x2))
    assert ".item()" in compiled.code or "item" in compiled.code


class CountsPositiveWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6))

    def forward(self, x):
        return x * (self.w > 0).sum().item() + x.mean().item()


def test_a_value_read_from_a_parameter_follows_the_parameter():
    """The batch does not move it (a parameter has none), so shape fitting alone would freeze it."""
    model, x = CountsPositiveWeights().eval(), torch.randn(2, 6)
    compiled = tcomp.compile(model, x, strict=True)
    positive = int((model.w > 0).sum())
    with torch.no_grad():
        model.w.fill_(-1.0 if positive else 1.0)  # another count of positive weights
    assert int((model.w > 0).sum()) != positive
    x2 = torch.randn(2, 6) * 3
    _close(compiled(x2), model(x2))


class ScaledByNonzeros(nn.Module):
    def forward(self, x, mask):
        return x * mask.nonzero().shape[0]


def test_a_data_dependent_size_used_as_a_value_is_computed_on_every_call():
    model = ScaledByNonzeros()
    x, mask = torch.randn(4, 3), torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0])  # the mask has no batch dimension
    compiled = tcomp.compile(model, (x, mask), strict=True)
    other = torch.tensor([1.0, 3.0, 2.0, 0.0, 5.0])
    _close(compiled(x, other), model(x, other))


class SumsPositives(nn.Module):
    def forward(self, x):
        return x[x > 0].sum() * x


def test_a_tensor_whose_shape_depends_on_the_data_runs_eagerly_and_says_why():
    model, x = SumsPositives(), torch.randn(3, 4)
    with pytest.warns(tcomp.TcompWarning, match="shape that depends on the data"):
        compiled = tcomp.compile(model, x)
    x2 = torch.randn(3, 4)
    _close(compiled(x2), model(x2))
    with pytest.raises(Exception, match="shape that depends on the data"):
        tcomp.compile(model, x, strict=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_an_input_of_another_dtype_gets_eagers_error(dtype):
    model = nn.Linear(4, 3).eval()
    compiled = tcomp.compile(model, torch.randn(2, 4))
    x = torch.randn(2, 4).to(dtype)
    with pytest.raises(RuntimeError) as eager:
        model(x)
    with pytest.warns(tcomp.TcompWarning, match="cannot compile"), pytest.raises(RuntimeError) as ours:
        compiled(x)
    assert str(ours.value) == str(eager.value)
    strict = tcomp.compile(model, torch.randn(2, 4), strict=True)
    with pytest.raises(RuntimeError, match="dtype"):
        strict(x)


class IntegerArithmetic(nn.Module):
    def forward(self, a):
        return (a * 2).sum(-1)


def test_integer_arithmetic_stays_integer_and_exact():
    model, a = IntegerArithmetic(), torch.tensor([[3298534883331, 0], [7, 9]])
    compiled = tcomp.compile(model, a, strict=True)
    out = compiled(a)
    assert out.dtype == torch.int64 and out.tolist() == model(a).tolist() == [6597069766662, 32]
    dynamo = torch.compile(model, backend="tcomp")
    assert dynamo(a).tolist() == [6597069766662, 32]


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def test_a_folded_batch_norm_follows_statistics_a_training_forward_changed():
    """A training-mode forward updates the running statistics in place without bumping their version: the folded
    weight sees the new statistics by their contents."""
    model, x = ConvBN().eval(), torch.randn(2, 3, 8, 8)
    compiled = tcomp.compile(model, x, strict=True)
    assert any(p.name == "fold_bn" and p.changed for p in compiled.report.passes)
    _close(compiled(x), model(x))
    model.train()
    model(torch.randn(8, 3, 8, 8) * 3 + 1)
    model.eval()
    _close(compiled(x), model(x))


def test_a_weight_updated_through_data_is_seen_by_its_folded_products():
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Linear(8, 3, bias=False)).eval()
    x = torch.randn(2, 4)
    compiled = tcomp.compile(model, x, strict=True)
    assert "fold" in compiled.code  # the two weights' product is cached
    compiled(x)
    model[0].weight.data.mul_(3)  # bumps no version counter
    _close(compiled(x), model(x))
    model[1].weight.data[0, 0] += 1.0  # one element
    _close(compiled(x), model(x))


def test_a_buffer_updated_through_data_is_seen_by_the_folded_batch_norm():
    model, x = ConvBN().eval(), torch.randn(2, 3, 8, 8)
    compiled = tcomp.compile(model, x, strict=True)
    compiled(x)
    model.bn.running_var.data.mul_(4)
    model.bn.weight.data[1] = 0.5
    _close(compiled(x), model(x))


@pytest.mark.parametrize("rearrange", ["flip rows", "flip columns", "swap two", "flip statistics"])
def test_weights_rearranged_through_data_are_seen(rearrange):
    """A permutation keeps the sum of the bytes: the fingerprint weighs each word by its position."""
    model, x = ConvBN().eval(), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model.bn.running_mean.normal_()
    compiled = tcomp.compile(model, x, strict=True)
    compiled(x)
    w = model.conv.weight.data
    if rearrange == "flip rows":
        w.copy_(w.flip(0))
    elif rearrange == "flip columns":
        w.copy_(w.flip(-1))
    elif rearrange == "swap two":
        w.view(-1)[[0, 5]] = w.view(-1)[[5, 0]]
    else:
        model.bn.running_mean.data.copy_(model.bn.running_mean.flip(0))
    _close(compiled(x), model(x))


def test_a_compiled_program_that_differs_from_eager_on_the_example_is_never_run(monkeypatch):
    """The last line of defence: after the passes, the compiled module is run on the example inputs and compared
    with eager; a wrong program falls back (with a warning) or, strict, raises."""
    from tcomp import passes

    def drop_a_bias(program, ctx):
        new = program.copy()
        for k, op in enumerate(new.ops):
            if getattr(op, "epilogue", None):
                new.ops[k] = op.replace(epilogue=op.epilogue[:-1])
                break
        return new, PassReport("drop_a_bias", changed=True)

    real = passes.pipeline
    monkeypatch.setattr(passes, "pipeline", lambda: real() + [Pass("drop_a_bias", drop_a_bias)])
    model, x = nn.Linear(4, 3).eval(), torch.randn(2, 4)
    with pytest.raises(tcomp.VerificationError, match="differ from eager's on the example"):
        tcomp.compile(model, x, strict=True)
    with pytest.warns(tcomp.TcompWarning, match="differ from eager's"):
        compiled = tcomp.compile(model, x)
    _close(compiled(x), model(x))


class KeywordTensors(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, **extra):
        out = self.fc(x)
        if "bias" in extra:
            out = out + extra["bias"]
        if "gain" in extra:
            out = out * extra["gain"]
        return out


def test_keyword_tensors_compile_and_their_names_are_guarded():
    """``forward(self, x, **kw)`` with keyword tensors compiles (it used to fail), and the same tensor passed under
    another keyword is another call, not the program compiled for the first."""
    model, x, t = KeywordTensors().eval(), torch.randn(2, 4), torch.randn(2, 4)
    compiled = tcomp.compile(model, strict=True)
    _close(compiled(x, bias=t), model(x, bias=t))
    _close(compiled(x, gain=t), model(x, gain=t))
    assert len(compiled._tcomp_artifacts) == 2
    _close(compiled(x, bias=t, gain=t), model(x, bias=t, gain=t))


class Bilinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 5))

    def forward(self, x, y):
        return torch.einsum("bi,ij,bj->b", x, self.w, y)


def test_a_call_that_broadcasts_one_input_is_another_signature_not_the_end_of_compilation(capsys):
    """Both inputs carry the batch B; a call with one of them of size 1 (eager broadcasts it) used to run the
    compiled program, fail inside it (printing an fx traceback), and turn the program off for every later call."""
    model = Bilinear().eval()
    compiled = tcomp.compile(model, (torch.randn(4, 3), torch.randn(4, 5)), strict=True)
    x, y = torch.randn(6, 3), torch.randn(1, 5)
    _close(compiled(x, y), model(x, y))
    x, y = torch.randn(7, 3), torch.randn(7, 5)
    _close(compiled(x, y), model(x, y))
    assert all(a.gm is not None for a in compiled._tcomp_artifacts) and len(compiled._tcomp_artifacts) == 2
    assert "Traceback" not in capsys.readouterr().err


class Squeezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).squeeze()


def test_a_batch_of_one_is_another_signature_a_squeeze_drops_it():
    """The program fitted at batch 8 served batch 1 and returned [1, 3] where eager's squeeze returns [3]."""
    model = Squeezed().eval()
    compiled = tcomp.compile(model, torch.randn(8, 4), strict=True)
    x = torch.randn(1, 4)
    out = compiled(x)
    assert out.shape == model(x).shape == (3,)
    _close(out, model(x))


class BranchesOnSizes(nn.Module):
    """Python branches on the sizes: torch.fx cannot trace it; torch.export records the branch as a guard."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        if 2 < x.shape[0] < x.shape[1]:
            return self.fc(x).sum(1) * 2
        return self.fc(x).sum(1)


@pytest.mark.parametrize("dynamic", [None, True])
def test_a_branch_on_the_sizes_is_guarded_when_they_are_symbolic(dynamic):
    """Exported with symbolic sizes, the program of one branch served sizes that take the other (B=2 or B >= S)."""
    model = BranchesOnSizes().eval()
    compiled = tcomp.compile(model, torch.randn(3, 12, 6), strict=True, backend="eager", dynamic=dynamic)
    for batch, length in ((5, 12), (2, 12), (20, 12), (4, 9), (9, 4), (3, 30)):
        x = torch.randn(batch, length, 6)
        _close(compiled(x), model(x))
    assert compiled.report.capture == "export" and compiled.report.batch_symbolic


class TruncatedMean(nn.Module):
    """The truncated length is 10 at every length from 10 up, and the length itself below."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 6))

    def forward(self, x):
        y = x[:, :10]
        return (y.sum(1) / y.shape[1]) @ self.w


class GatedByLength(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        causal = x.shape[1] > 6
        return self.fc(x) * causal + torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=causal)


@pytest.mark.parametrize("model", [TruncatedMean, GatedByLength], ids=lambda m: m.__name__)
@pytest.mark.parametrize("dynamic", [None, True])
def test_a_size_or_flag_that_changes_outside_the_lengths_probed_near_the_example(model, dynamic):
    """Fitted at lengths 12, 14 and 17 only, y.shape[1] was the constant 10 and x.shape[1] > 6 the constant True:
    at length 5 the program divided by 10 and took the wrong branch. Capture now probes from 2 to far above the
    example and the program serves only the lengths it was fitted on."""
    m = model().eval()
    compiled = tcomp.compile(m, torch.randn(3, 12, 6), strict=True, backend="eager", dynamic=dynamic)
    for batch, length in ((3, 13), (3, 5), (2, 20), (4, 3), (2, 200), (3, 12)):
        x = torch.randn(batch, length, 6)
        _close(compiled(x), m(x))


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, scale: float):
        return self.fc(x) * scale


def test_the_compiled_programs_kept_are_bounded_least_recently_used_dropped_first():
    from tcomp.api import MAX_PROGRAMS

    model, x = Scaled().eval(), torch.randn(2, 4)
    compiled = tcomp.compile(model, strict=True)
    for scale in range(MAX_PROGRAMS):
        compiled(x, float(scale))
    compiled(x, 0.0)  # used again: now the most recent
    compiled(x, 99.0)  # one program too many: drops scale=1.0, the least recently used
    assert len(compiled._tcomp_artifacts) == MAX_PROGRAMS
    assert any("dropped" in n and "scale=1.0" in n for n in compiled.report.notes)
    kept = {a.guard.specs[1][1] for a in compiled._tcomp_artifacts}
    assert 0.0 in kept and 99.0 in kept and 1.0 not in kept
    _close(compiled(x, 1.0), model(x, 1.0))  # compiled again, correctly


def test_choosing_the_backend_leaves_a_training_batch_norm_as_one_call_does(tmp_path, monkeypatch):
    """backend="auto" compiles with Inductor and times both backends on the example: each run moved the running
    statistics (14 updates for one call). A second compile of the same program takes the choice from the cache."""
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))  # nothing measured before
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    twin = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(8, 4)
    compiled = tcomp.compile(model, backend="auto")
    _close(compiled(x), twin(x))
    assert int(model[1].num_batches_tracked) == int(twin[1].num_batches_tracked) == 1
    _close(model[1].running_mean, twin[1].running_mean)
    assert any("per call on the example" in n for n in compiled.report.notes)
    again = tcomp.compile(model, backend="auto")
    _close(again(x), twin(x))
    assert any("as measured for this program before" in n for n in again.report.notes)
    assert int(model[1].num_batches_tracked) == int(twin[1].num_batches_tracked) == 2


class TakesADict(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, batch):
        return self.fc(batch["x"])


def test_tensors_inside_a_container_argument_are_never_frozen():
    """The tensors of a dict argument were traced as constants, and the same dict with a new tensor matched."""
    model = TakesADict().eval()
    batch = {"x": torch.randn(2, 4)}
    compiled = tcomp.compile(model)
    with pytest.warns(tcomp.TcompWarning, match="a guard cannot check"):
        _close(compiled(batch), model(batch))
    batch["x"] = torch.randn(2, 4)
    _close(compiled(batch), model(batch))
    with pytest.raises(tcomp.CaptureError, match="a guard cannot check"):
        tcomp.compile(model, strict=True)(batch)


def test_a_program_that_fails_part_way_leaves_the_statistics_as_one_eager_call_does():
    """The program updated batch norm's running statistics, then raised; the eager rerun updated them again."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)).train()
    twin = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4)).train()
    twin.load_state_dict(model.state_dict())
    compiled = tcomp.compile(model, torch.randn(8, 4), backend="eager")

    def fails_after_the_batch_norm(x):
        model[0](x)
        raise RuntimeError("a kernel failed")

    compiled._tcomp_artifacts[0].runner = fails_after_the_batch_norm
    x = torch.randn(8, 4)
    with pytest.warns(tcomp.TcompWarning, match="a kernel failed"):
        _close(compiled(x), twin(x))
    assert int(model[0].num_batches_tracked) == int(twin[0].num_batches_tracked) == 1
    _close(model[0].running_mean, twin[0].running_mean)


class Memory:
    def __init__(self):
        self.state = torch.zeros(4)


class ReadsAnObject(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, memory):
        return self.fc(x) + memory.state


def test_an_object_argument_holding_tensors_runs_eagerly():
    """An object is compared by identity: its tensors, traced as constants, went stale when it changed."""
    model, memory = ReadsAnObject().eval(), Memory()
    compiled = tcomp.compile(model)
    x = torch.randn(2, 4)
    with pytest.warns(tcomp.TcompWarning, match="memory \\(Memory\\)"):
        _close(compiled(x, memory), model(x, memory))
    memory.state = torch.full((4,), 5.0)
    _close(compiled(x, memory), model(x, memory))


def test_compiling_leaves_the_callers_random_streams_where_they_were():
    """Capture runs a cheap model on real tensors at several sizes: its dropout must not draw from the caller's
    generator (the numbers drawn after compiling would differ from those drawn without it)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    x = torch.randn(4, 8)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    tcomp.compile(model, (x,))
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_an_elementwise_op_is_not_fused_across_a_write_in_place():
    """``first + second`` with ``a.mul_(2)`` between the two contractions: fusing the add into the first one moved it
    after the write, which then read the doubled ``a`` (error 7 on outputs of scale 5; the check against eager
    compares no values for a program that writes in place)."""

    class WritesBetween(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 3, 3, 4, dtype=torch.float64))

        def forward(self, x):
            a, b = x[:, 0].clone(), x[:, 1].clone()
            first = torch.einsum("bi,bj,ijk->bk", a, b, self.w[0])
            a.mul_(2.0)
            return first + torch.einsum("bi,bj,ijk->bk", b, a, self.w[1])

    torch.manual_seed(0)
    model = WritesBetween()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    compiled = tcomp.compile(model, x)
    _close(compiled(x), model(x))


def test_contractions_are_not_merged_across_a_write_in_place():
    """``h = a @ w1; a.mul_(2); h @ w2``: merging the two products read ``a`` after the write (error 2.7)."""

    class WritesBetween(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
            self.w2 = nn.Parameter(torch.randn(4, 2, dtype=torch.float64))

        def forward(self, x):
            a = x.clone()
            h = a @ self.w1
            a.mul_(2.0)
            return h @ self.w2 + a.sum()

    torch.manual_seed(0)
    model = WritesBetween().eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    compiled = tcomp.compile(model, x)
    _close(compiled(x), model(x))
