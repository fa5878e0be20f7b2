"""The coupling tensor of 1 ⊗ 1 = 0 ⊕ 1 ⊕ 2 and the rotation equivariance of the tensor-product network."""
import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcomp.zoo import get_entry
from tcomp.zoo.equivariant import IRREP_SLICES, TensorProduct, coupling_1x1, irrep_rotation

FP64 = dict(rtol=1e-12, atol=1e-12)
quaternions = st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: sum(c * c for c in q) > 1e-2)


def rotation(q) -> torch.Tensor:
    """The rotation matrix of the (normalised) quaternion q = (w, x, y, z)."""
    w, x, y, z = (torch.tensor(q, dtype=torch.float64) / math.sqrt(sum(c * c for c in q))).tolist()
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float64)


def test_coupling_is_an_orthogonal_change_of_basis():
    c = coupling_1x1().reshape(9, 9)
    torch.testing.assert_close(c.T @ c, torch.eye(9, dtype=torch.float64), **FP64)


def test_coupling_blocks_are_trace_cross_product_and_symmetric_traceless_parts():
    c = coupling_1x1()
    torch.testing.assert_close(c[:, :, 0], torch.eye(3, dtype=torch.float64) / math.sqrt(3), **FP64)
    vectors = c[:, :, IRREP_SLICES[1]]
    torch.testing.assert_close(vectors, -vectors.transpose(0, 1), **FP64)
    x, y = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(torch.einsum("ijk,i,j->k", vectors, x, y) * math.sqrt(2), torch.linalg.cross(x, y),
                               **FP64)
    tensors = c[:, :, IRREP_SLICES[2]]
    torch.testing.assert_close(tensors, tensors.transpose(0, 1), **FP64)
    torch.testing.assert_close(torch.einsum("iik->k", tensors), torch.zeros(5, dtype=torch.float64), **FP64)


@given(quaternions)
def test_coupling_intertwines_rotations(q):
    r = rotation(q)
    c, d = coupling_1x1(), irrep_rotation(r)
    torch.testing.assert_close(torch.einsum("ijk,ai,bj->abk", c, r, r), torch.einsum("mk,ijm->ijk", d, c), **FP64)


@given(quaternions, quaternions)
def test_irrep_rotation_is_a_block_diagonal_orthogonal_representation(q1, q2):
    r1, r2 = rotation(q1), rotation(q2)
    d1 = irrep_rotation(r1)
    torch.testing.assert_close(d1 @ d1.T, torch.eye(9, dtype=torch.float64), **FP64)
    torch.testing.assert_close(irrep_rotation(r1 @ r2), d1 @ irrep_rotation(r2), **FP64)
    torch.testing.assert_close(d1[0, 0], torch.tensor(1.0, dtype=torch.float64), **FP64)
    torch.testing.assert_close(d1[IRREP_SLICES[1], IRREP_SLICES[1]], r1, **FP64)
    off_blocks = d1.clone()
    for block in IRREP_SLICES.values():
        off_blocks[block, block] = 0
    assert off_blocks.abs().max() < 1e-12


@functools.cache
def network_and_inputs():
    entry = get_entry("equivariant_tp")
    return entry.build(), entry.example_inputs(batch=4)


@settings(max_examples=10)
@given(quaternions)
def test_network_rotates_its_outputs_with_its_inputs(q):
    model, (x, y) = network_and_inputs()
    r = rotation(q).float()
    d = irrep_rotation(r.double()).float()
    with torch.no_grad():
        out, rotated = model(x, y), model(x @ r.T, y @ r.T)
    torch.testing.assert_close(rotated, out @ d.T, rtol=1e-4, atol=1e-4 * out.abs().max().item())


def test_network_is_not_a_function_of_invariants_only():
    """Equivariance is not met trivially: rotating the inputs changes the l ≥ 1 outputs."""
    model, (x, y) = network_and_inputs()
    r = rotation((0.9, 0.3, -0.2, 0.1)).float()
    with torch.no_grad():
        out, rotated = model(x, y), model(x @ r.T, y @ r.T)
    torch.testing.assert_close(rotated[..., 0], out[..., 0], rtol=1e-4, atol=1e-4 * out.abs().max().item())
    assert (rotated[..., 1:] - out[..., 1:]).abs().max() > 0.1 * out[..., 1:].abs().max()


def test_tensor_product_rejects_an_unsupported_l_max():
    with pytest.raises(ValueError, match="l_max"):
        TensorProduct(2, 2, 2, l_max=3)
