"""Tensor-network models written with third-party libraries (issue 16), as their users build them: e3nn's tensor
products, gates and spherical harmonics (NequIP-style convolutions with per-edge weights), tensorly-torch's
factorized linear and convolution layers in every factorization it offers and in both implementations
(``factorized``: the factors applied in turn; ``reconstructed``: the full weight rebuilt), its tensor regression and
contraction layers (TRL, TCL) and factorized embedding, and an einsum model optimised by opt_einsum_fx.

Each builder returns a :class:`LibraryModel`: the module and ``inputs(batch, seed)``, a tuple of positional
arguments. Used by tests/corpus/test_libraries.py (correctness) and bench/real_models.py (speed and compile time).
A library that is not installed leaves its models out (``available()``)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class LibraryModel:
    name: str
    model: nn.Module
    inputs: Callable[[int, int], tuple]


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- e3nn ---------------------------------------------------------------------------------------------------------

def e3nn_tensor_product() -> LibraryModel:
    """The issue's case: a fully connected tensor product of two irreps feature sets, then an equivariant linear."""
    from e3nn import o3

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.tp = o3.FullyConnectedTensorProduct("8x0e + 8x1o + 4x2e", "1x0e + 1x1o + 1x2e",
                                                     "8x0e + 8x1o + 4x2e")
            self.linear = o3.Linear("8x0e + 8x1o + 4x2e", "4x0e + 4x1o")

        def forward(self, x, y):
            return self.linear(self.tp(x, y))

    return LibraryModel("e3nn_tensor_product", Block(),
                        lambda b, seed: (_randn(seed, b, 8 + 24 + 20), _randn(seed + 1, b, 9)))


def e3nn_gate() -> LibraryModel:
    """Features times the spherical harmonics of edge vectors, then a gated nonlinearity."""
    from e3nn import nn as enn
    from e3nn import o3

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = enn.Gate("8x0e", [torch.relu], "4x0e", [torch.sigmoid], "4x1o")
            self.sh = o3.Irreps.spherical_harmonics(2)
            self.tp = o3.FullyConnectedTensorProduct("8x0e + 4x1o", self.sh, self.gate.irreps_in)

        def forward(self, x, vectors):
            return self.gate(self.tp(x, o3.spherical_harmonics(self.sh, vectors, normalize=True)))

    return LibraryModel("e3nn_gate", Block(), lambda b, seed: (_randn(seed, b, 20), _randn(seed + 1, b, 3)))


def e3nn_convolution() -> LibraryModel:
    """NequIP's interaction: a 'uvu' tensor product of node features and edge harmonics whose weights come per edge
    from a radial MLP of the edge length (``shared_weights=False``)."""
    from e3nn import nn as enn
    from e3nn import o3

    class Convolution(nn.Module):
        def __init__(self):
            super().__init__()
            irreps_in, self.sh = o3.Irreps("8x0e + 4x1o"), o3.Irreps.spherical_harmonics(2)
            irreps_mid, instructions = [], []
            for i, (mul, ir_in) in enumerate(irreps_in):
                for j, (_, ir_edge) in enumerate(self.sh):
                    for ir_out in ir_in * ir_edge:
                        if ir_out.l <= 1:
                            instructions.append((i, j, len(irreps_mid), "uvu", True))
                            irreps_mid.append((mul, ir_out))
            self.tp = o3.TensorProduct(irreps_in, self.sh, o3.Irreps(irreps_mid), instructions,
                                       shared_weights=False, internal_weights=False)
            self.radial = enn.FullyConnectedNet([8, 16, self.tp.weight_numel], torch.nn.functional.silu)
            self.linear = o3.Linear(self.tp.irreps_out, "8x0e + 4x1o")

        def forward(self, features, vectors, radial_basis):
            sh = o3.spherical_harmonics(self.sh, vectors, normalize=True)
            messages = self.tp(features, sh, self.radial(radial_basis))
            return self.linear(messages)

    def inputs(b, seed):
        return _randn(seed, b, 20), _randn(seed + 1, b, 3), _randn(seed + 2, b, 8)

    return LibraryModel("e3nn_convolution", Convolution(), inputs)


# --- tensorly-torch -----------------------------------------------------------------------------------------------

def _initialised(module: nn.Module, seed: int) -> nn.Module:
    """tensorly-torch leaves a factorized convolution's factors uninitialised (``torch.empty``): draw them."""
    import tltorch

    torch.manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, tltorch.FactorizedTensor):
            sub.normal_(0, 0.2)
    return module


