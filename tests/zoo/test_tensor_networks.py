"""The tensor-network and structured layers compute the networks their papers define: each is checked against
the dense tensor it factorises, contracted in one einsum in float64."""
import math
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.zoo.monarch import MonarchLinear
from tcomp.zoo.mps import MPSClassifier, pixel_features
from tcomp.zoo.peps import PEPSClassifier, peps_equation
from tcomp.zoo.tt import TTLinear

FP64 = dict(rtol=1e-10, atol=1e-10)


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=8))
def test_pixel_features_are_unit_vectors_with_the_endpoints_of_the_paper(pixels):
    phi = pixel_features(torch.tensor(pixels, dtype=torch.float64))
    torch.testing.assert_close(phi.norm(dim=-1), torch.ones(len(pixels), dtype=torch.float64))
    endpoints = pixel_features(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(endpoints, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), **FP64)


@settings(max_examples=15)
@given(bond=st.integers(1, 4), label_site=st.integers(0, 8))
def test_mps_equals_its_dense_weight_tensor(bond, label_site):
    torch.manual_seed(0)
    model = MPSClassifier(image_size=3, bond_dim=bond, num_classes=4, label_site=label_site).double()
    # W[c, s_0 … s_8]: the whole chain contracted, with einsum letters A… for bonds, a… for sites, z for the class.
    cores = [*model.left_cores, model.label_core, *model.right_cores]
    terms = ["A"]
    for site in range(9):
        terms.append(string.ascii_uppercase[site] + string.ascii_lowercase[site] + "z" * (site == label_site)
                     + string.ascii_uppercase[site + 1])
    terms.append(string.ascii_uppercase[9])
    sites = string.ascii_lowercase[:9]
    weight = torch.einsum(",".join(terms) + "->z" + sites, model.left_end, *cores, model.right_end)
    images = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    phi = pixel_features(images.flatten(1))
    expected = torch.einsum("z" + sites + "," + ",".join("Y" + s for s in sites) + "->Yz", weight, *phi.unbind(1))
    torch.testing.assert_close(model(images), expected, **FP64)


def test_mps_rejects_a_label_site_off_the_chain():
    with pytest.raises(ValueError, match="label_site must be a site"):
        MPSClassifier(image_size=2, label_site=4)


@settings(max_examples=10)
@given(st.integers(1, 4), st.integers(1, 4))
def test_peps_equation_is_the_open_grid(height, width):
    equation, bond_ids = peps_equation(height, width)
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    assert len(terms) == 2 * height * width and output == "ab"
    assert sum(len(ids) for ids in bond_ids) == 2 * (height * (width - 1) + (height - 1) * width)
    counts = {letter: inputs.count(letter) for letter in set(inputs) - {","}}
    assert counts.pop("a") == height * width and counts.pop("b") == 1  # batch on every feature, one class index
    assert set(counts.values()) == {2}  # every physical and bond index joins exactly two operands
    for site, ids in enumerate(bond_ids):
        assert len(terms[2 * site + 1]) == 1 + len(ids) + (terms[2 * site + 1].count("b"))


def test_peps_equals_a_hand_written_2x2_contraction():
    torch.manual_seed(0)
    model = PEPSClassifier(image_size=2, bond_dim=3, num_classes=4).double()
    images = torch.rand(5, 1, 2, 2, dtype=torch.float64)
    p = pixel_features(images.flatten(1))
    # Sites 0 1 / 2 3; bonds h = 0–1, v = 0–2, w = 1–3, g = 2–3, each site's bonds in the order up, left, right,
    # down; the class index c sits on site 3, after the physical index.
    s0, s1, s2, s3 = model.sites
    expected = torch.einsum("bp,bq,br,bs,phv,qhw,rvg,scwg->bc",
                            p[:, 0], p[:, 1], p[:, 2], p[:, 3], s0, s1, s2, s3)
    torch.testing.assert_close(model(images), expected, **FP64)


def test_peps_logits_have_unit_scale_at_initialisation():
    torch.manual_seed(0)
    with torch.no_grad():
        logits = PEPSClassifier()(torch.rand(64, 1, 4, 4))
    assert 0.3 < logits.pow(2).mean().sqrt() < 3


def test_peps_rejects_a_grid_einsum_cannot_name():
    with pytest.raises(ValueError, match="einsum indices"):
        peps_equation(5, 5)


@settings(max_examples=25)
@given(modes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=4),
       rank=st.integers(1, 3), batch=st.integers(1, 3))
def test_tt_linear_equals_its_dense_matrix(modes, rank, batch):
    in_modes, out_modes = [m for m, _ in modes], [n for _, n in modes]
    torch.manual_seed(0)
    layer = TTLinear(in_modes, out_modes, rank).double()
    d = len(modes)
    ins, outs, ranks = string.ascii_lowercase[:d], string.ascii_lowercase[10:10 + d], string.ascii_uppercase
    equation = ",".join(ranks[k] + ins[k] + outs[k] + ranks[k + 1] for k in range(d)) + "->" + ins + outs
    dense = torch.einsum(equation, *layer.cores).reshape(math.prod(in_modes), math.prod(out_modes))
    x = torch.randn(batch, math.prod(in_modes), dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ dense + layer.bias, **FP64)


def test_tt_linear_rejects_inconsistent_modes_and_ranks():
    with pytest.raises(ValueError, match="equal length"):
        TTLinear((2, 2), (2, 2, 2), 2)
    with pytest.raises(ValueError, match="inner ranks"):
        TTLinear((2, 2, 2), (2, 2, 2), (2, 2, 2))


@settings(max_examples=25)
@given(nblocks=st.integers(1, 4), in_block=st.integers(1, 4), out_block=st.integers(1, 4), batch=st.integers(1, 3))
def test_monarch_linear_is_the_design_einsum(nblocks, in_block, out_block, batch):
    torch.manual_seed(0)
    layer = MonarchLinear(nblocks * in_block, nblocks * out_block, nblocks).double()
    x = torch.randn(batch, nblocks * in_block, dtype=torch.float64)
    expected = torch.einsum("bki,kji,jlk->blj", x.reshape(batch, nblocks, in_block), layer.R, layer.L)
    torch.testing.assert_close(layer(x), expected.reshape(batch, -1) + layer.bias, **FP64)


def test_monarch_matrix_has_rank_nblocks_squared():
    torch.manual_seed(0)
    layer = MonarchLinear(32, 64, 4).double()
    dense = layer(torch.eye(32, dtype=torch.float64)) - layer.bias
    assert torch.linalg.matrix_rank(dense.detach()) == 16


def test_monarch_linear_rejects_indivisible_sizes():
    with pytest.raises(ValueError, match="multiples of nblocks"):
        MonarchLinear(30, 64, 4)
