"""lean_ops: the batch-norm backward without a second input gradient, the tied embedding's gradient scattered in
place; each equal to ATen's result, lighter in measured memory, and the rematerialized step still exact."""
import math
import warnings

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.fx.experimental.proxy_tensor import make_fx

from tcomp.passes.rematerialize.coarsen import MEMORY, coarsen
from tcomp.passes.rematerialize.lean_ops import batch_norm_backward, log_softmax_backward_, make_lean
from tcomp.remat.measure import measure_peak_memory
from tcomp.cost.model import MachineModel
from tcomp.passes.rematerialize import rematerialize_module
from tcomp.zoo.gpt2 import GPT2, GPT2Config

from test_training import assert_same_step, joint_graph_of, stem_net

aten = torch.ops.aten


def _statistics(x):
    dims = [0, *range(2, x.dim())]
    return x.mean(dims), torch.rsqrt(x.var(dims, unbiased=False) + 1e-5)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 40), channels=st.integers(1, 6), spatial=st.lists(st.integers(1, 5), max_size=3),
       channels_last=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_batch_norm_backward_equals_aten(batch, channels, spatial, channels_last, dtype):
    assume(batch * math.prod(spatial) > 1)  # training-mode batch norm needs two values per channel
    g = torch.Generator().manual_seed(batch * 31 + channels)
    shape = (batch, channels, *spatial)
    x = (torch.randn(shape, generator=g, dtype=dtype) * 3 + 2)
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    grad_out, weight = torch.randn(shape, generator=g, dtype=dtype), torch.randn(channels, generator=g, dtype=dtype)
    mean, invstd = _statistics(x)
    expected = torch.ops.aten.native_batch_norm_backward(grad_out, x, weight, None, None, mean, invstd, True, 1e-5,
                                                         [True, True, True])
    for ours, theirs in zip(batch_norm_backward(grad_out, x, weight, mean, invstd), expected):
        tolerance = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(ours, theirs, rtol=10 * tolerance, atol=tolerance * (1 + theirs.abs().max()))


def test_batch_norm_backward_holds_no_second_input_gradient():
    x = torch.randn(32, 16, 32, 32)  # 2 MB
    grad_out, weight = torch.randn_like(x), torch.randn(16)
    mean, invstd = _statistics(x)
    aten = measure_peak_memory(lambda: torch.ops.aten.native_batch_norm_backward(
        grad_out, x, weight, None, None, mean, invstd, True, 1e-5, [True, True, True]))
    ours = measure_peak_memory(lambda: batch_norm_backward(grad_out, x, weight, mean, invstd))
    assert aten >= 2 * x.nbytes  # ATen's CPU kernel: the input gradient twice
    assert ours < 1.2 * x.nbytes  # the input gradient and a 1/16 slice


def test_the_lean_batch_norm_records_the_layout_it_produces():
    def fn(grad_out, x, weight, mean, invstd):
        return torch.ops.aten.native_batch_norm_backward(grad_out, x, weight, None, None, mean, invstd, True, 1e-5,
                                                         [True, True, True])
    x = torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)  # laid out unlike its gradient
    inputs = (torch.randn(2, 3, 5, 5), x, torch.randn(3), *_statistics(x))
    graph = make_fx(fn, tracing_mode="fake")(*inputs)
    assert make_lean(graph) == 1
    lean = next(n for n in graph.graph.nodes if n.target is torch.ops.tcomp.batch_norm_backward.default)
    produced = graph(*inputs)
    assert [v.stride() for v in lean.meta["val"]] == [t.stride() for t in produced]
    assert [u.meta["val"].stride() for u in sorted(lean.users, key=lambda u: u.args[1])] == \
        [t.stride() for t in produced]


def tiny_gpt(vocab=512, width=32):
    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=vocab, context=64, width=width, num_layers=2, num_heads=2)).train()


def small_gpt():
    """Large enough (2 MB logits, 0.5 MB tied embedding) for the coarse model's 1 MB resolution."""
    return tiny_gpt(vocab=2048, width=64)


def test_tied_embedding_gradients_are_summed_in_place():
    model, inputs = tiny_gpt(), (torch.randint(0, 512, (2, 16)),)
    joint, num_fwd = joint_graph_of(model, inputs)
    before = coarsen(joint, num_fwd, MachineModel(), 0)
    assert make_lean(joint) == 1
    targets = [n.target for n in joint.graph.nodes]
    assert torch.ops.aten.index_put_.default in targets
    assert torch.ops.aten.embedding_dense_backward.default in targets  # the position embedding is not tied
    after = coarsen(joint, num_fwd, MachineModel(), 0)
    vocabulary_matrix = 512 * 32 * 4
    saved = sum(after.graph.nodes[i][MEMORY] for i in range(len(after.groups)))
    assert saved == sum(before.graph.nodes[i][MEMORY] for i in range(len(before.groups))) - 2 * vocabulary_matrix
    scatter = next(i for i, g in enumerate(after.groups)
                   if any(m.target is torch.ops.aten.index_put_.default for m in g.members))
    assert after.graph.nodes[scatter][MEMORY] == 0  # it writes into the head's gradient
    owner = next(i for i in after.graph.predecessors(scatter) if after.graph.nodes[i][MEMORY] == vocabulary_matrix)
    assert not after.graph.nodes[owner]["recomputable"]  # a recomputation would not see the scatter


