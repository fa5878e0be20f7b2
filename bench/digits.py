"""A small CNN trained on scikit-learn's 8×8 digits (shipped with the package; no download), seeded — shared by the
Tucker-packing and the convolution-compression benchmarks."""
from __future__ import annotations

import torch
from torch import nn


def digits_data(seed: int = 0):
    """(images [N,1,8,8] in [0,1], labels, train indices, test indices) — a fixed 1400/397 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return images, labels, order[:1400], order[1400:]


def train_digits_cnn(seed: int = 0, epochs: int = 15, width: int = 32) -> tuple[nn.Sequential, tuple]:
    """A CNN (1→width→2·width channels, 3×3) trained with Adam; ~98% test accuracy. Returns (model, data)."""
    data = digits_data(seed)
    images, labels, train, test = data
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * 16, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train), generator=g)].split(64):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), data


def accuracy(model, data) -> float:
    images, labels, _, test = data
    with torch.no_grad():
        return (model(images[test]).argmax(1) == labels[test]).float().mean().item()
