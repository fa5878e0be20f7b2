"""rematerialize_module: gradients equal eager's under a budget; memory measured; the joint graph coarsened."""
import copy

import pytest
import torch
from torch import nn
from torch._dynamo.backends.debugging import boxed_nop
from torch._functorch.aot_autograd import aot_module_simplified

from tcomp.cost.model import MachineModel
from tcomp.passes.rematerialize.coarsen import COMPUTE, LOSS, MEMORY, SINK, TANGENTS, WORKSPACE, coarsen, is_view
from tcomp.remat.measure import op_workspaces
from tcomp.remat.simulate import memory_profile
from tcomp.passes.rematerialize import rematerialize_module
from tcomp.remat import BudgetInfeasibleError, measure_peak_memory
from tcomp.zoo import get_entry


def mlp(depth=6, width=128):
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                         nn.LayerNorm(width)) for _ in range(depth)])


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        *[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()) for _ in range(6)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).train()


def stem_net(blocks=4):
    """A ResNet-like stem (7x7 stride-2 convolution, ReLU, max pooling with int64 indices) and conv-BN-ReLU
    blocks: the stem's backward is the tightest point of a tight budget."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
        *[nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
          for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).train()


def step(module, params, inputs, state=None):
    """Outputs, gradients and buffers after one step of sum-of-outputs from `state`."""
    if state is not None:
        params.load_state_dict(state)
    params.zero_grad(set_to_none=True)
    out = module(*inputs)
    out.sum().backward()
    return out.detach(), [p.grad.clone() for p in params.parameters()], [b.clone() for b in params.buffers()]


def assert_same_step(model, remat, inputs):
    state = copy.deepcopy(model.state_dict())
    eager = step(model, model, inputs, state)
    ours = step(remat, model, inputs, state)
    for a, b in zip(eager, ours):
        torch.testing.assert_close(a, b)  # fp32 tolerances: recomputation may only reorder accumulation


@pytest.mark.parametrize("build, inputs, budget", [
    (mlp, (torch.randn(256, 128),), 0.75),
    (cnn, (torch.randn(4, 8, 32, 32),), 0.8),
])
def test_gradients_equal_eager_under_a_budget(build, inputs, budget):
    model = build()
    remat = rematerialize_module(model, inputs, budget, time_limit=10)
    report = remat.remat_report
    assert report.recomputed > 0 and report.tdi > 0
    assert report.groups < report.operations
    assert report.measured_peak < report.eager_peak and report.predicted_peak <= report.budget
    assert report.budget == int(budget * report.eager_peak)
    assert_same_step(model, remat, inputs)


def test_zoo_model_gradients_equal_eager():
    entry = get_entry("mlp")  # at batch 1024 its activations outweigh its gradients
    model = entry.build().train()
    inputs = entry.example_inputs(batch=1024)
    remat = rematerialize_module(model, inputs, 0.9, time_limit=10)
    report = remat.remat_report
    assert report.recomputed > 0 and report.measured_peak <= report.budget
    assert_same_step(model, remat, inputs)


def test_nested_outputs_keep_their_structure_and_report_callback():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.a, self.b = mlp(depth=3), nn.Linear(128, 4), nn.Linear(128, 2)

        def forward(self, x):
            h = self.body(x)
            return {"a": self.a(h), "pair": (self.b(h), h)}

    model, x = TwoHeads(), torch.randn(64, 128)
    reports = []
    remat = rematerialize_module(model, (x,), 1.0, report=reports.append)
    assert reports == [remat.remat_report]
    out, expected = remat(x), model(x)
    assert set(out) == {"a", "pair"} and isinstance(out["pair"], tuple)
    torch.testing.assert_close(out["pair"][1], expected["pair"][1])


def test_a_call_with_other_shapes_is_refused():
    model = mlp(depth=2)
    remat = rematerialize_module(model, (torch.randn(32, 128),), 1.0)
    with pytest.raises(ValueError, match=r"rematerialized for inputs \[\(\(32, 128\), torch.float32\)\]"):
        remat(torch.randn(16, 128))


@pytest.mark.parametrize("budget, error, message", [
    (0.0, ValueError, r"in \(0, 1\]"), (1.5, ValueError, r"in \(0, 1\]"), (-5, ValueError, "positive"),
    ("half", TypeError, "fraction"), (True, TypeError, "fraction"),
])
def test_bad_budgets_are_rejected(budget, error, message):
    with pytest.raises(error, match=message):
        rematerialize_module(mlp(depth=1), (torch.randn(8, 128),), budget)


def test_an_impossible_budget_says_what_is_feasible():
    with pytest.raises(BudgetInfeasibleError, match="smallest budget found feasible") as error:
        rematerialize_module(mlp(depth=2), (torch.randn(64, 128),), 1000, time_limit=5)
    assert error.value.budget == 1000 and error.value.smallest_feasible > 1000


def test_measure_peak_memory_counts_live_allocations():
    def allocate():
        a = torch.empty(1000, 1000)
        b = torch.empty(2000, 1000)
        del a
        c = torch.empty(500, 1000)
        return b, c

    assert measure_peak_memory(allocate) == (1000 + 2000) * 1000 * 4
    assert measure_peak_memory(lambda: None) == 0
    with pytest.raises(ValueError, match="cpu and cuda"):
        measure_peak_memory(lambda: None, device="meta")


def joint_graph_of(model, inputs):
    captured = {}

    def keep(joint, _inputs, *, num_fwd_outputs, **_):
        captured.update(joint=joint, num_fwd_outputs=num_fwd_outputs)
        raise _Captured

    with pytest.raises(_Captured):
        aot_module_simplified(_Tuple(model), inputs, boxed_nop, boxed_nop, partition_fn=keep)
    return captured["joint"], captured["num_fwd_outputs"]


class _Captured(Exception):
    pass


class _Tuple(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        out = self.model(*args)
        return out if isinstance(out, tuple) else (out,)


def test_coarsening_joins_pointwise_chains_and_views():
    joint, num_fwd = joint_graph_of(mlp(depth=2), (torch.randn(16, 128),))
    coarse = coarsen(joint, num_fwd, MachineModel(), 0)
    group_of = {m.name: i for i, g in enumerate(coarse.groups) for m in g.members}
    assert group_of["gelu"] == group_of["addmm"]  # the pointwise op joined its producer
    assert coarse.graph.nodes[group_of["t"]][COMPUTE] == 0 and coarse.graph.nodes[group_of["t"]][MEMORY] == 0
    assert all(g.forward for g in coarse.groups[:coarse.forward_groups])
    assert not any(g.forward for g in coarse.groups[coarse.forward_groups:])
    position = {v: i for i, v in enumerate(coarse.order)}
    assert all(position[u] < position[v] for u, v in coarse.graph.edges)
    assert coarse.order[-1] == SINK and coarse.graph.in_degree(SINK) > 0
    assert coarse.order[coarse.forward_groups:coarse.forward_groups + 2] == [LOSS, TANGENTS]
    assert coarse.graph.out_degree(TANGENTS) > 0  # the backward reads the output gradients
    assert sum(len(g.members) for g in coarse.groups) == coarse.operations < len(joint.graph.nodes)


class _FeatureAndSine(nn.Module):
    """Returns (feature, head(sin(feature))): the sine is pointwise on a forward output."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(128, 512), nn.Linear(512, 8)

    def forward(self, x):
        feature = self.body(x)
        return torch.stack([feature.sum(), self.head(torch.sin(feature)).sum()]), feature