def _partial_gradient_sum(read_twice: bool):
    def fn(x, y, grad, ids):
        head = torch.ops.aten.mm(x, y)
        dense = torch.ops.aten.embedding_dense_backward(grad, ids, 64, -1, False)
        total = torch.ops.aten.add(head, dense)
        return (total, head.sum()) if read_twice else (total,)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(64, 7, generator=g), torch.randn(7, 8, generator=g), torch.randn(3, 5, 8, generator=g),
              torch.randint(0, 64, (3, 5), generator=g))
    return make_fx(fn)(*inputs), inputs


def test_the_scatter_equals_the_out_of_place_sum():
    graph, inputs = _partial_gradient_sum(read_twice=False)
    expected = graph(*inputs)
    assert make_lean(graph) == 1
    torch.testing.assert_close(graph(*inputs), expected)


def test_a_sum_whose_term_is_read_elsewhere_stays_out_of_place():
    graph, _ = _partial_gradient_sum(read_twice=True)
    assert make_lean(graph) == 0  # scattering into the product would change what its other reader sees


def test_a_sum_into_a_broadcast_or_a_piece_of_a_split_stays_out_of_place():
    def broadcast(x, y, grad, ids):  # every row of the term is one memory location
        head = aten.expand(aten.sum(aten.mm(x, y)), [64, 8])
        return (aten.add(head, aten.embedding_dense_backward(grad, ids, 64, -1, False)),)

    def piece(x, y, grad, ids):  # the term shares its storage with the other half, read afterwards
        both = aten.mm(x, y)
        head, _ = aten.split(both, 64)
        return aten.add(head, aten.embedding_dense_backward(grad, ids, 64, -1, False)), aten.sum(both)

    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(128, 7, generator=g), torch.randn(7, 8, generator=g), torch.randn(3, 5, 8, generator=g),
              torch.randint(0, 64, (3, 5), generator=g))
    for fn in (broadcast, piece):
        graph = make_fx(fn)(*inputs)
        assert make_lean(graph) == 0, fn.__name__


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), data=st.data(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_log_softmax_backward_in_place_equals_aten(shape, data, dtype):
    dim = data.draw(st.integers(0, len(shape) - 1))
    g = torch.Generator().manual_seed(sum(shape) * 7 + dim)
    output = torch.log_softmax(torch.randn(shape, generator=g, dtype=dtype) * 4, dim)
    grad = torch.randn(shape, generator=g, dtype=dtype)
    expected = aten._log_softmax_backward_data(grad, output, dim, dtype)
    address = output.data_ptr()
    result = log_softmax_backward_(output, grad, dim)
    assert result.data_ptr() == address  # written over the log-probabilities
    tolerance = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(result, expected, rtol=tolerance, atol=tolerance)


def _log_softmax_step(reader: str):
    def fn(x, grad):
        output = aten._log_softmax(x, 1, False)
        total = aten.sum(output)  # a reader before the backward
        if reader == "ancestor":  # the backward depends on it, as nll_loss_backward on nll_loss_forward
            grad = aten.mul(grad, total)
        dx = aten._log_softmax_backward_data(grad, output, 1, torch.float32)
        return (dx, total, aten.sum(output)) if reader == "after" else (dx, total)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(8, 50, generator=g), torch.randn(8, 50, generator=g))
    return make_fx(fn)(*inputs), inputs


def test_the_in_place_log_softmax_backward_equals_the_out_of_place_one():
    graph, inputs = _log_softmax_step("ancestor")
    expected = graph(*inputs)
    assert make_lean(graph) == 1
    assert torch.ops.tcomp.log_softmax_backward_.default in [n.target for n in graph.graph.nodes]
    dx, total = graph(*inputs)
    torch.testing.assert_close(dx, expected[0], rtol=1e-5, atol=1e-6 * expected[0].abs().max().item())
    torch.testing.assert_close(total, expected[1])


@pytest.mark.parametrize("reader", ["beside", "after"])
def test_log_probabilities_a_reader_outside_the_backwards_ancestors_sees_are_not_overwritten(reader):
    # "beside" comes before the backward in the graph, but coarsening may group it with what follows the write
    graph, _ = _log_softmax_step(reader)
    assert make_lean(graph) == 0


def test_log_probabilities_returned_in_pieces_are_not_overwritten():
    def fn(x, grad):
        output = aten._log_softmax(x, 1, False)
        piece = aten.unbind(output)[0]  # its readers hide behind a getitem
        return aten._log_softmax_backward_data(grad, output, 1, torch.float32), piece
    graph = make_fx(fn)(torch.randn(8, 50), torch.randn(8, 50))
    assert make_lean(graph) == 0


