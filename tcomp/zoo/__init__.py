"""The built-in model zoo: named models with deterministic weights and example inputs, the targets of
`tcomp bench`.

Every entry is ordinary PyTorch written after a published architecture or reference implementation (each
module's docstring names it; `docs/zoo.md` lists shapes, sizes, FLOPs and timings). All of them trace with
`torch.fx.symbolic_trace`, take any batch size and run without dropout.

    from tcomp.zoo import get_entry, entries
    entry = get_entry("resnet18")
    model = entry.build()                  # eval mode, the same weights on every call
    inputs = entry.example_inputs(batch=2)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tcomp.zoo import bert, gpt2
from tcomp.zoo.equivariant import EquivariantTPNet
from tcomp.zoo.mixer import mixer_s16
from tcomp.zoo.mlp import MLP
from tcomp.zoo.monarch import MonarchMLP
from tcomp.zoo.mps import MPSClassifier
from tcomp.zoo.peps import PEPSClassifier
from tcomp.zoo.resnet import resnet18, resnet50
from tcomp.zoo.tt import TTNet
from tcomp.zoo.vit import vit_tiny

__all__ = ["TAGS", "UnknownModelError", "ZooEntry", "entries", "get_entry"]

TAGS = frozenset({"mlp", "cnn", "transformer", "tensor-network", "structured"})
_WEIGHT_SEED = 0
_INPUT_SEED = 1

InputMaker = Callable[[int, torch.Generator], tuple[Tensor, ...]]


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo. `build()` and `example_inputs()` are deterministic."""

    name: str
    description: str
    tags: frozenset[str]
    default_bench: bool   # part of the default subset of `tcomp bench`
    default_batch: int
    constructor: Callable[[], nn.Module]
    make_inputs: InputMaker  # (batch, generator) -> input tensors

    def __post_init__(self):
        if not self.tags <= TAGS:
            raise ValueError(f"{self.name}: unknown tags {sorted(self.tags - TAGS)}; valid tags: {sorted(TAGS)}")

    def build(self) -> nn.Module:
        """The model in eval mode, initialised from a fixed seed; the caller's global RNG state is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_WEIGHT_SEED)
            model = self.constructor()
        return model.eval()

    def example_inputs(self, batch: int | None = None) -> tuple[Tensor, ...]:
        """Inputs at the default shape, with `batch` rows if given (else `default_batch`); the same on every call."""
        if batch is None:
            batch = self.default_batch
        elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        return self.make_inputs(batch, torch.Generator().manual_seed(_INPUT_SEED))


class UnknownModelError(KeyError):
    """`get_entry` was asked for a name the zoo does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


def _normal(*shapes: tuple[int, ...]) -> InputMaker:
    """One standard-normal tensor [batch, *shape] per shape."""
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return tuple(torch.randn(batch, *shape, generator=generator) for shape in shapes)
    return make


def _pixels(*shape: int) -> InputMaker:
    """One tensor [batch, *shape] of pixel intensities, uniform in [0, 1]."""
    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return (torch.rand(batch, *shape, generator=generator),)
    return make


_IMAGENET = _normal((3, 224, 224))

_ENTRIES = (
    ZooEntry("mlp", "MLP 784→1024→1024→10, LayerNorm + GELU", tags=frozenset({"mlp"}),
             default_bench=True, default_batch=256, constructor=MLP, make_inputs=_normal((784,))),
    ZooEntry("resnet18", "ResNet-18 (He et al. 2016; torchvision layout), 3×224×224", tags=frozenset({"cnn"}),
             default_bench=True, default_batch=8, constructor=resnet18, make_inputs=_IMAGENET),
    ZooEntry("resnet50", "ResNet-50 (He et al. 2016; torchvision layout), 3×224×224", tags=frozenset({"cnn"}),
             default_bench=False, default_batch=8, constructor=resnet50, make_inputs=_IMAGENET),
    ZooEntry("vit_tiny", "ViT-Ti/16 (Dosovitskiy et al. 2021; timm layout), 3×224×224",
             tags=frozenset({"transformer"}),
             default_bench=True, default_batch=8, constructor=vit_tiny, make_inputs=_IMAGENET),
    ZooEntry("mlp_mixer", "MLP-Mixer S/16 (Tolstikhin et al. 2021; timm layout), 3×224×224", tags=frozenset({"mlp"}),
             default_bench=False, default_batch=4, constructor=mixer_s16, make_inputs=_IMAGENET),
    ZooEntry("minilm", "BERT encoder with all-MiniLM-L6-v2's shapes and Hugging Face names, 128 tokens",
             tags=frozenset({"transformer"}),
             default_bench=False, default_batch=32, constructor=bert.minilm, make_inputs=bert.example_inputs),
    ZooEntry("gpt2_small", "GPT-2 small decoder (Radford et al. 2019) with tied LM head, 256 tokens",
             tags=frozenset({"transformer"}),
             default_bench=False, default_batch=4, constructor=gpt2.gpt2_small, make_inputs=gpt2.example_inputs),
    ZooEntry("mps_classifier", "MPS classifier (Stoudenmire & Schwab 2016), 8×8 pixels, χ=32",
             tags=frozenset({"tensor-network"}),
             default_bench=True, default_batch=64, constructor=MPSClassifier, make_inputs=_pixels(1, 8, 8)),
    ZooEntry("tt_net", "TT-layer network (Novikov et al. 2015), 1024→4096→4096→10, TT-rank 8",
             tags=frozenset({"tensor-network", "structured"}),
             default_bench=True, default_batch=256, constructor=TTNet, make_inputs=_normal((1024,))),
    ZooEntry("peps", "PEPS classifier (Cheng et al. 2021), 4×4 grid, D=6, one einsum",
             tags=frozenset({"tensor-network"}),
             default_bench=True, default_batch=64, constructor=PEPSClassifier, make_inputs=_pixels(1, 4, 4)),
    ZooEntry("equivariant_tp", "SO(3)-equivariant tensor products (e3nn-style), l=1⊗1→l≤2, 3 layers",
             tags=frozenset({"tensor-network"}), default_bench=True, default_batch=1024,
             constructor=EquivariantTPNet, make_inputs=_normal((32, 3), (16, 3))),
    ZooEntry("monarch_mlp", "residual MLP of Monarch layers (Dao et al. 2022), 1024↔4096",
             tags=frozenset({"mlp", "structured"}),
             default_bench=True, default_batch=256, constructor=MonarchMLP, make_inputs=_normal((1024,))),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}


def entries() -> list[ZooEntry]:
    """All entries: dense models (MLP, CNNs, transformers), then tensor networks and structured models."""
    return list(_ENTRIES)


def get_entry(name: str) -> ZooEntry:
    """The entry called `name`; `UnknownModelError` (a KeyError) listing the valid names otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownModelError(f"no zoo model named {name!r}; valid names: {', '.join(_BY_NAME)}") from None
