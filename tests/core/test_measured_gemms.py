"""Small GEMMs whose speed the roofline model cannot tell apart (orientation, transposed operands) are measured
(tcomp.cost.gemm), and a measurement changes the planner's choice only where it differs significantly."""
import math

import pytest
import torch

import tcomp
import tcomp.contract.plan as plan_module
from tcomp.contract import search
from tcomp.cost.gemm import SIGNIFICANT, _operand
from tcomp.ir import Network


class TreeNode(torch.nn.Module):
    """A tree tensor network's node: two children's vectors joined by a 3-index core (batch 5, bond 47), the shape
    that ran 2.2x slower than eager when planned as a (47 x 2209) @ (2209 x 5) product."""

    def __init__(self):
        super().__init__()
        self.core = torch.nn.Parameter(torch.randn(47, 47, 47) / 47)

    def forward(self, left, right):
        return torch.einsum("nl,ni,lih->nh", left, right, self.core)


def _gemms(compiled) -> list:
    net = next(op for op in compiled.program.ops if isinstance(op, Network))
    return [s for s in net.plan.steps if s.kind == "gemm"]


@pytest.fixture
def fresh_plans(monkeypatch):
    monkeypatch.delenv("TCOMP_CALIBRATION", raising=False)
    monkeypatch.setattr(search, "_PLANS", type(search._PLANS)())  # no plan remembered from another test


def _compile():
    return tcomp.compile(TreeNode(), (torch.randn(5, 47), torch.randn(5, 47)), strict=True, backend="eager")


def test_a_gemm_measured_much_slower_in_one_orientation_is_planned_in_the_other(monkeypatch, fresh_plans):
    # a fake machine whose GEMMs with fewer output rows than columns are 100x slower (the model alone plans the
    # 5 x 2209 @ 2209 x 47 product)
    monkeypatch.setattr(plan_module, "gemm_seconds", lambda dtype, b, m, k, n, ta, tb: 1e-3 if m < n else 1e-5)
    steps = _gemms(_compile())
    assert steps
    sizes = {"n": 5, "l": 47, "i": 47, "h": 47}
    for s in steps:
        rows, cols = (math.prod(sizes[i] for i in g) for g in (s.m, s.n))
        assert rows >= cols, s


def test_measurements_within_the_noise_leave_the_models_plan(monkeypatch, fresh_plans):
    monkeypatch.setattr(plan_module, "gemm_seconds", lambda *shape: 1e-4)
    measured = [(s.lhs, s.rhs, s.m, s.k, s.n) for s in _gemms(_compile())]
    monkeypatch.setattr(search, "_PLANS", type(search._PLANS)())
    monkeypatch.setattr(plan_module, "gemm_seconds", lambda *shape: pytest.fail("measured where it need not"))
    monkeypatch.setattr(plan_module, "MEASURED_BELOW_S", 0.0)  # the model alone
    assert [(s.lhs, s.rhs, s.m, s.k, s.n) for s in _gemms(_compile())] == measured
    assert SIGNIFICANT > 1.2  # noise on a shared machine is about ±25%: below it, nothing changes


def test_the_measured_operands_have_the_layouts_asked_for():
    g = torch.Generator()
    a = _operand(torch.float32, 0, 5, 7, transposed=True, generator=g)
    assert a.shape == (5, 7) and a.stride() == (1, 5)
    b = _operand(torch.float64, 3, 5, 7, transposed=False, generator=g)
    assert b.shape == (3, 5, 7) and b.stride() == (35, 7, 1) and b.dtype == torch.float64


def test_measuring_leaves_the_callers_random_stream_alone():
    from tcomp.cost.gemm import gemm_seconds

    torch.manual_seed(3)
    gemm_seconds(torch.float32, 0, 3, 11, 17, True, False)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_the_fast_orientation_computes_the_same_function(fresh_plans):
    model = TreeNode()
    left, right = torch.randn(5, 47), torch.randn(5, 47)
    compiled = tcomp.compile(model, (left, right), strict=True, backend="eager")
    for b in (5, 3, 9):
        x, y = torch.randn(b, 47), torch.randn(b, 47)
        torch.testing.assert_close(compiled(x, y), model(x, y), rtol=1e-5, atol=1e-5)
