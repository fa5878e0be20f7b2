"""Low-rank factorizations: SVD, activation-aware SVD, AFM output projection, CUR."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import (CalibrationStats, activation_aware_svd, cur, output_projection,
                                    truncated_svd)


def relative_error(approx, exact):
    return float((approx - exact).norm() / exact.norm())


def low_rank_matrix(o, i, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(o, rank, generator=g) @ torch.randn(rank, i, generator=g)


def anisotropic_inputs(n, i, seed=1, mean=0.0):
    """Inputs whose scale varies 100× across features, in a random basis."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(i, i, generator=g))
    return (torch.randn(n, i, generator=g) * torch.logspace(-1, 1, i)) @ basis.T + mean


def activation_error(weight, approx, inputs):
    return float((inputs @ (approx - weight).T).norm() / (inputs @ weight.T).norm())


def stats_of(inputs):
    return CalibrationStats.from_inputs(inputs)


W = torch.randn(40, 32, generator=torch.Generator().manual_seed(7))
X = anisotropic_inputs(400, 32)


@pytest.mark.parametrize("method", ["svd", "asvd", "afm", "cur"])
def test_exact_on_a_low_rank_weight(method):
    weight, stats = low_rank_matrix(40, 32, 6), stats_of(X)
    if method == "svd":
        net = truncated_svd(weight, 6)
    elif method == "afm":
        net, bias = output_projection(weight, stats, 6)
        torch.testing.assert_close(bias, torch.zeros(40), atol=1e-4, rtol=0)
    else:
        net = {"asvd": activation_aware_svd, "cur": cur}[method](weight, stats, 6)
    assert net.method == method and net.params["rank"] == 6
    assert relative_error(net.dense(), weight) < 1e-5


@pytest.mark.parametrize("method", ["svd", "asvd", "afm", "cur"])
def test_error_is_non_increasing_in_rank(method):
    stats = stats_of(X)
    errors = []
    for rank in range(1, 33, 3):
        if method == "afm":
            net, bias = output_projection(W, stats, rank)
            errors.append(float((X @ net.dense().T + bias - X @ W.T).norm()))
        elif method == "svd":
            errors.append(relative_error(truncated_svd(W, rank).dense(), W))
        else:
            net = {"asvd": activation_aware_svd, "cur": cur}[method](W, stats, rank)
            errors.append(activation_error(W, net.dense(), X))
    slack = 1e-5 * max(errors)
    assert all(later <= earlier + slack for earlier, later in zip(errors, errors[1:])), errors


def test_svd_error_is_the_eckart_young_tail():
    s = torch.linalg.svdvals(W.double())
    for rank in (1, 10, 31):
        expected = float(s[rank:].norm() / s.norm())
        assert relative_error(truncated_svd(W, rank).dense(), W) == pytest.approx(expected, rel=1e-4)


WIDE = torch.randn(24, 48, generator=torch.Generator().manual_seed(8))  # fewer outputs than inputs


@pytest.mark.parametrize("weight", [W, WIDE], ids=["tall", "wide"])
def test_activation_aware_svd_beats_svd_on_activation_error_and_is_optimal(weight):
    inputs = anisotropic_inputs(400, weight.shape[1])
    stats = stats_of(inputs)
    for rank in (4, 12):
        asvd = activation_error(weight, activation_aware_svd(weight, stats, rank).dense(), inputs)
        svd = activation_error(weight, truncated_svd(weight, rank).dense(), inputs)
        assert asvd < 0.9 * svd
        # The optimum is the tail of the singular values of X·Wᵀ (Eckart-Young on the outputs).
        s = torch.linalg.svdvals((inputs @ weight.T).double())
        assert asvd == pytest.approx(float(s[rank:].norm() / s.norm()), rel=1e-3)


@pytest.mark.parametrize("weight", [W, WIDE], ids=["tall", "wide"])
def test_activation_aware_svd_handles_rank_deficient_covariance(weight):
    # 10 calibration rows and a dead feature: C has rank 10.
    inputs = anisotropic_inputs(10, weight.shape[1])
    inputs[:, 3] = 0
    stats = stats_of(inputs)
    assert torch.linalg.matrix_rank(stats.second_moment) == 10
    approx = activation_aware_svd(weight, stats, 8).dense()
    plain = truncated_svd(weight, 8).dense()
    assert torch.isfinite(approx).all()
    assert activation_error(weight, approx, inputs) <= activation_error(weight, plain, inputs)
    # The weight's action on directions the calibration never saw is projected, not zeroed.
    assert approx.norm() > 0.5 * plain.norm()
    # At rank 10 the calibration outputs are reproduced exactly.
    assert activation_error(weight, activation_aware_svd(weight, stats, 10).dense(), inputs) < 1e-5


