"""Tucker (HOSVD, HOOI) and Tucker-2 of convolution weights."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import mode_singular_values, tucker, tucker2
from tcomp.approx.factorize.tucker import reconstruct


def relative_error(approx, exact):
    return float((approx - exact).norm() / exact.norm())


def tucker2_weight(o, c, k, rank_out, rank_in, seed=0):
    """A conv weight of multilinear rank (rank_out, rank_in) on its channel modes."""
    g = torch.Generator().manual_seed(seed)
    core = torch.randn(rank_out, rank_in, k, k, generator=g)
    return torch.einsum("sruv,os,cr->ocuv", core, torch.randn(o, rank_out, generator=g),
                        torch.randn(c, rank_in, generator=g))


CONV = torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(5))


def test_tucker2_is_exact_on_a_weight_of_that_rank():
    weight = tucker2_weight(24, 16, 3, 5, 4)
    net = tucker2(weight, 5, 4)
    assert relative_error(net.dense(), weight) < 1e-5
    assert net.factor_indices == ["cr", "rshw", "so"]
    assert [tuple(f.shape) for f in net.factors] == [(16, 4), (4, 5, 3, 3), (5, 24)]
    assert net.num_params() == 16 * 4 + 4 * 5 * 9 + 5 * 24


def test_tucker2_runs_as_three_convolutions():
    net = tucker2(CONV, 6, 5)
    p, core, q = net.factors
    x = torch.randn(2, 16, 7, 7)
    y = torch.nn.functional.conv2d(x, p.T[:, :, None, None])
    y = torch.nn.functional.conv2d(y, core.permute(1, 0, 2, 3), padding=1)
    y = torch.nn.functional.conv2d(y, q.T[:, :, None, None])
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, net.dense(), padding=1), atol=1e-4, rtol=1e-4)


def test_error_is_monotone_in_rank_and_in_hooi_sweeps():
    by_rank = [relative_error(tucker2(CONV, r, r).dense(), CONV) for r in range(1, 17, 3)]
    assert all(b <= a + 1e-6 for a, b in zip(by_rank, by_rank[1:]))
    by_sweeps = [relative_error(tucker2(CONV, 6, 4, hooi_iters=n).dense(), CONV) for n in (0, 1, 2, 5)]
    assert all(b <= a + 1e-6 for a, b in zip(by_sweeps, by_sweeps[1:]))
    assert by_sweeps[-1] < by_sweeps[0]


def test_hosvd_error_is_within_the_discarded_energy_bound():
    tensor = torch.randn(9, 8, 7, generator=torch.Generator().manual_seed(3)).double()
    ranks = [4, 3, 5]
    core, factors = tucker(tensor, ranks)
    squared = float(((reconstruct(core, factors) - tensor).norm()) ** 2)
    bound = sum(float((mode_singular_values(tensor, n)[r:] ** 2).sum()) for n, r in enumerate(ranks))
    assert squared <= bound * (1 + 1e-9)
    assert all(torch.allclose(f.T @ f, torch.eye(f.shape[1], dtype=f.dtype)) for f in factors)


def test_unfactored_modes_are_kept():
    core, factors = tucker(CONV, [None, 4, None, None])
    assert factors[0] is None and core.shape == (24, 4, 3, 3)


@pytest.mark.parametrize("call, message", [
    (lambda: tucker2(torch.randn(8, 8), 2, 2), r"\[o,c,kh,kw\]"),
    (lambda: tucker2(CONV, 25, 4), r"\[1, 24\]"),
    (lambda: tucker2(CONV, 4, 0), r"\[1, 16\]"),
    (lambda: tucker2(CONV, 4, 4, hooi_iters=-1), "hooi_iters"),
    (lambda: tucker(CONV, [2, 2]), "2 ranks for a 4-way"),
])
def test_invalid_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=30, deadline=None)
@given(o=st.integers(1, 10), c=st.integers(1, 10), k=st.integers(1, 3), rank_out=st.integers(0, 12),
       rank_in=st.integers(0, 12))
def test_any_shape_and_rank(o, c, k, rank_out, rank_in):
    weight = torch.randn(o, c, k, k, generator=torch.Generator().manual_seed(o * 7 + c))
    if not (1 <= rank_out <= o and 1 <= rank_in <= c):
        with pytest.raises(ValueError, match="rank of mode"):
            tucker2(weight, rank_out, rank_in)
        return
    net = tucker2(weight, rank_out, rank_in, hooi_iters=1)
    p, _, q = net.factors
    assert net.weight_shape == (o, c, k, k)
    torch.testing.assert_close(p.T @ p, torch.eye(rank_in), atol=1e-5, rtol=0)
    torch.testing.assert_close(q @ q.T, torch.eye(rank_out), atol=1e-5, rtol=0)
    if rank_out == o and rank_in == c:
        assert relative_error(net.dense(), weight) < 1e-5
