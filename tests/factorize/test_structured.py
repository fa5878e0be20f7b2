"""tcomp.approx.layers.Linear: trainable structured layers, their init, and projection from dense layers."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.approx.factorize.monarch import block_network
from tcomp.approx.layers import STRUCTURES, Linear, mup_std, near_sqrt_divisor

CASES = [("dense", {}), ("lowrank", {"rank": 4}), ("monarch", {}), ("monarch", {"blocks": (3, 4)}),
         ("btt", {"rank": 2}), ("btt", {"blocks": 4, "rank": 3}), ("kronecker", {"terms": 3}),
         ("kronecker", {"terms": 2, "a_shape": (6, 2)})]


@pytest.mark.parametrize("structure, params", CASES)
def test_forward_matches_the_dense_reconstruction(structure, params):
    torch.manual_seed(0)
    layer = Linear(32, 24, structure, **params)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, 32)
    weight = layer.to_network().dense()
    assert weight.shape == (24, 32)
    torch.testing.assert_close(layer(x), x @ weight.T + layer.bias, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("structure, params", CASES)
def test_trains_on_a_tiny_regression(structure, params):
    torch.manual_seed(0)
    layer = Linear(32, 24, structure, **params)
    target = Linear(32, 24, structure, **params)  # a reachable target of the same structure
    x = torch.randn(64, 32)
    with torch.no_grad():
        y = target(x)
    optimizer = torch.optim.Adam(layer.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(layer(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize("structure, params", CASES)
def test_from_dense_of_a_structured_matrix_is_exact(structure, params):
    torch.manual_seed(1)
    source = Linear(32, 24, structure, **params)
    dense = torch.nn.Linear(32, 24)
    with torch.no_grad():
        dense.weight.copy_(source.to_network().dense())
    layer = Linear.from_dense(dense, structure, **params)
    assert layer.params == source.params
    torch.testing.assert_close(layer.to_network().dense(), dense.weight, atol=1e-5, rtol=1e-5)
    x = torch.randn(7, 32)
    torch.testing.assert_close(layer(x), dense(x), atol=1e-5, rtol=1e-5)


def test_from_dense_is_the_best_projection():
    dense = torch.nn.Linear(36, 20, bias=False)
    layer = Linear.from_dense(dense, "btt", blocks=(4, 6), rank=2)
    assert layer.bias is None
    # Any other BTT of the same shape is further from the dense weight.
    other = Linear(36, 20, "btt", bias=False, blocks=(4, 6), rank=2)
    best = (layer.to_network().dense() - dense.weight).norm()
    assert best < (other.to_network().dense() - dense.weight).norm()


def test_init_is_the_per_factor_spectral_scale():
    torch.manual_seed(0)
    layer = Linear(1024, 512, "btt", blocks=(16, 32), rank=4)
    left, right = layer.factors
    # L maps b_in·r = 128 values to d_out/b_out = 32 outputs; R maps d_in/b_in = 32 inputs to b_out·r = 64.
    assert float(left.detach().std()) == pytest.approx(mup_std(128, 32), rel=0.05)
    assert float(right.detach().std()) == pytest.approx(mup_std(32, 64), rel=0.05)
    assert mup_std(128, 32) == pytest.approx(128 ** -0.5 * (32 / 128) ** 0.5)
    assert mup_std(32, 64) == pytest.approx(32 ** -0.5)
    assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("structure, params, expected", [
    ("dense", {}, 1.0),
    ("lowrank", {"rank": 64}, 0.5),  # V: 256 -> 64 scales by (64/256)^½; U: 64 -> 256 keeps the scale
    ("monarch", {}, 1.0),  # 16 blocks: R 16 -> 16, L 16 -> 16
    ("btt", {"blocks": 16, "rank": 2}, 0.5 ** 0.5),  # R 16 -> 32 keeps, L 32 -> 16 scales by (16/32)^½
    ("kronecker", {"terms": 4}, 0.5),  # A 16 -> 64 keeps, B 64 -> 16 scales by (16/64)^½
])
def test_output_scale_is_the_product_of_the_factor_scales(structure, params, expected):
    """Each factor (fan-in n, fan-out m) multiplies the RMS by min(1, (m/n)^½): the spectral-condition scale."""
    torch.manual_seed(0)
    layer = Linear(256, 256, structure, **params)
    with torch.no_grad():
        rms = float(layer(torch.randn(512, 256)).pow(2).mean().sqrt())
    assert rms == pytest.approx(expected, rel=0.15)


def test_default_blocks_are_near_square_roots():
    assert [near_sqrt_divisor(n) for n in (1, 12, 36, 768, 3072, 7)] == [1, 3, 6, 24, 48, 1]
    assert Linear(3072, 768, "monarch").params == {"blocks": (24, 48)}
    assert Linear(3072, 768, "kronecker", terms=2).params == {"terms": 2, "a_shape": (24, 48)}


def test_layer_reports_its_structure_and_checks_inputs():
    layer = Linear(12, 8, "lowrank", rank=2, bias=False)
    assert "structure='lowrank', rank=2, bias=False" in repr(layer)
    with pytest.raises(ValueError, match="12 features"):
        layer(torch.randn(3, 11))


@pytest.mark.parametrize("args, params, message", [
    ((12, 8, "sparse"), {}, "unknown structure"),
    ((12, 0, "dense"), {}, "positive integers"),
    ((12, 8, "lowrank"), {}, r"needs \['rank'\]"),
    ((12, 8, "lowrank"), {"rank": 9}, r"\[1, 8\]"),
    ((12, 8, "dense"), {"rank": 2}, "takes no parameters"),
    ((12, 8, "monarch"), {"rank": 2}, r"takes \['blocks'\]"),
    ((12, 8, "btt"), {"blocks": 5, "rank": 1}, "must divide"),
    ((12, 8, "kronecker"), {"terms": 2, "a_shape": (3, 3)}, "does not fit"),
])
def test_invalid_parameters_are_a_clear_error(args, params, message):
    with pytest.raises(ValueError, match=message):
        Linear(*args, **params)


@settings(max_examples=40, deadline=None)
@given(d_in=st.integers(1, 24), d_out=st.integers(1, 24), structure=st.sampled_from(STRUCTURES),
       b=st.integers(1, 6), rank=st.integers(1, 4))
def test_any_shape(d_in, d_out, structure, b, rank):
    params = {"dense": {}, "lowrank": {"rank": rank}, "monarch": {"blocks": b}, "btt": {"blocks": b, "rank": rank},
              "kronecker": {"terms": rank}}[structure]
    try:
        layer = Linear(d_in, d_out, structure, **params)
    except ValueError:
        if structure == "lowrank":
            assert rank > min(d_in, d_out)
        elif structure in ("monarch", "btt"):
            assert d_in % b or d_out % b or rank > min(d_in // b, d_out // b)
        elif structure == "kronecker":
            a, i = near_sqrt_divisor(d_out), near_sqrt_divisor(d_in)
            assert rank > min(a * i, (d_out // a) * (d_in // i))
        else:
            raise
        return
    x = torch.randn(4, d_in)
    torch.testing.assert_close(layer(x), x @ layer.to_network().dense().T + layer.bias, atol=1e-5, rtol=1e-5)


def test_to_network_shares_the_parameters():
    layer = Linear(16, 16, "btt", blocks=4, rank=2)
    network = layer.to_network()
    assert network.factors[0] is layer.factors[0]
    expected = block_network("btt", layer.params, *layer.factors)
    assert network.factor_indices == expected.factor_indices and network.sizes == expected.sizes