class ReaderBesideTheLoss(torch.nn.Module):
    """y = log_softmax(...) also feeds a second term: the backward reads y in a pointwise chain that coarsening
    may join with operations after the log-softmax backward, which therefore must not overwrite y."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin0, self.lin1, self.lin2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 8)

    def forward(self, x, t):
        h = torch.tanh(self.lin0(x))
        y = torch.nn.functional.log_softmax(self.lin1(h), -1)
        return torch.nn.functional.nll_loss(y, t) + self.lin2(y * h).sum()


class NormAfterLogSoftmax(torch.nn.Module):
    """A batch norm reading log-probabilities: its backward (rewritten first) is one of their readers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.norm = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return self.norm(torch.nn.functional.log_softmax(self.conv(x), 1)).square().mean()


@pytest.mark.parametrize("build, inputs", [
    (ReaderBesideTheLoss, (torch.randn(8, 16), torch.randint(0, 32, (8,)))),
    (NormAfterLogSoftmax, (torch.randn(2, 3, 8, 8),)),
])
def test_steps_with_other_readers_of_the_log_probabilities_equal_eager(build, inputs):
    model = build().train()
    remat = rematerialize_module(model, inputs, 1.0, loss=lambda loss: loss, time_limit=5)
    assert_same_step(model, remat, inputs)


def test_the_in_place_log_softmax_backward_runs_under_compiled_autograd():
    import torch._dynamo.compiled_autograd as compiled_autograd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32))
    x, t = torch.randn(8, 16), torch.randint(0, 32, (8,))
    loss_model = _Loss(model, t)
    assert make_lean(joint_graph_of(loss_model, (x,))[0]) == 1  # the step below runs the in-place op
    remat = rematerialize_module(loss_model, (x,), 1.0, loss=lambda loss: loss, time_limit=5)
    reference = torch.autograd.grad(loss_model(x), list(model.parameters()))
    with compiled_autograd._enable(torch.compile(backend="aot_eager")):
        remat(x).backward()  # traced: the op decomposes into in-place ATen ops that functionalization handles
    for p, g in zip(model.parameters(), reference):
        torch.testing.assert_close(p.grad, g)


class _Loss(torch.nn.Module):
    def __init__(self, model, targets):
        super().__init__()
        self.model = model
        self.register_buffer("targets", targets)

    def forward(self, x):
        return torch.nn.functional.cross_entropy(self.model(x), self.targets)


class WithNextTokenLoss(torch.nn.Module):
    """A language model returning its next-token loss, as one given labels does."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        logits = self.model(ids)
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def test_a_loss_inside_the_model_takes_its_log_softmax_backward_in_place():
    model, inputs = WithNextTokenLoss(small_gpt()), (torch.randint(0, 2048, (4, 64)),)
    joint, num_fwd = joint_graph_of(model, inputs)
    before = coarsen(joint, num_fwd, MachineModel(), 0)
    assert make_lean(joint) == 2  # the tied embedding's gradient sum and the log-softmax backward
    after = coarsen(joint, num_fwd, MachineModel(), 0)
    groups = {m.target: i for i, g in enumerate(after.groups) for m in g.members}
    log_probabilities = 4 * 63 * 2048 * 4
    lean = groups[torch.ops.tcomp.log_softmax_backward_.default]
    assert after.graph.nodes[lean][MEMORY] == 0  # written over the log-probabilities
    for owner_or_reader in (aten._log_softmax.default, aten.nll_loss_forward.default):
        assert not after.graph.nodes[groups[owner_or_reader]]["recomputable"]
    old = next(i for i, g in enumerate(before.groups)
               if any(m.target is aten._log_softmax_backward_data.default for m in g.members))
    assert before.graph.nodes[old][MEMORY] == log_probabilities


@pytest.mark.parametrize("build, inputs, budget", [
    # the small GPT's smallest feasible budget moves with the token draw, from below 0.8 to 0.91 of eager's peak
    # (seeds 0-3; 0.8 was proven infeasible on some draws): this test is about equal steps, not the budget
    (small_gpt, (torch.randint(0, 2048, (4, 64)),), 0.92),
    (lambda: WithNextTokenLoss(small_gpt()), (torch.randint(0, 2048, (4, 64)),), 0.7),
    (stem_net, (torch.randn(8, 3, 64, 64),), 0.8),
])
def test_rematerialized_steps_with_lean_ops_equal_eager(build, inputs, budget):
    model = build()
    assert make_lean(joint_graph_of(model, inputs)[0]) > 0  # the step below runs rewritten operations
    with warnings.catch_warnings():  # the small GPT's sub-megabyte operations can leave it a few % over
        warnings.simplefilter("ignore")
        remat = rematerialize_module(model, inputs, budget, time_limit=10)
    assert remat.remat_report.measured_peak < remat.remat_report.eager_peak
    assert_same_step(model, remat, inputs)
