"""layout: channels-last convolution stacks — identical values and gradients, contiguous outputs, stride-dependent
code fed contiguous inputs, and a measured decision cached on disk."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import (assert_forward_equal, assert_gradients_equal, compiled, layout_pass, ops_of, pipeline,
                              report_of, simplify_passes)

from tcomp.ir import Call, Network, Program
from tcomp.passes import contraction_order, fold_bn, fuse_networks, layout
from tcomp.options import Options
from tcomp.passmanager import PassContext
from tcomp.codegen.folded import CachedFunction

CHANNELS_LAST = [fold_bn.PASS, layout_pass("channels_last"), fuse_networks.PASS, contraction_order.PASS]


class Bottleneck(nn.Module):
    """ResNet-50's block in small: 1×1 (a Network), 3×3, 1×1 (Networks), a strided projection, BN everywhere."""

    def __init__(self, c=8, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c // 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // 2)
        self.conv2 = nn.Conv2d(c // 2, c // 2, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c // 2)
        self.conv3 = nn.Conv2d(c // 2, 2 * c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * c)
        self.down = nn.Conv2d(c, 2 * c, 1, stride=stride, bias=False)
        self.bn_down = nn.BatchNorm2d(2 * c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.bn_down(self.down(x)))


class Net(nn.Module):
    def __init__(self, head=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Bottleneck()
        self.head = nn.Linear(16, 5) if head else None

    def forward(self, x):
        y = self.block(F.max_pool2d(F.relu(self.stem(x)), 2))
        return self.head(y.mean((2, 3))) if self.head is not None else y


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("head", [True, False])
def test_channels_last_values_and_gradients_equal_eager(head, use_passes):
    # every rewrite but conv_calls (which would run the 1×1 convolutions as conv2d): BN folded, ReLUs and the
    # residual in epilogues, the 1×1 convolutions as Networks reading channels-last values
    use_passes([p for p in simplify_passes("channels_last") if p.name != "conv_calls"])
    model = Net(head).eval()
    x = _x(2, 3, 12, 12)
    c = compiled(model, x)
    assert report_of(c, "layout").changed
    conversions = [op for op in ops_of(c, Call) if op.target == "contiguous"]
    assert conversions and conversions[0].args[0].name == "x"
    assert conversions[0].kwargs == {"memory_format": torch.channels_last}
    weights = [op for op in ops_of(c, Call) if op.kind == "module" and isinstance(op.module, CachedFunction)
               and "channels_last" in op.target]
    assert len(weights) == 2  # the two k×k convolutions; 1×1 weights are channels-last already
    reading_cl = [n for n in ops_of(c, Network) if any(v.stride_order == layout.CHANNELS_LAST for v in n.operands)]
    assert reading_cl  # the 1×1 convolutions read channels-last values, and plan GEMMs that copy nothing
    assert not any(s.copy_lhs or s.copy_rhs for n in reading_cl for s in n.plan.steps)
    with torch.no_grad():
        out = c(x)
    assert out.is_contiguous()  # as eager returns it
    assert_forward_equal(model, c, x)
    assert_gradients_equal(model, x)


@torch.fx.wrap
def flatten_nchw(x):
    """Code outside torch that depends on the memory layout (``view`` fails on a channels-last tensor)."""
    return x.view(x.shape[0], -1)


class StrideDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(flatten_nchw(y)), y.stride()


def test_stride_dependent_ops_get_contiguous_inputs(use_passes):
    use_passes(CHANNELS_LAST)
    model = StrideDependent().eval()
    x = _x(2, 3, 6, 6)
    c = compiled(model, x)
    back = [op for op in ops_of(c, Call) if op.target == "contiguous" and not op.kwargs]
    assert len(back) == 1  # one conversion back, shared by the wrapped function and .stride()
    with torch.no_grad():
        out, ref = c(x), model(x)
    assert torch.allclose(out[0], ref[0], atol=1e-5) and out[1] == ref[1]


class ReflectPad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        return self.conv(x)


def test_a_padding_mode_other_than_zeros_keeps_the_module_on_a_channels_last_input(use_passes):
    use_passes(CHANNELS_LAST)
    model = ReflectPad().eval()
    x = _x(2, 3, 7, 7)
    c = compiled(model, x)
    (conv,) = [op for op in ops_of(c, Call) if op.kind == "module"]
    assert conv.args[0].stride_order == layout.CHANNELS_LAST
    assert c(x).is_contiguous()
    assert_forward_equal(model, c, x)


def test_measured_decision_is_cached_on_disk(use_passes, tmp_path):
    use_passes([fold_bn.PASS, layout.PASS, fuse_networks.PASS, contraction_order.PASS])
    model = Net().eval()
    x = _x(2, 3, 12, 12)
    first = report_of(compiled(model, x), "layout")
    d = first.details
    assert d["measured_now"] and min(d["contiguous_s"], d["channels_last_s"]) > 0
    assert first.changed == (d["channels_last_s"] < d["contiguous_s"])
    assert Path(d["cache"]).is_relative_to(tmp_path) and len(json.loads(Path(d["cache"]).read_text())["entries"]) == 1
    again = report_of(compiled(model, x), "layout")
    assert not again.details["measured_now"] and again.changed == first.changed
    assert again.details["contiguous_s"] == d["contiguous_s"]


def test_measuring_a_training_program_leaves_no_trace(use_passes):
    use_passes([])
    model = Net().train()
    model.block.bn1 = nn.BatchNorm2d(4)  # a training-mode batch norm updates its running statistics when run
    x = _x(2, 3, 12, 12)
    program = compiled(model, x).program  # lowered, no pass run
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    _, report = layout.run(program, PassContext(example_inputs=(x,), training=True))
    assert report.details["measured_now"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state())


def test_contiguous_choice_and_models_without_convolutions_are_unchanged():
    ctx = PassContext(example_inputs=(), training=False)
    empty = Program("p", [], {}, [], None)
    for choice in ("contiguous", "channels_last"):
        program, report = layout.run(empty, dataclasses.replace(ctx, options=Options(layout=choice)))
        assert program is empty and not report.changed
    with pytest.raises(ValueError, match="channels_last"):
        layout.run(empty, dataclasses.replace(ctx, options=Options(layout="nhwc")))


class RandomConvStack(nn.Module):
    def __init__(self, specs):
        super().__init__()
        layers, c = [], 3
        for out, kernel, stride, groups in specs:
            groups = groups if c % groups == 0 else 1
            layers.append(nn.Conv2d(c, out * groups, kernel, stride=stride, padding=kernel // 2, groups=groups))
            c = out * groups
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for conv in self.layers:
            y = conv(x)
            x = F.relu(y + x) if y.shape == x.shape else torch.tanh(y)
        return x


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from([1, 3]), st.integers(1, 2), st.sampled_from([1, 2])),
                min_size=1, max_size=3))
def test_random_conv_stacks_equal_eager_channels_last(specs):
    model = RandomConvStack(specs).eval()
    x = _x(2, 3, 7, 7)
    kept_as_calls = any(m.kernel_size != (1, 1) or m.stride != (1, 1) or m.groups != 1 for m in model.layers)
    with pipeline(CHANNELS_LAST):
        c = compiled(model, x)
        assert report_of(c, "layout").changed == kept_as_calls  # unstrided 1×1 convolutions are Networks: they follow
        with torch.no_grad():
            out = c(x)
        assert out.is_contiguous()
        assert_forward_equal(model, c, x)
