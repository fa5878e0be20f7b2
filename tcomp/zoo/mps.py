"""A matrix-product-state (tensor-train) classifier (Stoudenmire & Schwab 2016, "Supervised Learning with
Tensor Networks"), written the way torchmps (Miller 2019) evaluates an MPS.

Each pixel x ∈ [0, 1] becomes the local feature φ(x) = [cos(πx/2), sin(πx/2)] (Stoudenmire & Schwab eq. 3).
The weight tensor is a chain of cores A_s[l, d, r] with bond dimension χ, closed at both ends by boundary vectors
(open boundary conditions); the core at `label_site` also carries the class index. As in torchmps, the cores
of each side of the label site are stored stacked, one einsum contracts every site's feature into its core
(a χ×χ matrix per site and sample), and the chain is then contracted site by site — one einsum per site from
each boundary towards the label site — and the two boundary vectors are joined through the label core.

Default: the 8×8 digits of UCI/scikit-learn (64 sites, raster order), χ = 32, 10 classes, batch 64 — the
regime of Stoudenmire & Schwab's χ = 10…120 on 14×14 MNIST, at the size of digits that fit this CPU.
Cores and boundary vectors are Gaussian with variance 1/χ (label core: 1), which keeps the expected squared
norm of the boundary vector at one through every site, so logits are O(1) for any chain length.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def pixel_features(pixels: Tensor) -> Tensor:
    """φ(x) = [cos(πx/2), sin(πx/2)] for every pixel: [..., n] → [..., n, 2], each feature of unit norm."""
    angle = (math.pi / 2) * pixels
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


class MPSClassifier(nn.Module):
    """`forward(images [B, 1, H, W] in [0, 1]) -> logits [B, num_classes]`, one MPS site per pixel.

    Parameters: `left_end` [χ], `left_cores` [label_site, χ, 2, χ], `label_core` [χ, 2, classes, χ],
    `right_cores` [sites − label_site − 1, χ, 2, χ], `right_end` [χ], in chain order.
    """

    def __init__(self, image_size: int = 8, bond_dim: int = 32, num_classes: int = 10, label_site: int | None = None):
        super().__init__()
        num_sites = image_size * image_size
        label_site = num_sites // 2 if label_site is None else label_site
        if not 0 <= label_site < num_sites:
            raise ValueError(f"label_site must be a site (0 … {num_sites - 1}), got {label_site}")
        self.num_sites, self.label_site = num_sites, label_site
        chi, std = bond_dim, bond_dim ** -0.5
        self.left_end = nn.Parameter(torch.randn(chi) * std)
        self.left_cores = nn.Parameter(torch.randn(label_site, chi, 2, chi) * std)
        self.label_core = nn.Parameter(torch.randn(chi, 2, num_classes, chi))
        self.right_cores = nn.Parameter(torch.randn(num_sites - label_site - 1, chi, 2, chi) * std)
        self.right_end = nn.Parameter(torch.randn(chi) * std)

    def forward(self, images: Tensor) -> Tensor:
        phi = pixel_features(images.flatten(1))  # [B, sites, 2]
        site = self.label_site
        left_mats = torch.einsum("bsd,sldr->sblr", phi[:, :site], self.left_cores)
        right_mats = torch.einsum("bsd,sldr->sblr", phi[:, site + 1:], self.right_cores)
        left = self.left_end.expand(images.shape[0], -1)
        for k in range(site):
            left = torch.einsum("bl,blr->br", left, left_mats[k])
        right = self.right_end.expand(images.shape[0], -1)
        for k in reversed(range(self.num_sites - site - 1)):
            right = torch.einsum("blr,br->bl", right_mats[k], right)
        return torch.einsum("bl,bd,ldcr,br->bc", left, phi[:, site], self.label_core, right)
