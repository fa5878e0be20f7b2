"""rematerialize_module: gradients equal eager's under a budget; memory measured; the joint graph coarsened."""
import copy

import pytest
import torch
from torch import nn
from torch._dynamo.backends.debugging import boxed_nop
from torch._functorch.aot_autograd import aot_module_simplified

from tcomp.cost import MachineModel
from tcomp.passes.rematerialize.coarsen import COMPUTE, LOSS, MEMORY, SINK, TANGENTS, coarsen
from tcomp.remat import BudgetInfeasibleError, measure_peak_memory, rematerialize_module
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
        return (self.model(*args),)


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


def test_batch_norm_reading_running_statistics_stays_recomputable():
    joint, num_fwd = joint_graph_of(cnn(), (torch.randn(2, 8, 8, 8),))
    coarse = coarsen(joint, num_fwd, MachineModel(), 0)
    norms = [i for i, g in enumerate(coarse.groups)
             if any(m.target is torch.ops.aten._native_batch_norm_legit_functional.default for m in g.members)]
    assert norms and all(coarse.graph.nodes[i].get("recomputable", True) for i in norms)
    counters = [i for i, g in enumerate(coarse.groups)  # num_batches_tracked + 1 reads a mutated buffer
                if any(m.target is torch.ops.aten.add.Tensor and m.args[0].op == "placeholder" for m in g.members)]
    assert counters and not any(coarse.graph.nodes[i]["recomputable"] for i in counters)
