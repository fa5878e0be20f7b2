"""fold_bn: eval-mode batch norms folded into the preceding convolution or linear map — forward and gradients equal
eager, the folded parameters follow the original ones (optimizer steps, load_state_dict), training mode and the
cases that cannot fold are left alone."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, module_calls, ops_of, pipeline

from tcomp.ir import Call, Network
from tcomp.passes import contraction_order, fold_bn, fuse_networks
from tcomp.codegen.folded import CachedFunction

PASSES = [fold_bn.PASS, fuse_networks.PASS, contraction_order.PASS]


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters (a fresh batch norm is the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.affine:
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


class ConvBN(nn.Module):
    def __init__(self, conv_bias=False, affine=True, kernel=3, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, kernel, stride=stride, padding=kernel // 2, bias=conv_bias, groups=groups)
        self.bn = nn.BatchNorm2d(8, affine=affine, eps=1e-3)

    def forward(self, x):
        return self.bn(self.conv(x))


class ConvBNReLUBlock(nn.Module):
    """A residual block: conv-BN-ReLU, conv-BN, add, ReLU; and a 1×1 projection with its own BN."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.proj = nn.Conv2d(4, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.bn3(self.proj(x)))


class LinearBN(nn.Module):
    def __init__(self, bias=True):
        super().__init__()
        self.fc = nn.Linear(6, 5, bias=bias)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x):
        return self.bn(self.fc(x))


class Conv1dBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.conv(x))


class Functional(nn.Module):
    """``F.conv2d`` and ``F.batch_norm(training=False)`` on the module's own parameters and buffers."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 4, 3, 3) * 0.2)
        self.gamma = nn.Parameter(torch.randn(8))
        self.beta = nn.Parameter(torch.randn(8))
        self.register_buffer("mean", torch.randn(8))
        self.register_buffer("var", torch.rand(8) + 0.5)

    def forward(self, x):
        y = F.conv2d(x, self.weight, None, 1, 1)
        return F.batch_norm(y, self.mean, self.var, self.gamma, self.beta, training=False, eps=1e-4)


class ShapeDependent(ConvBN):
    """Control flow on a shape: torch.fx cannot trace it, torch.export captures aten.conv2d and aten.batch_norm."""

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if y.shape[0] > 1 else -y


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


CASES = {
    "conv2d": (lambda: ConvBN(), (2, 4, 9, 9)),
    "conv2d with bias, non-affine bn": (lambda: ConvBN(conv_bias=True, affine=False), (2, 4, 9, 9)),
    "strided grouped conv2d": (lambda: ConvBN(stride=2, groups=2), (2, 4, 9, 9)),
    "1x1 conv lowered to a network": (lambda: ConvBN(kernel=1), (2, 4, 5, 5)),
    "residual block": (lambda: ConvBNReLUBlock(), (2, 4, 8, 8)),
    "linear + batchnorm1d": (lambda: LinearBN(), (4, 6)),
    "linear without bias + batchnorm1d": (lambda: LinearBN(bias=False), (4, 6)),
    "conv1d + batchnorm1d": (lambda: Conv1dBN(), (2, 3, 7)),
    "functional": (lambda: Functional(), (2, 4, 6, 6)),
    "captured by torch.export": (lambda: ShapeDependent(), (2, 4, 9, 9)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folded_forward_and_gradients_equal_eager(case, use_passes):
    use_passes(PASSES)
    make, shape = CASES[case]
    model = _randomise_bn(make()).eval()
    x = _x(*shape)
    c = compiled(model, x)
    report = next(r for r in c.report.passes if r.name == "fold_bn")
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) or 1
    assert len(report.details["folded"]) == n_bn
    assert not module_calls(c, nn.modules.batchnorm._BatchNorm)
    assert not [op for op in ops_of(c, Call) if op.target in (F.batch_norm, torch.ops.aten.batch_norm.default)]
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


def test_folded_parameters_are_cached_functions_of_the_original_ones(use_passes):
    use_passes(PASSES)
    model = _randomise_bn(ConvBN(conv_bias=True)).eval()
    x = _x(2, 4, 9, 9)
    c = compiled(model, x)
    folds = [op for op in ops_of(c, Call) if op.kind == "module" and isinstance(op.module, CachedFunction)]
    assert {v.name for op in folds for v in op.inputs()} == {
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    assert set(c.state_dict()) == set(model.state_dict())
    calls = []
    fn = folds[0].module.fn
    folds[0].module.fn = lambda *t: calls.append(1) or fn(*t)
    with torch.no_grad():
        for _ in range(3):
            c(x)
    assert len(calls) == 1  # computed once, then cached


def test_optimizer_step_and_load_state_dict_reach_the_folded_weights(use_passes):
    use_passes(PASSES)
    model = _randomise_bn(ConvBNReLUBlock()).eval()
    reference = copy.deepcopy(model)
    x = _x(2, 4, 8, 8)
    c = compiled(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(2):
        for m, o in ((c, opt), (reference, opt_ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    assert_forward_equal(reference, c, x)
    state = {k: v + 0.25 if v.is_floating_point() else v for k, v in reference.state_dict().items()}
    c.load_state_dict(state)
    reference.load_state_dict(state)
    assert_forward_equal(reference, c, x)


def test_training_mode_keeps_batch_norm(use_passes):
    use_passes(PASSES)
    model = _randomise_bn(ConvBNReLUBlock()).train()
    x = _x(2, 4, 8, 8)
    c = compiled(model, x)
    reference = copy.deepcopy(model)  # after compiling: capture counts its shape-propagation calls as batches
    assert len(module_calls(c, nn.BatchNorm2d)) == 3
    out, ref = c(x), reference(x)
    assert torch.allclose(out, ref, atol=1e-5)
    for name, buf in reference.named_buffers():  # the running statistics were updated exactly like eager's
        assert torch.allclose(dict(model.named_buffers())[name].float(), buf.float(), atol=1e-6)


class NotFoldable(nn.Module):
    """A conv output read twice; a batch norm without running statistics; a batch norm after a ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=False)
        self.bn3 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv1(x)
        z = self.bn2(self.conv2(self.bn1(y) + y))
        return self.bn3(F.relu(z))