def tltorch_linear(factorization: str, implementation: str = "factorized") -> Callable[[], LibraryModel]:
    def make() -> LibraryModel:
        import tltorch

        layer = tltorch.FactorizedLinear((4, 4, 4), (4, 4, 2), factorization=factorization, rank=0.5,
                                         implementation=implementation)
        return LibraryModel(f"tltorch_linear_{factorization}_{implementation}", _initialised(layer, 0),
                            lambda b, seed: (_randn(seed, b, 64),))
    make.__name__ = f"tltorch_linear_{factorization}_{implementation}"
    return make


def tltorch_conv(factorization: str, implementation: str = "factorized") -> Callable[[], LibraryModel]:
    def make() -> LibraryModel:
        import tltorch

        layer = tltorch.FactorizedConv(8, 16, 3, order=2, padding=1, factorization=factorization, rank=0.5,
                                       implementation=implementation)
        return LibraryModel(f"tltorch_conv_{factorization}_{implementation}", _initialised(layer, 0),
                            lambda b, seed: (_randn(seed, b, 8, 10, 10),))
    make.__name__ = f"tltorch_conv_{factorization}_{implementation}"
    return make


def tltorch_trl(factorization: str) -> Callable[[], LibraryModel]:
    def make() -> LibraryModel:
        import tltorch

        layer = tltorch.TRL((8, 4, 4), (10,), factorization=factorization, rank=0.5, bias=True)
        return LibraryModel(f"tltorch_trl_{factorization}", _initialised(layer, 0),
                            lambda b, seed: (_randn(seed, b, 8, 4, 4),))
    make.__name__ = f"tltorch_trl_{factorization}"
    return make


def tltorch_tcl() -> LibraryModel:
    import tltorch

    class Head(nn.Module):
        """A TCL compressing a feature map, then a TRL to the classes (the tensorly-torch paper's network head)."""

        def __init__(self):
            super().__init__()
            self.tcl = tltorch.TCL((8, 6, 6), rank=(6, 4, 4))
            self.trl = tltorch.TRL((6, 4, 4), (10,), factorization="tucker", rank=0.5)

        def forward(self, x):
            return self.trl(torch.relu(self.tcl(x)))

    return LibraryModel("tltorch_tcl", _initialised(Head(), 0), lambda b, seed: (_randn(seed, b, 8, 6, 6),))


def tltorch_embedding() -> LibraryModel:
    import tltorch

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tltorch.FactorizedEmbedding(512, 64, factorization="blocktt", rank=8)
            self.out = nn.Linear(64, 8)

        def forward(self, tokens):
            return self.out(self.embedding(tokens).mean(1))

    return LibraryModel("tltorch_embedding", _initialised(Bag(), 0), lambda b, seed: (
        torch.randint(0, 512, (b, 6), generator=torch.Generator().manual_seed(seed)),))


# --- opt_einsum_fx ------------------------------------------------------------------------------------------------

def opt_einsum_fx_model() -> LibraryModel:
    """An einsum model as e3nn's users optimise it: traced by torch.fx, its einsums re-ordered and split into
    pairwise contractions by ``opt_einsum_fx.optimize_einsums_full`` — tcomp receives the rewritten GraphModule."""
    import opt_einsum_fx

    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(_randn(7, 12, 10, 16) / 10)
            self.core = nn.Parameter(_randn(8, 16, 6, 6) / 4)

        def forward(self, x, y):
            h = torch.einsum("bi,bj,ijk->bk", x, y, self.w)
            return torch.einsum("bk,kpq,bp->bq", h, self.core, x[:, :6])

    model = Bilinear()
    example = (_randn(1, 5, 12), _randn(2, 5, 10))
    graph = opt_einsum_fx.optimize_einsums_full(torch.fx.symbolic_trace(model), example)
    return LibraryModel("opt_einsum_fx", graph, lambda b, seed: (_randn(seed, b, 12), _randn(seed + 1, b, 10)))


E3NN = [e3nn_tensor_product, e3nn_gate, e3nn_convolution]
TLTORCH = ([tltorch_linear(f) for f in ("cp", "tucker", "blocktt")] + [tltorch_linear("blocktt", "reconstructed")]
           + [tltorch_conv(f) for f in ("cp", "tucker", "tt")] + [tltorch_conv("cp", "reconstructed")]
           + [tltorch_trl(f) for f in ("cp", "tucker", "tt")] + [tltorch_tcl, tltorch_embedding])
OPT_EINSUM_FX = [opt_einsum_fx_model]
LIBRARIES = {"e3nn": E3NN, "tltorch": TLTORCH, "opt_einsum_fx": OPT_EINSUM_FX}


def available() -> list[Callable[[], LibraryModel]]:
    """The builders whose library is installed."""
    return [make for module, builders in LIBRARIES.items() if importlib.util.find_spec(module) for make in builders]
