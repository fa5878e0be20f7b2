"""A PEPS (projected entangled pair state) classifier on a small 2-D grid, contracted exactly with one einsum
(Cheng, Wang & Zhang 2021, "Supervised learning with projected entangled pair states", Phys. Rev. B 103, 125117).

One site tensor per pixel of an H×W grid, with the pixel's physical index (the local feature map of Stoudenmire
& Schwab, see `mps.pixel_features`) and one bond of dimension D to each grid neighbour; the site in the middle of
the grid also carries the class index. The logits are the full network — all site tensors and all feature
vectors — contracted by a single `torch.einsum`, whose path torch plans on every call.

Default: a 4×4 grid (a 4×4 coarse-grained image), D = 6, 10 classes, batch 64. An exact one-einsum contraction
needs a letter per index, so the grid is limited to 42 of einsum's 52 letters (4×4 at most).
Site tensors are Gaussian with variance D^(−bonds/sites), which makes the expected squared logit one for
unit-norm features.
"""
from __future__ import annotations

import string

import torch
from torch import Tensor, nn

from tcomp.zoo.mps import pixel_features


def peps_equation(height: int, width: int) -> tuple[str, list[tuple[int, ...]]]:
    """The einsum equation of an open-boundary height×width PEPS with one class index, and the bond layout.

    Operands alternate feature vector `b p` and site tensor `p [c] bonds…` for the sites in raster order; a site
    tensor's bonds go to its up, left, right and down neighbours, in that order, where they exist, and the class
    index `c` sits on the middle site. Returns the equation and, per site, the ids of its bonds.
    """
    num_sites = height * width
    bond_ids: list[list[int]] = [[] for _ in range(num_sites)]
    num_bonds = 0
    for row in range(height):
        for col in range(width):
            site = row * width + col
            for neighbour, exists in ((site + 1, col + 1 < width), (site + width, row + 1 < height)):
                if exists:
                    bond_ids[site].append(num_bonds)
                    bond_ids[neighbour].append(num_bonds)
                    num_bonds += 1
    letters = string.ascii_letters
    needed = 2 + num_sites + num_bonds
    if needed > len(letters):
        raise ValueError(f"a {height}×{width} PEPS needs {needed} einsum indices; torch.einsum has {len(letters)}")
    batch, label = letters[0], letters[1]
    physical = letters[2:2 + num_sites]
    bond = letters[2 + num_sites:needed]
    label_site = (height // 2) * width + width // 2
    terms = []
    for site in range(num_sites):
        site_label = label if site == label_site else ""
        terms += [batch + physical[site], physical[site] + site_label + "".join(bond[i] for i in bond_ids[site])]
    return ",".join(terms) + "->" + batch + label, [tuple(ids) for ids in bond_ids]


class PEPSClassifier(nn.Module):
    """`forward(images [B, 1, H, W] in [0, 1]) -> logits [B, num_classes]`, one PEPS site per pixel."""

    def __init__(self, image_size: int = 4, bond_dim: int = 6, num_classes: int = 10):
        super().__init__()
        self.equation, bond_ids = peps_equation(image_size, image_size)
        label_site = (image_size // 2) * image_size + image_size // 2
        num_bonds = sum(len(ids) for ids in bond_ids) // 2
        std = bond_dim ** (-num_bonds / (2 * len(bond_ids)))
        self.sites = nn.ParameterList(
            nn.Parameter(torch.randn(2, *((num_classes,) if site == label_site else ()), *(bond_dim,) * len(ids))
                         * std)
            for site, ids in enumerate(bond_ids))

    def forward(self, images: Tensor) -> Tensor:
        phi = pixel_features(images.flatten(1))  # [B, sites, 2]
        operands = []
        for site, tensor in enumerate(self.sites):
            operands += [phi[:, site], tensor]
        return torch.einsum(self.equation, *operands)
