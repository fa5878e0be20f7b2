"""cse: identical deterministic ops on identical inputs become one (networks up to index names), random and
mutating programs are left alone, dead code goes; results equal eager on random expression DAGs."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, ops_of, pipeline, report_of

from tcomp.ir import Call, Network, Pointwise
from tcomp.passes import contraction_order, cse, fuse_networks

PASSES = [cse.PASS, fuse_networks.PASS, contraction_order.PASS]


class Duplicates(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.w = nn.Parameter(torch.randn(6, 6))

    def forward(self, x):
        a = self.fc(x) + self.fc(x)                                  # the same module on the same input
        b = torch.einsum("ij,jk->ik", x, self.w) * torch.einsum("ab,bc->ac", x, self.w)  # other index names
        c = F.gelu(a) - F.gelu(a)
        d = x.reshape(-1, 2, 3).sum(1) + x.reshape(-1, 2, 3).sum(1)
        unused = torch.exp(x) * 2.0                                  # noqa: F841 - dead code
        return a + b + c, d


def test_duplicates_are_merged_and_results_equal(use_passes):
    use_passes([cse.PASS])
    model = Duplicates().eval()
    x = torch.randn(4, 6)
    c = compiled(model, x)
    details = report_of(c, "cse").details
    assert details["merged"] >= 4 and details["removed"] >= 1
    fn_counts = [op.fn for op in ops_of(c, Pointwise)]
    assert fn_counts.count("gelu") == 1 and "exp" not in fn_counts
    linear = [n for n in ops_of(c, Network) if any(v.name == "fc.weight" for v in n.operands)]
    assert len(linear) == 1
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


class Random(nn.Module):
    def forward(self, x):
        a = F.dropout(x, 0.5, training=True) + F.dropout(x, 0.5, training=True)
        return a + torch.rand_like(x) + torch.rand_like(x)


def test_random_ops_are_not_merged(use_passes):
    use_passes([cse.PASS])
    x = torch.ones(64, 64)
    c = compiled(Random(), x)
    assert report_of(c, "cse").details["merged"] == 0
    assert len([op for op in ops_of(c, Call)]) == 4
    with torch.no_grad():
        out = c(x)
    assert out.std() > 0.1  # two independent masks and noises, not one doubled


class TrainingDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(x) - self.drop(x)


def test_a_module_in_training_mode_is_not_merged(use_passes):
    use_passes([cse.PASS])
    model = TrainingDropout().train()
    c = compiled(model, torch.ones(32, 32))
    assert report_of(c, "cse").details["merged"] == 0
    assert c(torch.ones(32, 32)).abs().sum() > 0


class Mutating(nn.Module):
    def forward(self, x):
        a = x + 1
        b = x + 1
        a.mul_(2)
        return a, b


def test_a_program_that_writes_in_place_is_left_alone(use_passes):
    use_passes([cse.PASS])
    model = Mutating()
    x = torch.randn(3)
    c = compiled(model, x)
    assert "writes in place" in report_of(c, "cse").notes[0]
    out, ref = c(x), model(x)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.parametrize("constants", [(0.0, -0.0), (1, 1.0), (True, 1)])
def test_constants_equal_under_python_equality_but_not_identical_are_distinct(constants):
    numbering = cse._Numbering()
    assert numbering.freeze(constants[0]) != numbering.freeze(constants[1])


_OPS = ("add", "mul", "relu", "linear", "tanh", "reshape")


class RandomDag(nn.Module):
    """A straight-line program over a pool of values built from (op, operand indices) steps; repeated steps are
    common subexpressions."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        pool = [x, x * 0.5]
        for op, i, j in self.steps:
            a, b = pool[i % len(pool)], pool[j % len(pool)]
            if op == "add":
                pool.append(a + b)
            elif op == "mul":
                pool.append(a * b)
            elif op == "relu":
                pool.append(F.relu(a))
            elif op == "tanh":
                pool.append(torch.tanh(a))
            elif op == "linear":
                pool.append(self.fc(a))
            else:
                pool.append(a.reshape(2, -1).reshape(-1, 4))
        return sum(pool[2:])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_OPS), st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=10)
       .map(lambda steps: steps + steps[: len(steps) // 2]))
def test_random_programs_with_repeats_equal_eager(steps):
    model = RandomDag(steps).eval()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(len(steps)))
    with pipeline(PASSES):
        c = compiled(model, x)
        assert_forward_equal(model, c, x)


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x), self.fc(x)


def test_two_equal_outputs_stay_two_tensors(use_passes):
    use_passes([cse.PASS])
    model = TwoOutputs().eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        a, b = compiled(model, x)(x)
    assert a is not b and torch.equal(a, b)
