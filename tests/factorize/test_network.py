"""FactorNetwork: the einsum definition, validation, parameter and FLOP counts."""
import pytest
import torch

from tcomp.approx.factorize import FactorNetwork


def _low_rank(o=5, r=2, i=3, trailing=()):
    torch.manual_seed(0)
    return FactorNetwork("svd", {"rank": r}, [torch.randn(o, r), torch.randn(r, i)], ["or", "ri"],
                         [("o",), ("i",), *trailing], {"o": o, "r": r, "i": i})


def test_dense_is_the_einsum_definition():
    net = _low_rank()
    u, v = net.factors
    torch.testing.assert_close(net.dense(), u @ v)
    assert net.equation == "or,ri->oi" and net.weight_shape == (5, 3) and net.num_params() == 16


def test_empty_groups_are_size_one_dimensions():
    net = _low_rank(trailing=[(), ()])
    assert net.weight_shape == (5, 3, 1, 1)
    torch.testing.assert_close(net.dense()[:, :, 0, 0], net.factors[0] @ net.factors[1])


def test_split_groups_are_row_major():
    a, b = torch.randn(2, 3), torch.randn(4, 5)
    net = FactorNetwork("kron", {}, [a, b], ["oi", "pj"], [("o", "p"), ("i", "j")], {"o": 2, "i": 3, "p": 4, "j": 5})
    torch.testing.assert_close(net.dense(), torch.kron(a, b))


def test_contraction_flops_takes_the_cheap_order():
    net = _low_rank(o=64, r=4, i=48)
    # x·Vᵀ then ·Uᵀ: 2·rows·(r·i + o·r), far below forming W (2·o·r·i) and applying it.
    assert net.contraction_flops(10) == 2 * 10 * (4 * 48 + 64 * 4)
    with pytest.raises(ValueError, match="rows"):
        net.contraction_flops(0)


@pytest.mark.parametrize("change, message", [
    (dict(factor_indices=["or"]), "2 factors but 1"),
    (dict(factor_indices=["oo", "ri"]), "distinct ASCII"),
    (dict(factor_indices=["o1", "ri"]), "distinct ASCII"),
    (dict(sizes={"o": 5, "r": 3, "i": 3}), "has shape"),
    (dict(sizes={"o": 5, "r": 2}), "no size"),
    (dict(weight_indices=[("o",), ("o",)]), "twice"),
    (dict(weight_indices=[("o",), ("x",)]), "no factor"),
])
def test_malformed_networks_are_rejected(change, message):
    net = _low_rank()
    fields = dict(method=net.method, params=net.params, factors=net.factors, factor_indices=net.factor_indices,
                  weight_indices=net.weight_indices, sizes=net.sizes) | change
    with pytest.raises(ValueError, match=message):
        FactorNetwork(**fields)