def test_the_storage_of_a_forward_output_is_not_recomputable_and_nothing_else_joins_it():
    # the caller holds the forward outputs to the end of the step: a recomputation for the sink would free nothing
    # in reality while the model counted the output as dead in between (GPT-2's logits: 206 MB under-predicted)
    joint, num_fwd = joint_graph_of(_FeatureAndSine(), (torch.randn(16, 128),))
    coarse = coarsen(joint, num_fwd, MachineModel(), 0)
    group_of = {m: i for i, g in enumerate(coarse.groups) for m in g.members}
    sin = next(m for m in group_of if m.target is torch.ops.aten.sin.default)
    feature, sine = group_of[sin.args[0]], group_of[sin]
    assert feature != sine  # the pointwise sine starts its own group instead of joining the held one
    assert not coarse.graph.nodes[feature]["recomputable"] and coarse.graph.nodes[sine]["recomputable"]


def test_batch_norm_reading_running_statistics_stays_recomputable():
    joint, num_fwd = joint_graph_of(cnn(), (torch.randn(2, 8, 8, 8),))
    coarse = coarsen(joint, num_fwd, MachineModel(), 0)
    norms = [i for i, g in enumerate(coarse.groups)
             if any(m.target is torch.ops.aten._native_batch_norm_legit_functional.default for m in g.members)]
    assert norms and all(coarse.graph.nodes[i].get("recomputable", True) for i in norms)
    counters = [i for i, g in enumerate(coarse.groups)  # num_batches_tracked + 1 reads a mutated buffer
                if any(m.target is torch.ops.aten.add.Tensor and m.args[0].op == "placeholder" for m in g.members)]
    assert counters and not any(coarse.graph.nodes[i]["recomputable"] for i in counters)


def test_a_stem_whose_backward_was_overcounted_fits_a_tight_budget():
    # Before: the max-pool backward and the ReLU backward formed one group that kept the incoming gradient and
    # the pooling's values and indices (one group) counted while the ReLU backward ran, and the convolution's
    # and batch norm backward's kernel temporaries were missed: budget 0.8 was infeasible (smallest found 0.95).
    model, inputs = stem_net(), (torch.randn(16, 3, 96, 96),)
    remat = rematerialize_module(model, inputs, 0.8, time_limit=10)
    report = remat.remat_report
    assert report.measured_peak <= report.budget and report.predicted_peak <= report.budget
    assert report.attempts == 1  # the coarse model is accurate enough to hit the target the first time
    # within 5% of eager's peak: alone this test measures 0–1%, but after the whole suite a kernel's scratch
    # buffer measured 2.6% off once (the allocator's and oneDNN's state depend on what ran before)
    assert abs(report.measured_peak - report.predicted_peak) < 0.05 * report.eager_peak
    assert_same_step(model, remat, inputs)


