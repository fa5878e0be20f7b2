"""conv_calls: lone unstrided 1×1 convolution Networks run as ``F.conv2d`` (with their bias, also a folded batch
norm's), while 1×1 convolutions merged with a neighbour, reduced-precision ones and anything not shaped like a
convolution stay Networks — forward and gradients equal eager."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from rewrites_helpers import assert_forward_equal, assert_gradients_equal, compiled, ops_of, pipeline, report_of

from tcomp.ir import Call, Network
from tcomp.passes import contraction_order, conv_calls, fold_bn, fuse_networks

PASSES = [fuse_networks.PASS, fold_bn.PASS, conv_calls.PASS, contraction_order.PASS]


def conv_ops(c) -> list[Call]:
    return [op for op in ops_of(c, Call) if op.target is F.conv2d]


class Stack(nn.Module):
    """1×1 convolutions separated by ReLUs (nothing to merge), optionally with batch norms and biases."""

    def __init__(self, channels=(3, 8, 5), bias=True, bn=False):
        super().__init__()
        layers = []
        for a, b in zip(channels, channels[1:]):
            layers.append(nn.Conv2d(a, b, 1, bias=bias))
            if bn:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def test_lone_convolutions_become_conv2d_calls_with_their_bias():
    model, x = Stack().eval(), torch.randn(2, 3, 5, 6)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert len(conv_ops(c)) == 2 and not ops_of(c, Network)
        assert all(op.args[2] is not None for op in conv_ops(c))
        assert "2 lone 1×1 convolution" in report_of(c, "conv_calls").notes[0]
        assert "conv2d" in c.code
        assert_forward_equal(model, c, x)
        assert_gradients_equal(model, x)


def test_a_folded_batch_norm_becomes_the_convolution_bias():
    model, x = _randomise_bn(Stack(bias=False, bn=True)).eval(), torch.randn(2, 3, 4, 4)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert len(conv_ops(c)) == 2 and not any(type(op.module).__name__ == "BatchNorm2d"
                                                 for op in ops_of(c, Call) if op.kind == "module")
        assert_forward_equal(model, c, x)


def test_merged_convolutions_stay_networks():
    """Two 1×1 convolutions with nothing between them are one linear map: fuse_networks merges them."""
    model, x = nn.Sequential(nn.Conv2d(8, 64, 1, bias=False), nn.Conv2d(64, 8, 1)).eval(), torch.randn(2, 8, 3, 3)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert not conv_ops(c) and any(len(op.operands) == 3 for op in ops_of(c, Network))
        assert_forward_equal(model, c, x)


def test_a_linear_layer_is_not_a_convolution():
    model, x = nn.Sequential(nn.Linear(6, 5), nn.ReLU()).eval(), torch.randn(3, 6)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert not conv_ops(c) and not report_of(c, "conv_calls").changed


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(2, 6), min_size=2, max_size=4), st.booleans(), st.booleans(), st.integers(1, 3))
def test_random_stacks_equal_eager(channels, bias, bn, batch):
    """(A single channel lowers to a broadcast multiply, not a convolution-shaped Network: sizes from 2.)"""
    model = _randomise_bn(Stack(tuple(channels), bias=bias, bn=bn)).eval()
    x = torch.randn(batch, channels[0], 3, 2)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert len(conv_ops(c)) == len(channels) - 1
        assert_forward_equal(model, c, x)
        assert_forward_equal(model, c, torch.randn(batch + 2, channels[0], 3, 2))  # symbolic batch


def test_channels_last_input_and_scaled_output_equal_eager():
    """A channels-last input is read in place; a scale fuse_networks absorbed (not a bias epilogue) either stays a
    Network or becomes part of the weight — the result is eager's either way."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 4, 1)

        def forward(self, x):
            return self.conv(x) * 0.5 + 1.0

    model = Scaled().eval()
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    with pipeline(PASSES):
        c = compiled(model, x)
        assert_forward_equal(model, c, x)
        assert_gradients_equal(model, x)


def test_a_bias_that_is_not_a_relabelled_vector_is_reshaped():
    """fold_bn's bias is a cached function of the batch norm, not a relabelled [o] parameter: it is reshaped."""
    model = _randomise_bn(Stack((3, 5), bias=True, bn=True)).eval()
    x = torch.randn(2, 3, 4, 4)
    with pipeline(PASSES):
        c = compiled(model, x)
        (conv,) = conv_ops(c)
        assert conv.args[2] is not None and tuple(conv.args[2].shape) == (5,)
        assert_forward_equal(model, c, x)
