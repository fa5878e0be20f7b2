"""A rotation-equivariant (SO(3)) tensor-product network on vector (l = 1) features, as in e3nn (Geiger & Smidt
2022) and the tensor field networks it generalises (Thomas et al. 2018); the Cartesian irreps are those of
TensorNet (Simeon & De Fabritiis 2023).

The product of two vectors decomposes into irreducible parts, 1 ⊗ 1 = 0 ⊕ 1 ⊕ 2: the trace (a scalar), the
antisymmetric part (the cross product, a vector) and the symmetric traceless part (5 components). The coupling
tensor C[i, j, k] holds an orthonormal basis of these 3×3 parts, k = 0 | 1…3 | 4…8 — real Clebsch–Gordan
coefficients in a Cartesian basis, computed here. A layer is the weighted tensor product

    out[b, w, k] = Σ_{u,v,i,j} C[i, j, k] · x[b, u, i] · y[b, v, j] · W[u, v, w],

one four-operand einsum. Hidden layers keep the outputs l ≤ 1 and apply a gate (Weiler et al. 2018): each
output vector is scaled by the sigmoid of its own scalar; the last layer returns all of l ≤ 2. (The gate scalar
of a hidden layer after the first is a pseudoscalar, so the network is equivariant to rotations, not reflections.)

Default (`equivariant_tp`): 1024 edges per batch, node features x of 32 vectors, edge attributes y of 16
vectors, 3 layers of 32 output channels: `forward(x [B, 32, 3], y [B, 16, 3]) -> [B, 32, 9]`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

IRREP_SLICES = {0: slice(0, 1), 1: slice(1, 4), 2: slice(4, 9)}


def coupling_1x1() -> Tensor:
    """C[i, j, k] (3×3×9, float64): the orthonormal irreducible basis of 3×3 matrices, B_k = C[:, :, k].

    k = 0: I/√3; k = 1…3: the cross-product basis ε[:, :, a]/√2 (so C[:, :, 1:4] contracts x, y to x × y / √2);
    k = 4…8: the symmetric traceless basis (xy, yz, zx, x²−y², 2z²−x²−y²), each of unit Frobenius norm.
    As a 9×9 matrix C is orthogonal, and C[R·, R·, :] = D(R) C for every rotation R (see `irrep_rotation`).
    """
    basis = torch.zeros(9, 3, 3, dtype=torch.float64)
    basis[0] = torch.eye(3, dtype=torch.float64) / math.sqrt(3)
    for a, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):  # ε_{ija} = +1 for the cyclic (i, j) of a
        basis[1 + a, i, j], basis[1 + a, j, i] = 1 / math.sqrt(2), -1 / math.sqrt(2)
    for a, (i, j) in enumerate(((0, 1), (1, 2), (2, 0))):
        basis[4 + a, i, j] = basis[4 + a, j, i] = 1 / math.sqrt(2)
    basis[7, 0, 0], basis[7, 1, 1] = 1 / math.sqrt(2), -1 / math.sqrt(2)
    basis[8] = torch.diag(torch.tensor([-1.0, -1.0, 2.0], dtype=torch.float64)) / math.sqrt(6)
    return basis.permute(1, 2, 0).contiguous()


def irrep_rotation(rotation: Tensor) -> Tensor:
    """D(R) (9×9, block-diagonal 1 ⊕ 3 ⊕ 5): how the outputs of `coupling_1x1` transform when both inputs are
    rotated by the 3×3 rotation R, i.e. D[m, n] = ⟨B_m, R B_n Rᵀ⟩."""
    c = coupling_1x1().to(rotation.dtype)
    return torch.einsum("ijm,ia,abn,jb->mn", c, rotation, c, rotation)


class TensorProduct(nn.Module):
    """Fully connected tensor product of l = 1 channels: x [B, u, 3] ⊗ y [B, v, 3] -> [B, w, (l_max + 1)²]."""

    def __init__(self, in_channels: int, attr_channels: int, out_channels: int, l_max: int):
        super().__init__()
        if l_max not in IRREP_SLICES:
            raise ValueError(f"l_max must be 0, 1 or 2 (1 ⊗ 1 = 0 ⊕ 1 ⊕ 2), got {l_max}")
        self.register_buffer("coupling", coupling_1x1()[:, :, :(l_max + 1) ** 2].float())
        self.weight = nn.Parameter(torch.randn(in_channels, attr_channels, out_channels)
                                   / math.sqrt(in_channels * attr_channels))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.einsum("ijk,bui,bvj,uvw->bwk", self.coupling, x, y, self.weight)


class EquivariantTPNet(nn.Module):
    """`depth` tensor products of the features with the attributes y, gated between layers."""

    def __init__(self, in_channels: int = 32, attr_channels: int = 16, hidden_channels: int = 32, depth: int = 3):
        super().__init__()
        widths = [in_channels] + [hidden_channels] * depth
        self.layers = nn.ModuleList(
            TensorProduct(widths[n], attr_channels, widths[n + 1], l_max=2 if n == depth - 1 else 1)
            for n in range(depth))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            out = layer(x, y)
            x = out[..., IRREP_SLICES[1]] * torch.sigmoid(out[..., IRREP_SLICES[0]])
        return self.layers[-1](x, y)
