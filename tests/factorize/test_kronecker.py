"""Kronecker-sum approximation (Van Loan-Pitsianis)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import kronecker


def relative_error(approx, exact):
    return float((approx - exact).norm() / exact.norm())


def kronecker_sum(terms, a_shape, b_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sum(torch.kron(torch.randn(*a_shape, generator=g), torch.randn(*b_shape, generator=g))
               for _ in range(terms))


@pytest.mark.parametrize("terms", [1, 2, 5])
def test_exact_on_a_kronecker_sum(terms):
    weight = kronecker_sum(terms, (4, 6), (5, 3))
    net = kronecker(weight, terms, (4, 6))
    assert relative_error(net.dense(), weight) < 1e-5
    assert net.num_params() == terms * (4 * 6 + 5 * 3)


def test_error_is_the_tail_of_the_rearranged_spectrum_and_monotone():
    weight = torch.randn(20, 18, generator=torch.Generator().manual_seed(2))
    rearranged = weight.double().reshape(4, 5, 6, 3).permute(0, 2, 1, 3).reshape(24, 15)
    s = torch.linalg.svdvals(rearranged)
    errors = [relative_error(kronecker(weight, k, (4, 6)).dense(), weight) for k in range(1, 16)]
    for k, error in enumerate(errors, start=1):
        assert error == pytest.approx(float(s[k:].norm() / s.norm()), rel=1e-4, abs=1e-6)
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))


@pytest.mark.parametrize("terms, a_shape, message", [
    (1, (3, 6), "o dividing 20"), (1, (4, 7), "i dividing 18"), (1, (4,), "pair"), (1, 4, "pair"),
    (0, (4, 6), r"\[1, 15\]"), (16, (4, 6), r"\[1, 15\]"),
])
def test_invalid_parameters_are_a_clear_error(terms, a_shape, message):
    with pytest.raises(ValueError, match=message):
        kronecker(torch.randn(20, 18), terms, a_shape)


@settings(max_examples=40, deadline=None)
@given(d_out=st.integers(1, 16), d_in=st.integers(1, 16), o=st.integers(1, 8), i=st.integers(1, 8),
       terms=st.integers(1, 6))
def test_any_shape(d_out, d_in, o, i, terms):
    weight = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(d_out + 17 * d_in))
    if d_out % o or d_in % i or terms > min(o * i, (d_out // o) * (d_in // i)):
        with pytest.raises(ValueError):
            kronecker(weight, terms, (o, i))
        return
    net = kronecker(weight, terms, (o, i))
    assert net.weight_shape == (d_out, d_in)
    if terms == min(o * i, (d_out // o) * (d_in // i)):
        assert relative_error(net.dense(), weight) < 1e-5
