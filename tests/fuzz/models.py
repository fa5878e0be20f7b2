"""Random small models for fuzzing: an ``nn.Sequential`` of layers drawn for the shape the input has at that point.

The input is one float64 tensor ``[B, *shape]`` where ``shape`` is a sequence ``(T, C)``, an image ``(C, H, W)`` or a
vector ``(C,)``. Each layer is drawn among those that apply to the current shape: linear layers, activations,
residual adds, reshapes and permutes, einsums with weights, self-attention, layer norm, softmax, 1x1 and kxk
convolutions, batch norm (its running statistics random), sums and means. Models with batch norm run in eval mode;
the others in train or eval mode at random. Sometimes the model returns a second output (the mean).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU)
MAX_WIDTH = 12


# -- small layers that torch has no module for -----------------------------------------------------------------------

class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return str(self.dims)


class Reshape(nn.Module):
    """``x.reshape(batch, *shape)``: the batch written as ``-1`` or as ``x.shape[0]``."""

    def __init__(self, shape: tuple, batch_from_shape: bool):
        super().__init__()
        self.shape, self.batch_from_shape = shape, batch_from_shape

    def forward(self, x):
        return x.reshape(x.shape[0] if self.batch_from_shape else -1, *self.shape)

    def extra_repr(self) -> str:
        return f"{'x.shape[0]' if self.batch_from_shape else -1}, {self.shape}"


class Reduce(nn.Module):
    """``fn(x, dim)`` with fn "sum" or "mean", or, with ``combine``, ``x - mean`` / ``x * sum`` (keepdim)."""

    def __init__(self, fn: str, dim, combine: bool):
        super().__init__()
        self.fn, self.dim, self.combine = fn, dim, combine

    def forward(self, x):
        r = getattr(x, self.fn)(self.dim, keepdim=self.combine)
        if not self.combine:
            return r
        return x - r if self.fn == "mean" else x * r

    def extra_repr(self) -> str:
        return f"{self.fn}, dim={self.dim}, combine={self.combine}"


class Softmax(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class EinsumWeight(nn.Module):
    """``torch.einsum(equation, x, weight)``."""

    def __init__(self, equation: str, *weight_shape: int):
        super().__init__()
        self.equation = equation
        self.weight = nn.Parameter(torch.empty(weight_shape))  # drawn with the rest of the model

    def forward(self, x):
        return torch.einsum(self.equation, x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.equation!r}, weight {tuple(self.weight.shape)}"


class SelfAttention(nn.Module):
    """One attention head over ``[B, T, C]`` written with einsums (q, k, v projections, scaled softmax)."""

    def __init__(self, c: int, d: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(c, d), nn.Linear(c, d, bias=False), nn.Linear(c, c)
        self.scale = d ** -0.5

    def forward(self, x):
        scores = torch.einsum("btd,bsd->bts", self.q(x), self.k(x)) * self.scale
        return torch.einsum("bts,bsc->btc", scores.softmax(-1), self.v(x))


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class WithMean(nn.Module):
    """Two outputs: ``(x, x.mean())``."""

    def forward(self, x):
        return x, x.mean()


# -- drawing layers ----------------------------------------------------------------------------------------------------

@dataclass
class Draw:
    """What a layer builder needs: the random source and the current shape (without the batch)."""

    rng: random.Random
    shape: tuple

    def width(self) -> int:
        return self.rng.randint(2, 8)


def _randomised(model: nn.Module, gen: torch.Generator) -> None:
    """Every float parameter and batch-norm statistic of ``model`` drawn from ``gen`` (so a fold that ignored one
    shows): matrices and kernels scaled by their fan-in, norm weights near 1, running variances positive."""
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=gen, dtype=torch.float64)
            if name.endswith("running_var"):
                r = r.abs() + 0.5
            elif name.endswith("weight") and t.dim() == 1:
                r = 1 + 0.5 * r
            elif t.dim() >= 2:
                r = r / t[0].numel() ** 0.5
            else:
                r = 0.5 * r
            t.copy_(r)


def _activation(d: Draw):
    return d.rng.choice(ACTIVATIONS)(), d.shape


def _linear(d: Draw):
    c = d.width()
    return nn.Linear(d.shape[-1], c, bias=d.rng.random() < 0.7), (*d.shape[:-1], c)


def _layer_norm(d: Draw):
    return nn.LayerNorm(d.shape[-1]), d.shape


def _softmax(d: Draw):
    dim = d.rng.randint(1, len(d.shape))
    return Softmax(dim if d.rng.random() < 0.5 else dim - len(d.shape) - 1), d.shape


def _reduce(d: Draw):
    """A sum or mean over one non-batch dim: dropped, or combined with x (keepdim)."""
    dim, combine = d.rng.randint(1, len(d.shape)), d.rng.random() < 0.6
    if len(d.shape) == 1 and not combine:
        return None
    shape = d.shape if combine else d.shape[:dim - 1] + d.shape[dim:]
    return Reduce(d.rng.choice(("sum", "mean")), dim, combine), shape


def _residual(d: Draw):
    """x + body(x), body one shape-keeping layer or a small MLP."""
    if len(d.shape) == 3:
        c = d.shape[0]
        body = nn.Conv2d(c, c, d.rng.choice((1, 3)), padding="same")
        body = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), body) if d.rng.random() < 0.5 else body
        return Residual(body), d.shape
    c, hidden = d.shape[-1], d.width()
    layers = [nn.Linear(c, hidden), d.rng.choice(ACTIVATIONS)(), nn.Linear(hidden, c)]
    if d.rng.random() < 0.4:
        layers.insert(0, nn.LayerNorm(c))
    return Residual(nn.Sequential(*layers)), d.shape


def _einsum(d: Draw):
    """x contracted with a weight: over the last dim, or (sequences) over both with a per-position weight."""
    c = d.width()
    if len(d.shape) == 2 and d.rng.random() < 0.5:
        t, k = d.shape
        return EinsumWeight("btk,tkc->btc", t, k, c), (t, c)
    letters = "tuv"[:len(d.shape) - 1]
    k = d.shape[-1]
    transposed = bool(letters) and d.rng.random() < 0.3  # the new index placed first
    out = f"bc{letters}" if transposed else f"b{letters}c"
    shape = (c, *d.shape[:-1]) if transposed else (*d.shape[:-1], c)
    return EinsumWeight(f"b{letters}k,kc->{out}", k, c), shape


def _attention(d: Draw):
    return (SelfAttention(d.shape[-1], d.width()), d.shape) if len(d.shape) == 2 else None


def _permute(d: Draw):
    if len(d.shape) == 1:
        return None
    dims = list(range(1, len(d.shape) + 1))
    while dims == sorted(dims):
        d.rng.shuffle(dims)
    return Permute(0, *dims), tuple(d.shape[k - 1] for k in dims)


def _reshape(d: Draw):
    """Merge two neighbouring dims, split one in two, or flatten."""
    shape, rng = list(d.shape), d.rng
    choice = rng.choice(("merge", "split", "flatten"))
    if choice == "merge" and len(shape) >= 2:
        k = rng.randrange(len(shape) - 1)
        shape[k:k + 2] = [shape[k] * shape[k + 1]]
    elif choice == "split" and len(shape) <= 2 and shape[-1] % 2 == 0:
        shape[-1:] = [2, shape[-1] // 2]
    else:
        shape = [torch.Size(shape).numel()]
    if max(shape) > 4 * MAX_WIDTH or tuple(shape) == d.shape:
        return None
    return Reshape(tuple(shape), rng.random() < 0.5), tuple(shape)


def _conv(d: Draw):
    """A 1x1 or kxk convolution (k 2 or 3, padding 0 or 1, stride 1 or 2, sometimes depthwise)."""
    if len(d.shape) != 3:
        return None
    c, h, w = d.shape
    out = d.width()
    if d.rng.random() < 0.4:
        return nn.Conv2d(c, out, 1, bias=d.rng.random() < 0.5), (out, h, w)
    k = d.rng.choice((2, 3))
    padding = 1 if min(h, w) < k or d.rng.random() < 0.6 else 0
    stride = d.rng.choice((1, 1, 2))
    groups = c if d.rng.random() < 0.2 else 1
    out = c if groups > 1 else out
    conv = nn.Conv2d(c, out, k, stride=stride, padding=padding, groups=groups, bias=d.rng.random() < 0.5)
    size = [(n + 2 * padding - k) // stride + 1 for n in (h, w)]
    return conv, (out, *size)


def _batch_norm(d: Draw):
    if len(d.shape) == 2:
        return None
    norm = nn.BatchNorm2d if len(d.shape) == 3 else nn.BatchNorm1d
    return norm(d.shape[0]), d.shape


def _pool(d: Draw):
    """An image averaged (``AdaptiveAvgPool2d(1)`` + flatten, or a mean over H and W) into a vector."""
    if len(d.shape) != 3:
        return None
    if d.rng.random() < 0.5:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), d.shape[:1]
    return Reduce("mean", (2, 3), False), d.shape[:1]


BUILDERS = (_activation, _linear, _layer_norm, _softmax, _reduce, _residual, _einsum, _attention, _permute, _reshape,
            _conv, _conv, _batch_norm, _pool)
START_SHAPES = ("sequence", "image", "vector")


def _start_shape(rng: random.Random) -> tuple:
    kind = rng.choice(START_SHAPES)
    if kind == "sequence":
        return rng.randint(2, 6), rng.randint(2, 8)
    if kind == "image":
        return rng.randint(1, 4), rng.randint(2, 6), rng.randint(2, 6)
    return (rng.randint(2, 10),)


def _fits(shape: tuple) -> bool:
    return max(shape) <= 4 * MAX_WIDTH and torch.Size(shape).numel() <= 256


def random_model(seed: int) -> tuple[nn.Module, tuple]:
    """The model of this seed (float64, in its mode) and its input shape without the batch."""
    rng = random.Random(seed)
    d = Draw(rng, _start_shape(rng))
    start, layers = d.shape, []
    for _ in range(rng.randint(1, 8)):
        drawn = rng.choice(BUILDERS)(d)
        if drawn is not None and _fits(drawn[1]):
            layers.append(drawn[0])
            d.shape = drawn[1]
    if rng.random() < 0.15:
        layers.append(WithMean())
    model = nn.Sequential(*layers) if layers else nn.Sequential(nn.ReLU())
    _randomised(model.double(), torch.Generator().manual_seed(seed))
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return model.train(not has_bn and rng.random() < 0.5), start


def model_trial(seed: int) -> tuple[str, nn.Module, tuple, tuple]:
    """The model of this seed as (description, module, example inputs, fresh inputs of another batch size)."""
    model, shape = random_model(seed)
    rng = random.Random(seed + 1)
    batch, fresh = rng.sample(range(1, 7), 2)
    g = torch.Generator().manual_seed(seed + 2)
    example, other = (torch.randn((b, *shape), generator=g, dtype=torch.float64) for b in (batch, fresh))
    mode = "train" if model.training else "eval"
    description = f"model seed={seed} input [B, {', '.join(map(str, shape))}] B={batch}, then {fresh}; {mode}: {model}"
    return description, model, (example,), (other,)