def test_unfoldable_batch_norms_stay(use_passes):
    use_passes(PASSES)
    model = _randomise_bn(NotFoldable()).eval()
    x = _x(2, 4, 6, 6)
    c = compiled(model, x)
    assert len(module_calls(c, nn.BatchNorm2d)) == 3
    assert not next(r for r in c.report.passes if r.name == "fold_bn").changed
    assert_forward_equal(model, c, x)


def test_folded_1x1_conv_stays_a_network(use_passes):
    use_passes(PASSES)
    model = _randomise_bn(ConvBN(kernel=1)).eval()
    c = compiled(model, _x(2, 4, 5, 5))
    (net,) = ops_of(c, Network)
    assert [e.fn for e in net.epilogue] == ["add"]


@settings(max_examples=25)
@given(channels=st.integers(1, 6), kernel=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       conv_bias=st.booleans(), affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.1]),
       seed=st.integers(0, 1000))
def test_random_conv_bn_pairs_equal_eager(channels, kernel, stride, conv_bias, affine, eps, seed):
    model = nn.Sequential(nn.Conv2d(3, channels, kernel, stride=stride, padding=kernel // 2, bias=conv_bias),
                          nn.BatchNorm2d(channels, affine=affine, eps=eps))
    torch.manual_seed(seed)
    model = _randomise_bn(model, seed).eval()
    x = _x(2, 3, 5, 5)
    with pipeline(PASSES):
        c = compiled(model, x)
    assert not module_calls(c, nn.BatchNorm2d)
    assert_forward_equal(model, c, x)