def test_output_projection_beats_svd_on_output_error_with_bias_and_mean():
    inputs = anisotropic_inputs(400, 32, mean=2.0)
    bias = torch.randn(40, generator=torch.Generator().manual_seed(3))
    reference = inputs @ W.T + bias
    for rank in (4, 12):
        net, new_bias = output_projection(W, stats_of(inputs), rank, bias)
        afm = float((inputs @ net.dense().T + new_bias - reference).norm())
        svd = float((inputs @ truncated_svd(W, rank).dense().T + bias - reference).norm())
        asvd = float((inputs @ activation_aware_svd(W, stats_of(inputs), rank).dense().T + bias - reference).norm())
        assert afm < 0.9 * svd and afm <= asvd * (1 + 1e-6)


def test_cur_keeps_actual_rows_and_columns():
    net = cur(W, stats_of(X), 5)
    columns, _, rows = net.factors
    assert len(set(net.params["rows"])) == 5 and len(set(net.params["cols"])) == 5
    torch.testing.assert_close(columns, W[:, net.params["cols"]])
    torch.testing.assert_close(rows, W[net.params["rows"], :])


def test_pointwise_conv_weights():
    weight = low_rank_matrix(12, 9, 3)[:, :, None, None]
    stats = stats_of(torch.randn(50, 9))
    for net in (truncated_svd(weight, 3), activation_aware_svd(weight, stats, 3), cur(weight, stats, 3),
                output_projection(weight, stats, 3)[0]):
        assert net.weight_shape == (12, 9, 1, 1) and net.weight_indices[2:] == [(), ()]
        assert relative_error(net.dense(), weight) < 1e-5


def test_statistics_accumulate_batch_by_batch():
    streamed = CalibrationStats.empty(32)
    for batch in X.reshape(4, 10, 10, 32):
        streamed.update(batch)
    whole = stats_of(X)
    assert streamed.count == 400
    torch.testing.assert_close(streamed.covariance, whole.covariance)
    torch.testing.assert_close(whole.mean, X.double().mean(0))
    torch.testing.assert_close(whole.covariance, torch.cov(X.double().T, correction=0))


@pytest.mark.parametrize("call, message", [
    (lambda: truncated_svd(W, 0), "rank must be"),
    (lambda: truncated_svd(W, 33), r"\[1, 32\]"),
    (lambda: truncated_svd(W, 2.0), "rank must be"),
    (lambda: truncated_svd(torch.randn(4, 4, 3, 3), 2), "1x1 conv"),
    (lambda: truncated_svd(torch.randint(0, 3, (4, 4)), 2), "floating-point"),
    (lambda: activation_aware_svd(W, stats_of(torch.randn(5, 31)), 2), "31 features"),
    (lambda: cur(W, CalibrationStats.empty(32), 2), "empty"),
    (lambda: output_projection(W, stats_of(X), 2, torch.zeros(39)), "bias"),
    (lambda: CalibrationStats.empty(32).update(torch.randn(3, 31)), "32 features"),
])
def test_invalid_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=40, deadline=None)
@given(o=st.integers(1, 12), i=st.integers(1, 12), rank=st.integers(-2, 14), bf16=st.booleans())
def test_any_shape_and_rank(o, i, rank, bf16):
    weight = torch.randn(o, i, generator=torch.Generator().manual_seed(o * 13 + i))
    weight = weight.to(torch.bfloat16) if bf16 else weight
    if not 1 <= rank <= min(o, i):
        with pytest.raises(ValueError, match="rank must be"):
            truncated_svd(weight, rank)
        return
    stats = stats_of(torch.randn(20, i))
    for net in (truncated_svd(weight, rank), activation_aware_svd(weight, stats, rank), cur(weight, stats, rank)):
        assert net.weight_shape == (o, i) and net.dense().dtype == weight.dtype
        assert torch.isfinite(net.dense()).all()
        # At full rank every method is exact (in bf16 the factors' own rounding, amplified by CUR's inverses, is not).
        if rank == min(o, i) and not bf16:
            assert relative_error(net.dense(), weight) < 1e-5
