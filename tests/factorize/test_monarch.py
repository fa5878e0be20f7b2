"""Monarch and Block Tensor-Train projections."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import btt, monarch
from tcomp.approx.factorize.monarch import block_network


def relative_error(approx, exact):
    return float((approx - exact).norm() / exact.norm())


def random_btt(d_out, d_in, b_out, b_in, rank, seed=0):
    """A weight that is exactly BTT of this rank, built from random factors through the einsum definition."""
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(b_out, d_out // b_out, b_in, rank, generator=g)
    right = torch.randn(b_in, b_out, rank, d_in // b_in, generator=g)
    return block_network("btt", {}, left, right).dense()


def block_tail_error(weight, b_out, b_in, rank):
    """The Frobenius error of the best per-block rank-r approximation, block by block (the blocks W[:, j, i1, :])."""
    d_out, d_in = weight.shape
    grid = weight.double().reshape(d_out // b_out, b_out, b_in, d_in // b_in)
    squared = sum(float((torch.linalg.svdvals(grid[:, j, i, :])[rank:] ** 2).sum())
                  for j in range(b_out) for i in range(b_in))
    return squared ** 0.5 / float(weight.double().norm())


@pytest.mark.parametrize("d_out, d_in, blocks, rank", [(24, 36, 4, 1), (24, 36, (6, 3), 2), (32, 32, 4, 3)])
def test_exact_on_structured_weights(d_out, d_in, blocks, rank):
    pair = (blocks, blocks) if isinstance(blocks, int) else blocks
    weight = random_btt(d_out, d_in, *pair, rank)
    net = btt(weight, blocks, rank) if rank > 1 else monarch(weight, blocks)
    assert relative_error(net.dense(), weight) < 1e-5
    assert net.num_params() == rank * (pair[0] * d_in + pair[1] * d_out)


def test_monarch_is_btt_of_rank_one():
    weight = torch.randn(24, 36)
    torch.testing.assert_close(monarch(weight, (4, 6)).dense(), btt(weight, (4, 6), 1).dense())
    assert monarch(weight, (4, 6)).factor_indices == ["joi", "ijk"]


def test_projection_is_the_per_block_optimum_and_monotone_in_rank():
    weight = torch.randn(24, 36, generator=torch.Generator().manual_seed(1))
    errors = []
    for rank in range(1, 7):
        error = relative_error(btt(weight, (4, 6), rank).dense(), weight)
        assert error == pytest.approx(block_tail_error(weight, 4, 6, rank), rel=1e-4, abs=1e-6)
        errors.append(error)
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-5  # rank 6 = the smaller block side: exact


def test_one_block_is_a_truncated_svd():
    weight = torch.randn(10, 14)
    s = torch.linalg.svdvals(weight.double())
    assert relative_error(btt(weight, 1, 3).dense(), weight) == pytest.approx(float(s[3:].norm() / s.norm()),
                                                                              rel=1e-4)


def test_pointwise_conv_weight():
    weight = random_btt(16, 12, 4, 3, 1)[:, :, None, None]
    net = monarch(weight, (4, 3))
    assert net.weight_shape == (16, 12, 1, 1) and relative_error(net.dense(), weight) < 1e-5


@pytest.mark.parametrize("call, message", [
    (lambda w: monarch(w, 5), "must divide d_out=24"),
    (lambda w: monarch(w, (4, 7)), "d_in=36"),
    (lambda w: monarch(w, 0), "positive int"),
    (lambda w: monarch(w, (2, 2, 2)), "pair"),
    (lambda w: btt(w, 4, 0), r"rank must be an integer in \[1, 6\]"),
    (lambda w: btt(w, 4, 7), "6x9 block"),
])
def test_invalid_parameters_are_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(24, 36))


@settings(max_examples=40, deadline=None)
@given(d_out=st.integers(1, 24), d_in=st.integers(1, 24), b_out=st.integers(1, 8), b_in=st.integers(1, 8),
       rank=st.integers(1, 4))
def test_any_shape_and_block_count(d_out, d_in, b_out, b_in, rank):
    weight = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(d_out * 31 + d_in))
    if d_out % b_out or d_in % b_in:
        with pytest.raises(ValueError, match="must divide"):
            btt(weight, (b_out, b_in), rank)
        return
    if rank > min(d_out // b_out, d_in // b_in):
        with pytest.raises(ValueError, match="rank must be"):
            btt(weight, (b_out, b_in), rank)
        return
    net = btt(weight, (b_out, b_in), rank)
    assert net.weight_shape == (d_out, d_in)
    assert relative_error(net.dense(), weight) == pytest.approx(block_tail_error(weight, b_out, b_in, rank),
                                                                rel=1e-3, abs=1e-5)
