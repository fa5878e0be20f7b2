"""MLP-Mixer (Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision"), size S/16.

Each block mixes across the 196 patch tokens with one MLP (applied to the transposed activations) and across
channels with another. Module names follow timm's `mixer_s16_224` (`stem.proj`,
`blocks.N.{norm1,mlp_tokens.fc1,mlp_tokens.fc2,norm2,mlp_channels.fc1,mlp_channels.fc2}`, `norm`, `head`).
"""
from __future__ import annotations

from torch import Tensor, nn

from tcomp.zoo.vit import FeedForward, PatchEmbed


class MixerBlock(nn.Module):
    """x + token_mlp(norm1(x)ᵀ)ᵀ, then x + channel_mlp(norm2(x))."""

    def __init__(self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = FeedForward(num_tokens, token_hidden)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = FeedForward(dim, channel_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class MlpMixer(nn.Module):
    """Patch stem, `depth` mixer blocks, final norm, mean over tokens, classifier."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, dim: int = 512, depth: int = 8,
                 token_hidden: int = 256, channel_hidden: int = 2048, num_classes: int = 1000):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        num_tokens = (image_size // patch_size) ** 2
        self.stem = PatchEmbed(patch_size, 3, dim)
        self.blocks = nn.Sequential(*(MixerBlock(num_tokens, dim, token_hidden, channel_hidden)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        x = self.norm(self.blocks(self.stem(images)))
        return self.head(x.mean(dim=1))


def mixer_s16(num_classes: int = 1000) -> MlpMixer:
    """Mixer-S/16 at 224×224: dim 512, depth 8, token MLP 256, channel MLP 2048; 18.5 M parameters."""
    return MlpMixer(num_classes=num_classes)
