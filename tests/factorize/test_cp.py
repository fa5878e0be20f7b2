"""CP-ALS with the term-norm safeguard."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize import cp, cp_als


def outer(*vectors):
    return torch.einsum("i,j,k->ijk", *vectors)


def border_rank_tensor():
    """a∘a∘b + a∘b∘a + b∘a∘a: rank 3, but rank-2 tensors come arbitrarily close (border rank 2), so the best
    rank-2 approximation does not exist and plain ALS drives two terms to infinite, cancelling norms."""
    a, b = torch.eye(2, dtype=torch.float64)
    return outer(a, a, b) + outer(a, b, a) + outer(b, a, a)


def test_exact_on_a_tensor_of_that_rank():
    g = torch.Generator().manual_seed(0)
    factors = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (6, 5, 4, 3)]
    tensor = torch.einsum("ar,br,cr,dr->abcd", *factors)
    result = cp_als(tensor, 3, iters=2000, tol=1e-14)
    assert result.relative_error < 1e-6
    rebuilt = torch.einsum("ar,br,cr,dr->abcd", *result.factors)
    assert float((rebuilt - tensor).norm() / tensor.norm()) == pytest.approx(result.relative_error, abs=1e-9)


def test_conv_network_matches_the_decomposition():
    g = torch.Generator().manual_seed(1)
    weight = torch.einsum("or,cr,hr,wr->ochw", *(torch.randn(n, 2, generator=g) for n in (8, 6, 3, 3)))
    net = cp(weight, 2, iters=1000, tol=1e-12)
    assert net.factor_indices == ["or", "cr", "hr", "wr"] and net.weight_shape == (8, 6, 3, 3)
    assert float((net.dense() - weight).norm() / weight.norm()) < 1e-5


def test_error_never_increases_over_sweeps():
    tensor = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    errors = [cp_als(tensor, 4, iters=n, tol=-1.0).relative_error for n in (1, 2, 5, 20, 80)]
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:])), errors


def test_safeguard_keeps_terms_bounded_where_plain_als_diverges():
    tensor = border_rank_tensor()
    radius = 2.0 * float(tensor.norm())
    plain = [cp_als(tensor, 2, max_norm=None, iters=n, tol=-1.0, init="random").term_norms.norm() for n in (200, 2000)]
    bounded = cp_als(tensor, 2, max_norm=2.0, iters=2000, tol=-1.0, init="random")
    assert plain[1] > 1.5 * plain[0] and plain[1] > 2 * radius  # plain ALS: norms keep growing
    assert float(bounded.term_norms.norm()) <= radius * (1 + 1e-9)  # safeguarded: within the bound
    assert bounded.relative_error < 0.1  # and still a useful fit


def test_bound_is_inactive_on_a_well_posed_tensor():
    tensor = torch.randn(6, 5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    free = cp_als(tensor, 3, max_norm=None, iters=300)
    bounded = cp_als(tensor, 3, max_norm=10.0, iters=300)
    assert bounded.relative_error == pytest.approx(free.relative_error, abs=1e-9)


@pytest.mark.parametrize("call, message", [
    (lambda: cp(torch.randn(4, 4), 2), r"\[o,c,kh,kw\]"),
    (lambda: cp_als(torch.randn(4), 2), "2 to 51 modes"),
    (lambda: cp_als(torch.randn(4, 4), 0), "rank"),
    (lambda: cp_als(torch.randn(4, 4), 2, max_norm=0.0), "max_norm"),
    (lambda: cp_als(torch.randn(4, 4), 2, iters=0), "iters"),
    (lambda: cp_als(torch.zeros(4, 4), 2), "all-zero"),
    (lambda: cp_als(torch.randn(4, 4), 2, init="qr"), "init"),
    (lambda: cp_als(torch.randn(4, 4), 2, init=[torch.randn(4, 2)]), "shapes"),
])
def test_invalid_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), rank=st.integers(1, 6),
       max_norm=st.sampled_from([None, 0.5, 2.0]))
def test_any_shape_and_rank(shape, rank, max_norm):
    tensor = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    result = cp_als(tensor, rank, max_norm=max_norm, iters=30)
    assert [tuple(f.shape) for f in result.factors] == [(n, rank) for n in shape]
    assert 0 <= result.relative_error <= 1 + 1e-6
    if max_norm is not None:
        assert float(result.term_norms.norm()) <= max_norm * float(tensor.norm()) * (1 + 1e-6)