def test_coarse_model_without_recomputation_matches_eager_peak():
    model, inputs = stem_net(), (torch.randn(16, 3, 96, 96),)
    joint, num_fwd = joint_graph_of(model, inputs)
    coarse = coarsen(joint, num_fwd, MachineModel(), 0, op_workspaces(joint.graph))
    nodes = coarse.graph.nodes
    predicted = max(memory_profile(coarse.graph.predecessors, dict(nodes(data=MEMORY)), coarse.order,
                                   dict(nodes(data=WORKSPACE, default=0))))

    def eager_step():
        out = model(*inputs)
        out.sum().backward()  # TANGENTS counts a full-size output gradient: sum's is an expanded scalar
    model.zero_grad(set_to_none=True)
    measured = measure_peak_memory(eager_step)
    model.zero_grad(set_to_none=True)
    assert abs(predicted - measured) < 0.05 * measured


def test_max_pool_results_and_backward_pointwise_ops_get_their_own_groups():
    joint, num_fwd = joint_graph_of(stem_net(blocks=1), (torch.randn(2, 3, 32, 32),))
    coarse = coarsen(joint, num_fwd, MachineModel(), 0)
    group_of = {m: i for i, g in enumerate(coarse.groups) for m in g.members}
    pool = next(n for n in joint.graph.nodes if n.target is torch.ops.aten.max_pool2d_with_indices.default)
    values, indices = sorted((u for u in pool.users), key=lambda u: u.args[1])
    assert group_of[values] != group_of[indices]  # the values die before the indices the backward needs
    assert group_of[indices] == group_of[pool]  # the int64 indices are the main (largest) result
    assert coarse.graph.nodes[group_of[pool]][MEMORY] == indices.meta["val"].nbytes
    assert coarse.graph.nodes[group_of[pool]][WORKSPACE] == values.meta["val"].nbytes  # allocated by the op
    pool_backward = next(n for n in joint.graph.nodes
                         if n.target is torch.ops.aten.max_pool2d_with_indices_backward.default)
    relu_backward = next(u for u in pool_backward.users if u.target is torch.ops.aten.threshold_backward.default)
    assert group_of[relu_backward] != group_of[pool_backward]


def test_kernel_workspaces_are_measured():
    joint, _ = joint_graph_of(stem_net(blocks=1), (torch.randn(32, 3, 128, 128),))  # 2 MB per block tensor
    measured = {n.target: b for n, b in op_workspaces(joint.graph).items()}
    norm_backward = next(n for n in joint.graph.nodes if n.target is torch.ops.aten.native_batch_norm_backward.default)
    grad_input = norm_backward.meta["val"][0].nbytes
    # the CPU kernel allocates its input gradient twice (a second empty_like in its contiguous path)
    assert measured[torch.ops.aten.native_batch_norm_backward.default] >= grad_input
    assert torch.ops.aten.relu.default not in measured  # a pointwise kernel needs nothing beyond its output
    assert all(not is_view(n) for n in op_workspaces(joint.graph))


def test_unsafe_view_is_a_view():
    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4))

        def forward(self, x):
            return x @ self.w  # 3-d by 2-d: view, mm, then _unsafe_view of the product

    joint, _ = joint_graph_of(MatMul(), (torch.randn(2, 3, 8),))
    unsafe = [n for n in joint.graph.nodes if n.target is torch.ops.aten._unsafe_view.default]
    assert unsafe and all(is_view(n) for n in unsafe)


def test_the_compiled_backward_frees_an_output_gradient_after_its_last_reader():
    # the coarse model's TANGENTS node dies with its last reader: AOTAutograd's backward node does not hold the
    # gradients it is handed to its end (a plain autograd.Function, whose backward gets them as *args, does)
    n, k, wide, vocab = 256, 2048, 4096, 8192
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(k, wide), nn.ReLU(), nn.Linear(wide, 64))  # its backward allocates 34 MB late
    model, inputs = nn.Sequential(body, nn.Linear(64, vocab)), (torch.randn(n, k),)
    targets = torch.randint(0, vocab, (n,))
    module = rematerialize_module(model, inputs, 1.0, loss=lambda logits: nn.functional.cross_entropy(logits, targets))
    report = module.remat_report
    logits = n * vocab * 4
    gradients = sum(p.numel() * p.element_size() for p in model.parameters())
    assert report.measured_peak < gradients + 2 * logits  # what the end of the backward holds were it kept
    assert report.measured_peak <= report.predicted_peak * 1.01
