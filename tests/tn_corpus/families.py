"""A seeded generator of tensor-network PyTorch models (issue 17, item 4).

``corpus_model(seed)`` draws a family, a style and the sizes from ``seed`` and returns a :class:`CorpusCase`: an
ordinary ``nn.Module`` (float64 parameters; ``.to(dtype)`` works), example inputs (float64) and ``make_inputs(batch)``
for other batch sizes. The families (``FAMILIES``) are tensor networks as they appear in machine-learning code:

===================  ==========================================================================================
``mps``              MPS classifier: boundary vector swept site by site (Stoudenmire & Schwab 2016)
``tree``             binary tree tensor network over leaf feature maps (Shi, Duan & Vidal 2006; Cheng et al. 2019)
``peps``             a small 2D PEPS patch contracted exactly (Verstraete & Cirac 2004; Cheng et al. 2021)
``mera``             binary MERA layers, disentanglers then isometries, on a product state (Vidal 2007, 2008)
``tt_linear``        tensor-train (TT-matrix) linear layer (Oseledets 2011; Novikov et al. 2015)
``tucker_linear``    Tucker-factorized linear layer (Tucker 1966; Kim et al. 2016)
``cp_linear``        CP (canonical polyadic) factorized linear layer (Kolda & Bader 2009; Lebedev et al. 2015)
``multilinear``      bilinear and trilinear couplings (Tenenbaum & Freeman 2000; Zadeh et al. 2017)
``tensor_product``   equivariant-style tensor product with a fixed Clebsch-Gordan-like buffer (Thomas et al. 2018)
``attention``        multi-head attention written with einsum (Vaswani et al. 2017)
===================  ==========================================================================================

Each family is written in several styles (``Family.styles``), which compute the same function from the same
parameters: ``einsum`` (a Python loop of ``torch.einsum``), ``oneshot`` (one many-operand ``torch.einsum``),
``tensordot`` (``torch.tensordot`` in a loop, with broadcast multiply-and-sum where a batch is shared),
``matmul`` (``matmul``/``bmm`` with ``reshape``/``permute``), ``stacked`` (the cores are slices of one stacked or
packed ``nn.Parameter``), ``vmap`` (``torch.vmap`` of a per-sample function), and family-specific ones
(``functional``: ``F.bilinear``; ``sdpa``: ``F.scaled_dot_product_attention``).

Seed ``k`` fully determines the case (``random.Random(k)`` for the sizes, ``torch.Generator().manual_seed(k)``
for the parameters; the global RNGs are never used). The sizes are drawn (bond dimensions 2-64, batch 1-1024,
sites, leaves, layers, modes) and then shrunk so that the parameters stay under ``MAX_PARAMS``, every
intermediate under ``MAX_ELEMENTS`` and a forward under ``MAX_FLOPS`` (so a float64 forward takes tens of
milliseconds on one core at most; ``MAX_FLOPS`` is 5e8, half the 1e9 asked, as the estimates are rough). The
same seed with another ``style=`` gives the same sizes and parameters, hence the same function; only the batch is
fitted to the style (``vmap`` of a contraction with a weight copies the weight per sample). Outputs are O(1) for
most seeds (parameters scaled by 1/sqrt(bond), unit local feature vectors), though a long chain or deep tree of
small bond can drift to 1e-4.

``build(family, style, sizes, params)`` builds any style from shared parameters (``shared_parameters``), and the
models' ``shared()``/``shared_grads()`` give their parameters (gradients) in that shared layout, whatever the style's
own layout: tests/tn_corpus/test_tn_corpus.py compares the styles with them.
"""
from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DTYPE = torch.float64
MAX_ELEMENTS = 2 ** 22      # the largest intermediate of a forward, in elements (any style)
MAX_FLOPS = 5e8             # multiply-adds x 2 of a forward (any style)
MAX_PARAMS = 2 ** 21        # parameters of a model
MAX_BATCH = 1024
BATCH, OUT = 51, 50         # sublist labels of the batch and output legs in many-operand einsums


# ---------------------------------------------------------------------------------------------------------------
# helpers

def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=DTYPE) * scale


def _loguniform(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi], log-uniformly."""
    if hi <= lo:
        return lo
    return min(hi, max(lo, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


def _fit(sizes: dict, cost: Callable[[dict], tuple], tiers: list[list[tuple[str, int]]]) -> dict:
    """Shrink ``sizes`` until one sample fits the caps.

    ``cost(sizes)`` gives (FLOPs per sample, largest intermediate per sample in elements, parameters); ``tiers`` are
    lists of (key, minimum): the sizes of the first tier are shrunk (the one furthest above its minimum first)
    before those of the next. The batch is drawn afterwards, for the style (:func:`batch_for`).
    """
    while True:
        flops, elements, params = cost(sizes)
        if flops <= MAX_FLOPS and elements <= MAX_ELEMENTS and params <= MAX_PARAMS:
            return sizes
        for tier in tiers:
            movable = [(sizes[k] / lo, -i, k, lo) for i, (k, lo) in enumerate(tier) if sizes[k] > lo]
            if movable:
                _, _, k, lo = max(movable)
                sizes[k] = max(lo, int(sizes[k] * 0.8))
                break
        else:
            raise AssertionError(f"no size left to shrink: {sizes} costs {cost(sizes)}")


def local_features(x: Tensor, kind: str) -> Tensor:
    """The local feature map of a site: ``trig`` maps a pixel value x in [0, 1] to (cos(pi x / 2), sin(pi x / 2))
    (Stoudenmire & Schwab 2016); ``vector`` inputs are already feature vectors."""
    if kind == "trig":
        return torch.stack((torch.cos(0.5 * math.pi * x), torch.sin(0.5 * math.pi * x)), dim=-1)
    return x


def _feature_sizes(rng: random.Random, dmax: int) -> tuple[str, int]:
    feature = rng.choice(("trig", "vector"))
    return feature, (2 if feature == "trig" else rng.randint(2, dmax))


def _feature_inputs(feature: str, sites: int, d: int, batch: int, gen: torch.Generator) -> tuple[Tensor]:
    if feature == "trig":
        return (torch.rand((batch, sites), generator=gen, dtype=DTYPE),)
    x = _randn(gen, batch, sites, d)
    return (x / x.norm(dim=-1, keepdim=True),)           # unit local feature vectors, as the trig map gives


def bmm_contract(x: Tensor, xl: list, y: Tensor, yl: list, out: list) -> Tensor:
    """``einsum(x, xl, y, yl, out)`` written with permute, reshape and one ``bmm``: labels in both operands and in
    ``out`` are batch labels, labels in both but not in ``out`` are summed, the others are kept."""
    batch = [c for c in xl if c in yl and c in out]
    summed = [c for c in xl if c in yl and c not in out]
    xfree = [c for c in xl if c not in yl]
    yfree = [c for c in yl if c not in xl]
    size = {}
    for c, n in zip(xl, x.shape):
        size[c] = n
    for c, n in zip(yl, y.shape):
        size[c] = n
    nb, ns, nx, ny = 1, 1, 1, 1
    for c in batch:
        nb = nb * size[c]
    for c in summed:
        ns = ns * size[c]
    for c in xfree:
        nx = nx * size[c]
    for c in yfree:
        ny = ny * size[c]
    xm = x.permute([xl.index(c) for c in batch + xfree + summed]).reshape(nb, nx, ns)
    ym = y.permute([yl.index(c) for c in batch + summed + yfree]).reshape(nb, ns, ny)
    have = batch + xfree + yfree
    z = torch.bmm(xm, ym).reshape([size[c] for c in have])
    return z.permute([have.index(c) for c in out])


def _interleave(tensors, labels) -> list:
    ops = []
    for t, lab in zip(tensors, labels):
        ops += [t, list(lab)]
    return ops


class TNModule(nn.Module):
    """Base of the corpus models: registers the family's shared parameter tensors in a style's layout (one
    parameter, a ParameterList, one stacked parameter, or one flat packed parameter) and maps gradients back
    (:meth:`shared_grads`), so that styles can be compared parameter by parameter."""

    def __init__(self, style: str):
        super().__init__()
        self.style = style
        self._layout: dict[str, tuple] = {}

    def _one(self, key: str, t: Tensor) -> None:
        setattr(self, key, nn.Parameter(t.clone()))
        self._layout[key] = ("one",)

    def _list(self, key: str, ts: list[Tensor]) -> None:
        setattr(self, key, nn.ParameterList([nn.Parameter(t.clone()) for t in ts]))
        self._layout[key] = ("list", len(ts))

    def _stack(self, key: str, ts: list[Tensor]) -> None:
        setattr(self, key, nn.Parameter(torch.stack(ts).clone()))
        self._layout[key] = ("stack", len(ts))

    def _packed(self, key: str, ts: list[Tensor]) -> None:
        setattr(self, key, nn.Parameter(torch.cat([t.reshape(-1) for t in ts]).clone()))
        offsets, o = [], 0
        for t in ts:
            offsets.append((o, o + t.numel(), tuple(t.shape)))
            o += t.numel()
        self._layout[key] = ("packed", offsets)

    def _unpack(self, key: str, i: int) -> Tensor:
        start, stop, shape = self._layout[key][1][i]
        return getattr(self, key)[start:stop].view(shape)

    def shared(self, grad: bool = False) -> dict:
        """The shared parameters (or their gradients) as the family's ``params`` dict lays them out."""
        out = {}
        for key, (kind, *rest) in self._layout.items():
            p = getattr(self, key)
            if kind == "one":
                out[key] = p.grad if grad else p.detach()
            elif kind == "list":
                out[key] = [(q.grad if grad else q.detach()) for q in p]
            else:
                whole = p.grad if grad else p.detach()
                if whole is None:
                    out[key] = None
                elif kind == "stack":
                    out[key] = list(whole.unbind(0))
                else:
                    out[key] = [whole[a:b].view(s) for a, b, s in rest[0]]
        return out

    def shared_grads(self) -> dict:
        return self.shared(grad=True)


class Family(ABC):
    """A family of tensor networks: draws sizes, initialises the shared parameters, and builds the model in any of
    its styles from them."""
    name = ""
    styles: tuple[str, ...] = ()
    network: type[TNModule]  # the module every style of the family is built as

    @abstractmethod
    def sizes(self, rng: random.Random) -> dict:
        ...

    @abstractmethod
    def cost(self, s: dict) -> tuple[float, float, int]:
        """(FLOPs per sample, largest intermediate per sample in elements, parameter count), over all styles but
        ``vmap``'s copies of the weights."""

    @abstractmethod
    def largest(self, s: dict) -> int:
        """The largest parameter tensor's size: ``vmap`` of a contraction with a weight expands it per sample."""

    def style_cost(self, s: dict, style: str) -> tuple[float, float, int]:
        flops, elements, params = self.cost(s)
        if style == "vmap":
            elements = max(elements, self.largest(s))
        return flops, elements, params

    @abstractmethod
    def params(self, s: dict, gen: torch.Generator) -> dict:
        ...

    def module(self, style: str, s: dict, p: dict) -> TNModule:
        return self.network(style, s, p)

    @abstractmethod
    def inputs(self, s: dict, batch: int, gen: torch.Generator) -> tuple[Tensor, ...]:
        ...

    @abstractmethod
    def out_tail(self, s: dict) -> tuple[int, ...]:
        ...

    @abstractmethod
    def describe(self, s: dict) -> str:
        ...


class FeatureFamily(Family):
    """A classifier over a chain of local feature maps (:func:`local_features`): one feature vector a site in,
    ``classes`` scores out."""

    def sites(self, s: dict) -> int:
        return s["sites"]

    def inputs(self, s, batch, gen):
        return _feature_inputs(s["feature"], self.sites(s), s["d"], batch, gen)

    def out_tail(self, s):
        return (s["classes"],)


class LinearFamily(Family):
    """A factorized linear map from ``prod(n)`` to ``prod(m)`` features."""

    def inputs(self, s, batch, gen):
        return (_randn(gen, batch, math.prod(s["n"])),)

    def out_tail(self, s):
        return (math.prod(s["m"]),)


# ---------------------------------------------------------------------------------------------------------------
# MPS classifier

class MPSClassifier(TNModule):
    """Matrix-product-state classifier (Stoudenmire & Schwab, "Supervised learning with tensor networks", 2016;
    Novikov et al., "Exponential machines", 2016): a boundary vector is contracted site by site with the per-site
    feature vectors through the MPS cores ``[D, d, D]``; the label tensor sits after the last site (``[D, C]``) or in
    the middle (``[D, C, D]``, the chain then swept from both ends)."""

    def __init__(self, style: str, s: dict, p: dict):
        super().__init__(style)
        self.sites, self.feature, self.label, self.bond = s["sites"], s["feature"], s["label"], s["bond"]
        self.mid = s["sites"] // 2 if s["label"] == "middle" else s["sites"]
        self._one("left", p["left"])
        if self.label == "middle":
            self._one("right", p["right"])
        self._one("head", p["head"])
        (self._stack if style == "stacked" else self._list)("cores", p["cores"])

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _einsum(self, x):
        phi = local_features(x, self.feature)
        h = torch.einsum("i,bs,isj->bj", self.left, phi[:, 0], self.cores[0])
        for k in range(1, self.mid):
            h = torch.einsum("bi,bs,isj->bj", h, phi[:, k], self.cores[k])
        if self.label == "end":
            return torch.einsum("bi,ic->bc", h, self.head)
        n = self.sites
        r = torch.einsum("j,bs,isj->bi", self.right, phi[:, n - 1], self.cores[n - 1])
        for k in range(n - 2, self.mid - 1, -1):
            r = torch.einsum("bj,bs,isj->bi", r, phi[:, k], self.cores[k])
        return torch.einsum("bi,icj,bj->bc", h, self.head, r)

    def _tensordot(self, x):
        phi = local_features(x, self.feature)
        h = torch.tensordot(phi[:, 0], torch.tensordot(self.left, self.cores[0], dims=([0], [0])), dims=([1], [0]))
        for k in range(1, self.mid):
            t = torch.tensordot(h, self.cores[k], dims=([1], [0]))              # [B, d, D]
            h = (t * phi[:, k, :, None]).sum(1)
        if self.label == "end":
            return torch.tensordot(h, self.head, dims=([1], [0]))
        n = self.sites
        r = torch.tensordot(phi[:, n - 1], torch.tensordot(self.cores[n - 1], self.right, dims=([2], [0])),
                            dims=([1], [1]))
        for k in range(n - 2, self.mid - 1, -1):
            t = torch.tensordot(r, self.cores[k], dims=([1], [2]))              # [B, D, d]
            r = (t * phi[:, k, None, :]).sum(2)
        t = torch.tensordot(h, self.head, dims=([1], [0]))                      # [B, C, D]
        return (t * r[:, None, :]).sum(2)

    def _matmul(self, x):
        phi = local_features(x, self.feature)
        b, d, D = phi.shape[0], phi.shape[-1], self.bond
        h = self.left.expand(b, D)
        for k in range(self.mid):
            t = (h @ self.cores[k].reshape(D, d * D)).view(b, d, D)
            h = torch.bmm(phi[:, k].unsqueeze(1), t).squeeze(1)
        if self.label == "end":
            return h @ self.head
        r = self.right.expand(b, D)
        for k in range(self.sites - 1, self.mid - 1, -1):
            t = (r @ self.cores[k].permute(2, 1, 0).reshape(D, d * D)).view(b, d, D)
            r = torch.bmm(phi[:, k].unsqueeze(1), t).squeeze(1)
        t = (h @ self.head.reshape(D, -1)).view(b, -1, D)
        return torch.bmm(t, r.unsqueeze(2)).squeeze(2)

    def _stacked(self, x):
        phi = local_features(x, self.feature)
        h = self.left.expand(phi.shape[0], -1)
        for k in range(self.mid):
            m = torch.einsum("bs,isj->bij", phi[:, k], self.cores[k])
            h = torch.bmm(h.unsqueeze(1), m).squeeze(1)
        if self.label == "end":
            return h @ self.head
        r = self.right.expand(phi.shape[0], -1)
        for k in range(self.sites - 1, self.mid - 1, -1):
            m = torch.einsum("bs,isj->bij", phi[:, k], self.cores[k])
            r = torch.bmm(m, r.unsqueeze(2)).squeeze(2)
        return torch.einsum("bi,icj,bj->bc", h, self.head, r)

    def _vmap(self, x):
        def one(xs):
            phi = local_features(xs, self.feature)
            h = self.left
            for k in range(self.mid):
                h = torch.einsum("i,s,isj->j", h, phi[k], self.cores[k])
            if self.label == "end":
                return h @ self.head
            r = self.right
            for k in range(self.sites - 1, self.mid - 1, -1):
                r = torch.einsum("j,s,isj->i", r, phi[k], self.cores[k])
            return torch.einsum("i,icj,j->c", h, self.head, r)
        return torch.vmap(one)(x)


class MPSFamily(FeatureFamily):
    name = "mps"
    styles = ("einsum", "tensordot", "matmul", "stacked", "vmap")
    network = MPSClassifier

    def sizes(self, rng):
        feature, d = _feature_sizes(rng, 8)
        s = dict(sites=rng.randint(4, 32), feature=feature, d=d, bond=_loguniform(rng, 2, 64),
                 classes=rng.randint(2, 10), label=rng.choice(("end", "middle")))
        return _fit(s, self.cost, [[("bond", 2)], [("sites", 4)]])

    def cost(self, s):
        n, d, D, C = s["sites"], s["d"], s["bond"], s["classes"]
        head = D * C * (D if s["label"] == "middle" else 1)
        return 2 * n * (d + 1) * D * D + 2 * head, max(d * D, D * D, C * D), n * d * D * D + head + 2 * D

    def largest(self, s):
        D = s["bond"]
        return max(s["d"] * D * D, D * s["classes"] * (D if s["label"] == "middle" else 1))

    def params(self, s, gen):
        n, d, D, C = s["sites"], s["d"], s["bond"], s["classes"]
        p = dict(left=_randn(gen, D, scale=D ** -0.5),
                 cores=[_randn(gen, D, d, D, scale=D ** -0.5) for _ in range(n)])
        if s["label"] == "middle":
            p["right"] = _randn(gen, D, scale=D ** -0.5)
            p["head"] = _randn(gen, D, C, D)
        else:
            p["head"] = _randn(gen, D, C, scale=D ** -0.5)
        return p

    def describe(self, s):
        return (f"{s['sites']} sites, {s['feature']} features d={s['d']}, bond {s['bond']}, {s['classes']} classes "
                f"(label at the {s['label']})")


# ---------------------------------------------------------------------------------------------------------------
# binary tree tensor network

def tree_plan(leaves: int) -> list[tuple[int, bool]]:
    """Per level: the number of adjacent pairs merged, and whether an odd last node is carried up unchanged."""
    plan, m = [], leaves
    while m > 1:
        plan.append((m // 2, m % 2 == 1))
        m = m // 2 + m % 2
    return plan


class TreeTN(TNModule):
    """Binary tree tensor network (Shi, Duan & Vidal 2006; as a classifier: Stoudenmire 2018, Cheng et al. 2019):
    each leaf maps its site's feature vector to a bond vector (``[d, D]``); each node merges two children with
    ``einsum("bi,bj,ijk->bk")`` (``[D, D, D]``), level by level, an odd last child carried up; the root gives the
    ``C`` outputs (``[D, D, C]``)."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.feature, self.bond, self.plan = s["feature"], s["bond"], tree_plan(s["leaves"])
        layout = self._stack if style == "stacked" else self._list
        layout("leafmaps", p["leafmaps"])
        layout("nodes", p["nodes"])
        self._one("root", p["root"])

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _node(self, i):
        return self.nodes[i] if i < len(self.nodes) else self.root

    def _levels(self, h, merge):
        node = 0
        for pairs, carry in self.plan:
            nxt = []
            for q in range(pairs):
                nxt.append(merge(h[2 * q], h[2 * q + 1], self._node(node)))
                node += 1
            h = nxt + ([h[-1]] if carry else [])
        return h[0]

    def _einsum(self, x):
        phi = local_features(x, self.feature)
        h = [torch.einsum("bs,sk->bk", phi[:, i], w) for i, w in enumerate(self.leafmaps)]
        return self._levels(h, lambda a, b, t: torch.einsum("bi,bj,ijk->bk", a, b, t))

    def _tensordot(self, x):
        phi = local_features(x, self.feature)
        h = [torch.tensordot(phi[:, i], w, dims=([1], [0])) for i, w in enumerate(self.leafmaps)]
        return self._levels(h, lambda a, b, t: (torch.tensordot(a, t, dims=([1], [0])) * b[:, :, None]).sum(1))

    def _matmul(self, x):
        phi = local_features(x, self.feature)                                     # [B, L, d]
        D = self.bond
        h = torch.bmm(phi.transpose(0, 1), torch.stack(list(self.leafmaps)))      # [L, B, D]
        node = 0
        for pairs, carry in self.plan:
            outer = torch.matmul(h[0:2 * pairs:2].unsqueeze(-1), h[1:2 * pairs:2].unsqueeze(-2))  # [p, B, D, D]
            w = torch.stack([self._node(node + q).reshape(D * D, -1) for q in range(pairs)])
            node += pairs
            nxt = torch.bmm(outer.reshape(pairs, -1, D * D), w)
            h = torch.cat([nxt, h[-1:]]) if carry else nxt
        return h[0]

    def _stacked(self, x):
        phi = local_features(x, self.feature)
        h = torch.einsum("bls,lsk->lbk", phi, self.leafmaps).unbind(0)
        return self._levels(list(h), lambda a, b, t: torch.einsum("bi,bj,ijk->bk", a, b, t))

    def _vmap(self, x):
        def one(xs):
            phi = local_features(xs, self.feature)
            h = [phi[i] @ w for i, w in enumerate(self.leafmaps)]
            return self._levels(h, lambda a, b, t: torch.einsum("i,j,ijk->k", a, b, t))
        return torch.vmap(one)(x)


class TreeFamily(FeatureFamily):
    name = "tree"
    styles = ("einsum", "tensordot", "matmul", "stacked", "vmap")
    network = TreeTN

    def sizes(self, rng):
        feature, d = _feature_sizes(rng, 8)
        s = dict(leaves=rng.randint(4, 16), feature=feature, d=d, bond=_loguniform(rng, 2, 64),
                 classes=rng.randint(2, 10))
        return _fit(s, self.cost, [[("bond", 2)], [("leaves", 4)]])

    def cost(self, s):
        L, d, D, C = s["leaves"], s["d"], s["bond"], s["classes"]
        flops = 2 * (L * d * D + (L - 2) * D ** 3 + D * D * C)
        return flops, max(L * D, (L // 2) * D * D), L * d * D + (L - 2) * D ** 3 + D * D * C

    def largest(self, s):
        return s["bond"] ** 2 * max(s["bond"], s["classes"])

    def params(self, s, gen):
        L, d, D, C = s["leaves"], s["d"], s["bond"], s["classes"]
        return dict(leafmaps=[_randn(gen, d, D, scale=D ** -0.5) for _ in range(L)],
                    nodes=[_randn(gen, D, D, D, scale=D ** -0.5) for _ in range(L - 2)],
                    root=_randn(gen, D, D, C, scale=D ** -0.5))

    def sites(self, s):
        return s["leaves"]

    def describe(self, s):
        return f"{s['leaves']} leaves, {s['feature']} features d={s['d']}, bond {s['bond']}, {s['classes']} classes"


# ---------------------------------------------------------------------------------------------------------------
# PEPS patch

def peps_legs(rows: int, cols: int) -> list[list[int]]:
    """Per site (row-major) the labels of its legs: physical, then left, right, up, down bonds where they exist,
    then the output leg on the last site."""
    n = rows * cols

    def h(r, c):
        return n + r * (cols - 1) + c

    def v(r, c):
        return n + rows * (cols - 1) + r * cols + c
    legs = []
    for r in range(rows):
        for c in range(cols):
            leg = [r * cols + c]
            leg += [h(r, c - 1)] if c > 0 else []
            leg += [h(r, c)] if c < cols - 1 else []
            leg += [v(r - 1, c)] if r > 0 else []
            leg += [v(r, c)] if r < rows - 1 else []
            leg += [OUT] if (r, c) == (rows - 1, cols - 1) else []
            legs.append(leg)
    return legs


def peps_order(rows: int, cols: int) -> list[int]:
    """The zipper order: column by column when the grid is wide, row by row when it is tall."""
    if rows <= cols:
        return [r * cols + c for c in range(cols) for r in range(rows)]
    return list(range(rows * cols))


def peps_plan(rows: int, cols: int) -> list[tuple[int, list, list]]:
    """(site, its batched labels, the boundary's labels after absorbing it) along the zipper order."""
    legs, plan, env = peps_legs(rows, cols), [], None
    for k in peps_order(rows, cols):
        m = [BATCH] + legs[k][1:]
        env = m if env is None else [BATCH] + [a for a in env[1:] if a not in m] + [a for a in m[1:] if a not in env]
        plan.append((k, m, env))
    return plan


class PEPSPatch(TNModule):
    """A small PEPS patch (Verstraete & Cirac 2004; as a classifier: Cheng et al., "Supervised learning with
    projected entangled pair states", 2021): a rows x cols grid of site tensors ``[d, bonds..., (C)]``, each
    contracted with its site's feature vector, the grid then contracted exactly (boundary zipper, or one einsum);
    the last site carries the ``C`` outputs."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.feature = s["feature"]
        self.legs = peps_legs(s["rows"], s["cols"])
        self.plan = peps_plan(s["rows"], s["cols"])
        self._list("sites", p["sites"])

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _local(self, phi, k):
        return torch.einsum(phi[:, k], [BATCH, self.legs[k][0]], self.sites[k], self.legs[k],
                            [BATCH] + self.legs[k][1:])

    def _einsum(self, x):
        phi = local_features(x, self.feature)
        env, labels = None, None
        for k, m, out in self.plan:
            t = self._local(phi, k)
            env = t if env is None else torch.einsum(env, labels, t, m, out)
            labels = out
        return env

    def _matmul(self, x):
        phi = local_features(x, self.feature)
        b, d = phi.shape[0], phi.shape[-1]
        env, labels = None, None
        for k, m, out in self.plan:
            w = self.sites[k]
            t = (phi[:, k] @ w.reshape(d, -1)).view(b, *w.shape[1:])
            env = t if env is None else bmm_contract(env, labels, t, m, out)
            labels = out
        return env

    def _oneshot(self, x):
        phi = local_features(x, self.feature)
        local = [self._local(phi, k) for k in range(len(self.legs))]
        return torch.einsum(*_interleave(local, [[BATCH] + leg[1:] for leg in self.legs]), [BATCH, OUT])

    def _vmap(self, x):
        def one(xs):
            phi = local_features(xs, self.feature)
            ops = []
            for k, leg in enumerate(self.legs):
                ops += [phi[k], [leg[0]], self.sites[k], leg]
            return torch.einsum(*ops, [OUT])
        return torch.vmap(one)(x)


class PEPSFamily(FeatureFamily):
    name = "peps"
    styles = ("einsum", "matmul", "oneshot", "vmap")
    network = PEPSPatch

    def sizes(self, rng):
        rows, cols = rng.choice([(2, 2), (2, 3), (3, 2), (2, 4), (4, 2), (3, 3)])
        feature, d = _feature_sizes(rng, 4)
        s = dict(rows=rows, cols=cols, feature=feature, d=d, bond=_loguniform(rng, 2, 64), classes=rng.randint(2, 6))
        return _fit(s, self.cost, [[("bond", 2)]])

    def _dims(self, s):
        n = s["rows"] * s["cols"]
        dims = {k: (s["d"] if k < n else s["bond"]) for k in range(OUT)}
        dims[OUT], dims[BATCH] = s["classes"], 1
        return dims

    def cost(self, s):
        dims = self._dims(s)
        legs = peps_legs(s["rows"], s["cols"])
        flops, elements, env = 0, 0, None
        for k, m, out in peps_plan(s["rows"], s["cols"]):
            size = math.prod(dims[a] for a in legs[k])
            flops += 2 * size
            elements = max(elements, size // s["d"], math.prod(dims[a] for a in out))
            if env is not None:
                flops += 2 * math.prod(dims[a] for a in set(env) | set(m))
            env = out
        params = sum(math.prod(dims[a] for a in leg) for leg in legs)
        return 2 * flops, elements, params   # x2: the one-shot einsum's path may differ from the zipper

    def largest(self, s):
        dims = self._dims(s)
        return max(math.prod(dims[a] for a in leg) for leg in peps_legs(s["rows"], s["cols"]))

    def params(self, s, gen):
        dims = self._dims(s)
        legs = peps_legs(s["rows"], s["cols"])
        n, bonds = len(legs), s["rows"] * (s["cols"] - 1) + (s["rows"] - 1) * s["cols"]
        scale = s["bond"] ** (-bonds / (2 * n))     # the contraction's variance stays O(1)
        return dict(sites=[_randn(gen, *[dims[a] for a in leg], scale=scale) for leg in legs])

    def sites(self, s):
        return s["rows"] * s["cols"]

    def describe(self, s):
        return (f"{s['rows']}x{s['cols']} grid, {s['feature']} features d={s['d']}, bond {s['bond']}, "
                f"{s['classes']} classes")


# ---------------------------------------------------------------------------------------------------------------
# MERA

_LOWER = "acdefghijklmnopqrstuvwxyz"   # 'b' is the batch


def mera_layers(sites: int) -> list[int]:
    """The number of sites each layer acts on (halved by each layer's isometries, down to 2 at the top)."""
    out = []
    while sites > 2:
        out.append(sites)
        sites //= 2
    return out


def mera_equations(m: int, batch: bool) -> tuple[list[str], list[str]]:
    """einsum equations applying, to a dense state on ``m`` sites, each disentangler (sites 2k+1, 2k+2) and then
    each isometry (merging sites 2k, 2k+1, which sit at positions k, k+1 once the earlier ones are merged)."""
    b = "b" if batch else ""
    s = _LOWER[:m]
    dis = [f"{b}{s},{s[i]}{s[i + 1]}YZ->{b}{s[:i]}YZ{s[i + 2:]}" for i in range(1, m - 2, 2)]
    iso = []
    for k in range(m // 2):
        t = _LOWER[:m - k]
        iso.append(f"{b}{t},{t[k]}{t[k + 1]}Z->{b}{t[:k]}Z{t[k + 2:]}")
    return dis, iso


class MERALayers(TNModule):
    """Binary MERA (Vidal, "Entanglement renormalization", 2007; "Class of quantum many-body states that can be
    efficiently simulated", 2008) applied to the product state of the sites' feature vectors, as a dense state
    tensor (the way quantum-circuit simulators apply gates): each layer applies disentanglers ``[x, x, x, x]`` to the
    pairs (1,2), (3,4), ... and then isometries ``[x, x, x']`` merging the pairs (0,1), (2,3), ...; the two top
    sites are contracted with a ``[x', x', C]`` tensor."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.feature, self.layers = s["feature"], mera_layers(s["sites"])
        self.eqs = [mera_equations(m, batch=style != "vmap") for m in self.layers]
        layout = self._stack if style == "stacked" else self._list
        for i in range(len(self.layers)):
            layout(f"dis{i}", p[f"dis{i}"])
            layout(f"iso{i}", p[f"iso{i}"])
        self._one("top", p["top"])

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _gates(self, i):
        return getattr(self, f"dis{i}"), getattr(self, f"iso{i}")

    def _einsum(self, x):
        phi = local_features(x, self.feature)
        b, n = phi.shape[0], phi.shape[1]
        psi = phi[:, 0]
        for k in range(1, n):
            psi = torch.einsum("bx,by->bxy", psi, phi[:, k]).reshape(b, -1)
        psi = psi.view(b, *[phi.shape[-1]] * n)
        for i, (dis_eqs, iso_eqs) in enumerate(self.eqs):
            dis, iso = self._gates(i)
            for eq, u in zip(dis_eqs, dis):
                psi = torch.einsum(eq, psi, u)
            for eq, w in zip(iso_eqs, iso):
                psi = torch.einsum(eq, psi, w)
        return torch.einsum("bij,ijc->bc", psi, self.top)

    def _tensordot(self, x):
        phi = local_features(x, self.feature)
        b, n, d = phi.shape
        psi = phi[:, 0]
        for k in range(1, n):
            psi = psi.unsqueeze(-1) * phi[:, k].reshape(b, *[1] * k, d)
        for i, m in enumerate(self.layers):
            dis, iso = self._gates(i)
            for q, u in enumerate(dis):
                p = 2 * q + 2                                # axes of sites 2q+1, 2q+2 (axis 0 is the batch)
                psi = torch.movedim(torch.tensordot(psi, u, dims=([p, p + 1], [0, 1])), (-2, -1), (p, p + 1))
            for q, w in enumerate(iso):
                psi = torch.movedim(torch.tensordot(psi, w, dims=([q + 1, q + 2], [0, 1])), -1, q + 1)
        return torch.tensordot(psi, self.top, dims=([1, 2], [0, 1]))

    def _matmul(self, x):
        phi = local_features(x, self.feature)
        b, n, d = phi.shape
        psi = phi[:, 0]
        for k in range(1, n):
            psi = torch.bmm(psi.unsqueeze(2), phi[:, k].unsqueeze(1)).reshape(b, -1)
        shape = [b] + [d] * n
        for i, m in enumerate(self.layers):
            dis, iso = self._gates(i)
            for q, u in enumerate(dis):
                p, chi = 2 * q + 2, shape[1]
                left, right = math.prod(shape[:p]), math.prod(shape[p + 2:])
                psi = u.reshape(chi * chi, chi * chi).t() @ psi.reshape(left, chi * chi, right)
            for q, w in enumerate(iso):
                chi, new = shape[q + 1], w.shape[-1]
                left, right = math.prod(shape[:q + 1]), math.prod(shape[q + 3:])
                psi = w.reshape(chi * chi, new).t() @ psi.reshape(left, chi * chi, right)
                shape = shape[:q + 1] + [new] + shape[q + 3:]
        return psi.reshape(b, -1) @ self.top.reshape(-1, self.top.shape[-1])

    def _stacked(self, x):
        phi = local_features(x, self.feature)
        n = phi.shape[1]
        psi = torch.einsum(*_interleave(phi.unbind(1), [[BATCH, k] for k in range(n)]), [BATCH] + list(range(n)))
        labels = list(range(n))
        for i, m in enumerate(self.layers):
            dis, iso = self._gates(i)
            ops, new = [psi, [BATCH] + labels], list(labels)
            for q in range(m // 2 - 1):          # all disentanglers of the layer in one einsum
                ops += [dis[q], [labels[2 * q + 1], labels[2 * q + 2], 20 + 2 * q, 21 + 2 * q]]
                new[2 * q + 1], new[2 * q + 2] = 20 + 2 * q, 21 + 2 * q
            psi = torch.einsum(*ops, [BATCH] + new)
            ops = [psi, [BATCH] + new]
            for q in range(m // 2):              # then all isometries
                ops += [iso[q], [new[2 * q], new[2 * q + 1], 40 + q]]
            labels = list(range(m // 2))
            psi = torch.einsum(*ops, [BATCH] + [40 + q for q in range(m // 2)])
        return torch.einsum("bij,ijc->bc", psi, self.top)

    def _vmap(self, x):
        def one(xs):
            phi = local_features(xs, self.feature)
            psi = phi[0]
            for k in range(1, phi.shape[0]):
                psi = torch.einsum("x,y->xy", psi, phi[k]).reshape(-1)
            psi = psi.view(*[phi.shape[-1]] * phi.shape[0])
            for i, (dis_eqs, iso_eqs) in enumerate(self.eqs):
                dis, iso = self._gates(i)
                for eq, u in zip(dis_eqs, dis):
                    psi = torch.einsum(eq, psi, u)
                for eq, w in zip(iso_eqs, iso):
                    psi = torch.einsum(eq, psi, w)
            return torch.einsum("ij,ijc->c", psi, self.top)
        return torch.vmap(one)(x)


class MERAFamily(FeatureFamily):
    name = "mera"
    styles = ("einsum", "tensordot", "matmul", "stacked", "vmap")
    network = MERALayers

    def sizes(self, rng):
        sites = rng.choice((4, 8, 8, 16))
        feature, d = _feature_sizes(rng, {4: 8, 8: 4, 16: 2}[sites])
        s = dict(sites=sites, feature=feature, d=d, chi=_loguniform(rng, 2, {4: 16, 8: 8, 16: 5}[sites]),
                 classes=rng.randint(2, 8))
        return _fit(s, self.cost, [[("chi", 2)], [("d", 2)]])

    def _dims(self, s):
        return [s["d"]] + [s["chi"]] * len(mera_layers(s["sites"]))

    def cost(self, s):
        flops, elements, params = 0, s["d"] ** s["sites"], 0
        dims = self._dims(s)
        flops += 2 * elements
        for i, m in enumerate(mera_layers(s["sites"])):
            x, y = dims[i], dims[i + 1]
            state = x ** m
            flops += 2 * (m // 2 - 1) * state * (x * x + 8)      # + 8: the gates are memory-bound on a big state
            params += (m // 2 - 1) * x ** 4 + (m // 2) * x * x * y
            for k in range(m // 2):
                flops += 2 * y ** (k + 1) * x ** (m - 2 * k)
                elements = max(elements, y ** k * x ** (m - 2 * k))
        params += dims[-1] ** 2 * s["classes"]
        return 2 * flops, elements, params     # x2: the stacked style's one-einsum paths may differ

    def largest(self, s):
        dims = self._dims(s)
        return max([x ** 4 for x in dims[:-1]] + [dims[-1] ** 2 * s["classes"]])

    def params(self, s, gen):
        dims, p = self._dims(s), {}
        for i, m in enumerate(mera_layers(s["sites"])):
            x, y = dims[i], dims[i + 1]
            # disentanglers: random orthogonal x^2 x x^2 matrices; isometries: Gaussian, norm-preserving on average
            p[f"dis{i}"] = [torch.linalg.qr(_randn(gen, x * x, x * x))[0].reshape(x, x, x, x)
                            for _ in range(m // 2 - 1)]
            p[f"iso{i}"] = [_randn(gen, x, x, y, scale=y ** -0.5) for _ in range(m // 2)]
        p["top"] = _randn(gen, dims[-1], dims[-1], s["classes"])
        return p

    def describe(self, s):
        return (f"{s['sites']} sites, {len(mera_layers(s['sites']))} layers, {s['feature']} features d={s['d']}, "
                f"bond {s['chi']}, {s['classes']} classes")


# ---------------------------------------------------------------------------------------------------------------
# factorized linear layers

def _modes(rng: random.Random, k: int, lo: int, hi: int, most: int) -> list[int]:
    modes = [rng.randint(lo, hi) for _ in range(k)]
    while math.prod(modes) > most:
        i = modes.index(max(modes))
        modes[i] = max(lo, modes[i] - 1)
    return modes


class TTLinear(TNModule):
    """Tensor-train (TT-matrix) linear layer (Oseledets, "Tensor-train decomposition", 2011; Novikov et al.,
    "Tensorizing neural networks", 2015): the weight ``W[(n_1..n_K), (m_1..m_K)]`` is a train of cores
    ``[r_{k-1}, n_k, m_k, r_k]`` (r_0 = r_K = 1), applied to a ``[B, in]`` input without forming W; optional bias."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.n, self.m = s["n"], s["m"]
        (self._packed if style == "stacked" else self._list)("cores", p["cores"])
        if p.get("bias") is not None:
            self._one("bias", p["bias"])
        self.has_bias = p.get("bias") is not None

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _core(self, k):
        return self._unpack("cores", k) if self.style == "stacked" else self.cores[k]

    def _finish(self, y):
        return y + self.bias if self.has_bias else y

    def _einsum(self, x):
        b, t, mm = x.shape[0], x.reshape(x.shape[0], 1, 1, -1), 1
        for k, (nk, mk) in enumerate(zip(self.n, self.m)):
            g = self._core(k)
            t = torch.einsum("bMrnN,rnms->bMmsN", t.reshape(b, mm, g.shape[0], nk, -1), g)
            mm *= mk
            t = t.reshape(b, mm, g.shape[-1], -1)
        return self._finish(t.reshape(b, mm))

    _stacked = _einsum

    def _tensordot(self, x):
        t = x.reshape(x.shape[0], *self.n, 1)
        for k in range(len(self.n)):
            t = torch.tensordot(t, self._core(k), dims=([1, t.dim() - 1], [1, 0]))
        return self._finish(t.reshape(x.shape[0], -1))

    def _matmul(self, x):
        b = x.shape[0]
        t, mm = x.reshape(b, self.n[0], -1, 1, 1), 1
        for k, (nk, mk) in enumerate(zip(self.n, self.m)):
            g = self._core(k)
            r0, r1 = g.shape[0], g.shape[-1]
            rest = t.shape[2]
            t = t.permute(0, 2, 3, 1, 4).reshape(-1, nk * r0) @ g.permute(1, 0, 2, 3).reshape(nk * r0, mk * r1)
            mm *= mk
            nxt = self.n[k + 1] if k + 1 < len(self.n) else 1
            t = t.reshape(b, nxt, rest // nxt, mm, r1)
        return self._finish(t.reshape(b, mm))

    def _vmap(self, x):
        def one(xs):
            t, mm = xs.reshape(1, 1, -1), 1
            for k, (nk, mk) in enumerate(zip(self.n, self.m)):
                g = self.cores[k]
                t = torch.einsum("MrnN,rnms->MmsN", t.reshape(mm, g.shape[0], nk, -1), g)
                mm *= mk
                t = t.reshape(mm, g.shape[-1], -1)
            return t.reshape(mm)
        return self._finish(torch.vmap(one)(x))


class TTFamily(LinearFamily):
    name = "tt_linear"
    styles = ("einsum", "tensordot", "matmul", "stacked", "vmap")
    network = TTLinear

    def sizes(self, rng):
        k = rng.randint(2, 4)
        s = dict(n=_modes(rng, k, 2, 8, 4096), m=_modes(rng, k, 2, 8, 4096), rank=_loguniform(rng, 2, 64),
                 bias=rng.random() < 0.5)
        return _fit(s, self.cost, [[("rank", 2)]])

    def _ranks(self, s):
        return [1] + [s["rank"]] * (len(s["n"]) - 1) + [1]

    def cost(self, s):
        n, m, r = s["n"], s["m"], self._ranks(s)
        flops, elements = 0, math.prod(n)
        for k in range(len(n)):
            flops += 2 * math.prod(n[k:]) * math.prod(m[:k + 1]) * r[k] * r[k + 1]
            elements = max(elements, math.prod(n[k + 1:]) * math.prod(m[:k + 1]) * r[k + 1])
        params = sum(r[k] * n[k] * m[k] * r[k + 1] for k in range(len(n))) + math.prod(m)
        return flops, elements, params

    def largest(self, s):
        r = self._ranks(s)
        return max(r[k] * s["n"][k] * s["m"][k] * r[k + 1] for k in range(len(s["n"])))

    def params(self, s, gen):
        n, m, r = s["n"], s["m"], self._ranks(s)
        K, fan_in = len(n), math.prod(n)
        scale = (fan_in ** (-1 / K) * s["rank"] ** (-(K - 1) / K)) ** 0.5     # Var(W) = 1 / fan_in
        return dict(cores=[_randn(gen, r[k], n[k], m[k], r[k + 1], scale=scale) for k in range(K)],
                    bias=_randn(gen, math.prod(m), scale=0.1) if s["bias"] else None)

    def describe(self, s):
        return (f"{'x'.join(map(str, s['n']))} -> {'x'.join(map(str, s['m']))}, TT rank {s['rank']}"
                f"{', bias' if s['bias'] else ''}")


_IN, _RA, _RC, _OUTM = "nop", "acd", "efg", "hij"


class TuckerLinear(TNModule):
    """Tucker-factorized linear layer (Tucker 1966; Kim et al., "Compression of deep convolutional neural networks
    for fast and low power mobile applications", 2016): the input ``[B, n_1..n_K]`` is projected on each mode by
    ``U_k [n_k, a_k]``, mapped by the core ``[a_1..a_K, c_1..c_K]`` and expanded by ``V_k [c_k, m_k]``."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.n, self.m = s["n"], s["m"]
        K = len(self.n)
        self._list("U", p["U"])
        self._one("core", p["core"])
        self._list("V", p["V"])
        if p.get("bias") is not None:
            self._one("bias", p["bias"])
        self.has_bias = p.get("bias") is not None
        b = "" if style == "vmap" else "b"
        self.eq = (f"{b}{_IN[:K]}," + ",".join(_IN[k] + _RA[k] for k in range(K)) + f",{_RA[:K]}{_RC[:K]},"
                   + ",".join(_RC[k] + _OUTM[k] for k in range(K)) + f"->{b}{_OUTM[:K]}")

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _finish(self, y):
        y = y.reshape(y.shape[0], -1)
        return y + self.bias if self.has_bias else y

    def _oneshot(self, x):
        return self._finish(torch.einsum(self.eq, x.reshape(x.shape[0], *self.n), *self.U, self.core, *self.V))

    def _einsum(self, x):
        K = len(self.n)
        t, cur = x.reshape(x.shape[0], *self.n), _IN[:K]
        for k in range(K):
            nxt = cur.replace(_IN[k], _RA[k])
            t, cur = torch.einsum(f"b{cur},{_IN[k]}{_RA[k]}->b{nxt}", t, self.U[k]), nxt
        t, cur = torch.einsum(f"b{cur},{_RA[:K]}{_RC[:K]}->b{_RC[:K]}", t, self.core), _RC[:K]
        for k in range(K):
            nxt = cur.replace(_RC[k], _OUTM[k])
            t, cur = torch.einsum(f"b{cur},{_RC[k]}{_OUTM[k]}->b{nxt}", t, self.V[k]), nxt
        return self._finish(t)

    def _tensordot(self, x):
        K = len(self.n)
        t = x.reshape(x.shape[0], *self.n)
        for u in self.U:                                   # each mode product moves its mode to the end
            t = torch.tensordot(t, u, dims=([1], [0]))
        t = torch.tensordot(t, self.core, dims=(list(range(1, K + 1)), list(range(K))))
        for v in self.V:
            t = torch.tensordot(t, v, dims=([1], [0]))
        return self._finish(t)

    def _matmul(self, x):
        K = len(self.n)
        t = x.reshape(x.shape[0], *self.n)
        for k, u in enumerate(self.U):
            t = t.movedim(k + 1, -1)
            t = (t.reshape(-1, u.shape[0]) @ u).reshape(*t.shape[:-1], u.shape[1]).movedim(-1, k + 1)
        c = self.core.shape[K:]
        t = (t.reshape(t.shape[0], -1) @ self.core.reshape(math.prod(t.shape[1:]), -1)).reshape(t.shape[0], *c)
        for k, v in enumerate(self.V):
            t = t.movedim(k + 1, -1)
            t = (t.reshape(-1, v.shape[0]) @ v).reshape(*t.shape[:-1], v.shape[1]).movedim(-1, k + 1)
        return self._finish(t)

    def _vmap(self, x):
        def one(xs):
            return torch.einsum(self.eq, xs.reshape(self.n), *self.U, self.core, *self.V).reshape(-1)
        return self._finish(torch.vmap(one)(x))


class TuckerFamily(LinearFamily):
    name = "tucker_linear"
    styles = ("oneshot", "einsum", "tensordot", "matmul", "vmap")
    network = TuckerLinear

    def sizes(self, rng):
        k = rng.randint(2, 3)
        n, m = _modes(rng, k, 2, 16, 4096), _modes(rng, k, 2, 16, 4096)
        s = dict(n=n, m=m, a=[rng.randint(2, max(2, x)) for x in n], c=[rng.randint(2, max(2, x)) for x in m],
                 bias=rng.random() < 0.5)
        for i in range(k):
            s[f"a{i}"], s[f"c{i}"] = s["a"][i], s["c"][i]

        def cost(s):
            s["a"], s["c"] = [s[f"a{i}"] for i in range(k)], [s[f"c{i}"] for i in range(k)]
            return self.cost(s)
        s = _fit(s, cost, [[(f"a{i}", 2) for i in range(k)] + [(f"c{i}", 2) for i in range(k)]])
        for i in range(k):
            del s[f"a{i}"], s[f"c{i}"]
        return s

    def cost(self, s):
        n, m, a, c = s["n"], s["m"], s["a"], s["c"]
        K = len(n)
        flops, elements, dims = 0, math.prod(n), list(n)
        for k in range(K):
            flops += 2 * math.prod(dims) * a[k]
            dims[k] = a[k]
            elements = max(elements, math.prod(dims))
        flops += 2 * math.prod(a) * math.prod(c)
        dims = list(c)
        for k in range(K):
            flops += 2 * math.prod(dims) * m[k]
            dims[k] = m[k]
            elements = max(elements, math.prod(dims))
        params = sum(x * y for x, y in zip(n, a)) + math.prod(a) * math.prod(c) + sum(x * y for x, y in zip(c, m))
        return 2 * flops, 2 * elements, params + math.prod(m)   # x2: the one-shot einsum's path may differ

    def largest(self, s):
        return max([math.prod(s["a"]) * math.prod(s["c"]), math.prod(s["m"])]
                   + [x * y for x, y in zip(s["n"] + s["c"], s["a"] + s["m"])])

    def params(self, s, gen):
        n, m, a, c = s["n"], s["m"], s["a"], s["c"]
        return dict(U=[_randn(gen, x, y, scale=x ** -0.5) for x, y in zip(n, a)],
                    core=_randn(gen, *a, *c, scale=math.prod(a) ** -0.5),
                    V=[_randn(gen, x, y, scale=x ** -0.5) for x, y in zip(c, m)],
                    bias=_randn(gen, math.prod(m), scale=0.1) if s["bias"] else None)

    def describe(self, s):
        return (f"{'x'.join(map(str, s['n']))} -> {'x'.join(map(str, s['m']))}, ranks {'x'.join(map(str, s['a']))}"
                f" / {'x'.join(map(str, s['c']))}{', bias' if s['bias'] else ''}")


_CPIN, _CPOUT = "nopq", "hijk"


class CPLinear(TNModule):
    """CP-factorized linear layer (Kolda & Bader, "Tensor decompositions and applications", 2009; Lebedev et al.,
    "Speeding-up convolutional neural networks using fine-tuned CP-decomposition", 2015): ``W = sum_r prod_k
    A_k[n_k, r] prod_k B_k[m_k, r]``, applied mode by mode to a ``[B, n_1..n_K]`` input."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.n, self.m = s["n"], s["m"]
        self._list("A", p["A"])
        self._list("B", p["B"])
        K = len(self.n)
        b = "" if style == "vmap" else "b"
        IN, OUT_ = _CPIN[:K], _CPOUT[:K]
        self.eq = (f"{b}{IN}," + ",".join(c + "r" for c in IN) + "," + ",".join(c + "r" for c in OUT_)
                   + f"->{b}{OUT_}")
        self.steps = ([f"{b}{IN},{IN[0]}r->{b}{IN[1:]}r"] + [f"{b}{IN[k:]}r,{IN[k]}r->{b}{IN[k + 1:]}r"
                                                          for k in range(1, K)]
                      + [f"{b}{OUT_[:k]}r,{OUT_[k]}r->{b}{OUT_[:k + 1]}r" for k in range(K - 1)]
                      + [f"{b}{OUT_[:K - 1]}r,{OUT_[K - 1]}r->{b}{OUT_}"])

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _einsum(self, x):
        t = x.reshape(x.shape[0], *self.n)
        for eq, f in zip(self.steps, [*self.A, *self.B]):
            t = torch.einsum(eq, t, f)
        return t.reshape(x.shape[0], -1)

    def _oneshot(self, x):
        return torch.einsum(self.eq, x.reshape(x.shape[0], *self.n), *self.A, *self.B).reshape(x.shape[0], -1)

    def _matmul(self, x):
        def khatri_rao(factors):
            out = factors[0]
            for f in factors[1:]:
                out = (out.unsqueeze(1) * f.unsqueeze(0)).reshape(-1, f.shape[-1])
            return out
        return (x @ khatri_rao(list(self.A))) @ khatri_rao(list(self.B)).t()

    def _vmap(self, x):
        def one(xs):
            t = xs.reshape(self.n)
            for eq, f in zip(self.steps, [*self.A, *self.B]):
                t = torch.einsum(eq, t, f)
            return t.reshape(-1)
        return torch.vmap(one)(x)


class CPFamily(LinearFamily):
    name = "cp_linear"
    styles = ("einsum", "oneshot", "matmul", "vmap")
    network = CPLinear

    def sizes(self, rng):
        k = rng.randint(2, 4)
        s = dict(n=_modes(rng, k, 2, 16, 4096), m=_modes(rng, k, 2, 16, 4096), rank=_loguniform(rng, 2, 64))
        return _fit(s, self.cost, [[("rank", 2)]])

    def cost(self, s):
        n, m, R = s["n"], s["m"], s["rank"]
        fi, fo = math.prod(n), math.prod(m)
        flops = 2 * 2 * (fi + fo) * R                       # x2: the one-shot einsum's path may differ
        elements = max(fi * R, fo * R, (fi // n[0]) * R, fo * R // m[-1]) * 2
        return flops, elements, (sum(n) + sum(m)) * R

    def largest(self, s):
        return max(s["n"] + s["m"]) * s["rank"]

    def params(self, s, gen):
        n, m, R = s["n"], s["m"], s["rank"]
        scale = (R * math.prod(n)) ** (-1 / (4 * len(n)))     # Var(W) = 1 / fan_in
        return dict(A=[_randn(gen, x, R, scale=scale) for x in n], B=[_randn(gen, x, R, scale=scale) for x in m])

    def describe(self, s):
        return f"{'x'.join(map(str, s['n']))} -> {'x'.join(map(str, s['m']))}, CP rank {s['rank']}"


# ---------------------------------------------------------------------------------------------------------------
# bilinear and trilinear couplings

class Multilinear(TNModule):
    """Bilinear / trilinear coupling of two or three inputs through one weight tensor (bilinear models: Tenenbaum &
    Freeman 2000; trilinear "tensor fusion": Zadeh et al. 2017): ``einsum("bi,bj,ijk->bk")`` or
    ``einsum("bi,bj,bk,ijkl->bl")``."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.order = s["order"]
        self._one("weight", p["weight"])

    def forward(self, *xs):
        return getattr(self, "_" + self.style)(*xs)

    def _einsum(self, *xs):
        eq = "bi,bj,ijk->bk" if self.order == 2 else "bi,bj,bk,ijkl->bl"
        return torch.einsum(eq, *xs, self.weight)

    def _tensordot(self, *xs):
        t = torch.tensordot(xs[0], self.weight, dims=([1], [0]))          # [B, j, k(, l)]
        for x in xs[1:]:
            t = (t * x.reshape(*x.shape, *[1] * (t.dim() - 2))).sum(1)
        return t

    def _matmul(self, *xs):
        b, w = xs[0].shape[0], self.weight
        t = xs[0] @ w.reshape(w.shape[0], -1)                               # [B, j * rest]
        for x in xs[1:]:
            t = torch.bmm(x.unsqueeze(1), t.reshape(b, x.shape[1], -1)).squeeze(1)
        return t

    def _functional(self, *xs):
        w = self.weight
        if self.order == 2:
            return F.bilinear(xs[0], xs[1], w.permute(2, 0, 1))
        k, l_ = w.shape[2], w.shape[3]
        t = F.bilinear(xs[0], xs[1], w.permute(2, 3, 0, 1).reshape(k * l_, w.shape[0], w.shape[1]))
        return torch.bmm(xs[2].unsqueeze(1), t.reshape(-1, k, l_)).squeeze(1)

    def _vmap(self, *xs):
        eq = "i,j,ijk->k" if self.order == 2 else "i,j,k,ijkl->l"
        return torch.vmap(lambda *v: torch.einsum(eq, *v, self.weight))(*xs)


class MultilinearFamily(Family):
    name = "multilinear"
    styles = ("einsum", "tensordot", "matmul", "functional", "vmap")
    network = Multilinear

    def sizes(self, rng):
        order = rng.choice((2, 3))
        s = dict(order=order, dims=[_loguniform(rng, 2, 64) for _ in range(order + 1)])
        for i, d in enumerate(s["dims"]):
            s[f"d{i}"] = d

        def cost(s):
            s["dims"] = [s[f"d{i}"] for i in range(order + 1)]
            return self.cost(s)
        s = _fit(s, cost, [[(f"d{i}", 2) for i in range(order + 1)]])
        for i in range(order + 1):
            del s[f"d{i}"]
        return s

    def cost(self, s):
        total = math.prod(s["dims"])
        return 2 * total + 4 * total // s["dims"][0], 2 * total // s["dims"][0], total

    def largest(self, s):
        return math.prod(s["dims"])

    def params(self, s, gen):
        return dict(weight=_randn(gen, *s["dims"], scale=math.prod(s["dims"][:-1]) ** -0.5))

    def inputs(self, s, batch, gen):
        return tuple(_randn(gen, batch, d) for d in s["dims"][:-1])

    def out_tail(self, s):
        return (s["dims"][-1],)

    def describe(self, s):
        kind = "bilinear" if s["order"] == 2 else "trilinear"
        return f"{kind} {' x '.join(map(str, s['dims'][:-1]))} -> {s['dims'][-1]}"


# ---------------------------------------------------------------------------------------------------------------
# equivariant-style tensor product

def cg_like(l1: int, l2: int, l3: int, gen: torch.Generator) -> Tensor:
    """A fixed Clebsch-Gordan-like coupling ``[2l1+1, 2l2+1, 2l3+1]``: nonzero only where |m1 +- m2| = |m3| (the
    selection rule of the real CG coefficients), random values there, each output component normalised."""
    cg = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=DTYPE)
    vals = _randn(gen, *cg.shape)
    for i in range(2 * l1 + 1):
        for j in range(2 * l2 + 1):
            for k in range(2 * l3 + 1):
                m1, m2, m3 = i - l1, j - l2, k - l3
                if abs(m1 + m2) == abs(m3) or abs(m1 - m2) == abs(m3):
                    cg[i, j, k] = vals[i, j, k]
    return cg / cg.pow(2).sum((0, 1), keepdim=True).sqrt().clamp_min(1e-12)


class TensorProduct(TNModule):
    """Equivariant-style weighted tensor product (Thomas et al., "Tensor field networks", 2018; Kondor et al.,
    "Clebsch-Gordan nets", 2018; Geiger & Smidt, "e3nn", 2022): features ``[B, U, 2l1+1]`` and ``[B, V, 2l2+1]``
    coupled by a fixed CG-like buffer ``[2l1+1, 2l2+1, 2l3+1]`` and mixed over the channels by weights ``[U, V, W]``:
    ``einsum("bui,bvj,ijk,uvw->bwk")``."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.register_buffer("cg", p["cg"].clone())
        self._one("weight", p["weight"])

    def forward(self, x1, x2):
        return getattr(self, "_" + self.style)(x1, x2)

    def _oneshot(self, x1, x2):
        return torch.einsum("bui,bvj,ijk,uvw->bwk", x1, x2, self.cg, self.weight)

    def _einsum(self, x1, x2):
        t = torch.einsum("bui,ijk->bujk", x1, self.cg)
        t = torch.einsum("bujk,bvj->buvk", t, x2)
        return torch.einsum("buvk,uvw->bwk", t, self.weight)

    def _tensordot(self, x1, x2):
        t = torch.tensordot(x1, self.cg, dims=([2], [0]))                     # [B, U, J, K]
        t = (t.unsqueeze(2) * x2[:, None, :, :, None]).sum(3)                  # [B, U, V, K]
        return torch.tensordot(t, self.weight, dims=([1, 2], [0, 1])).transpose(1, 2)

    def _matmul(self, x1, x2):
        (b, u, i), (_, v, j) = x1.shape, x2.shape
        z = torch.bmm(x1.reshape(b, u * i, 1), x2.reshape(b, 1, v * j))
        z = z.view(b, u, i, v, j).permute(0, 1, 3, 2, 4).reshape(b * u * v, i * j)
        z = (z @ self.cg.reshape(i * j, -1)).view(b, u * v, -1)
        return (z.transpose(1, 2) @ self.weight.reshape(u * v, -1)).transpose(1, 2)

    def _vmap(self, x1, x2):
        return torch.vmap(lambda a, b: torch.einsum("ui,vj,ijk,uvw->wk", a, b, self.cg, self.weight))(x1, x2)


class TensorProductFamily(Family):
    name = "tensor_product"
    styles = ("oneshot", "einsum", "tensordot", "matmul", "vmap")
    network = TensorProduct

    def sizes(self, rng):
        l1, l2 = rng.randint(0, 3), rng.randint(0, 3)
        s = dict(l1=l1, l2=l2, l3=rng.randint(abs(l1 - l2), min(l1 + l2, 3)),
                 u=_loguniform(rng, 2, 64), v=_loguniform(rng, 2, 64), w=_loguniform(rng, 2, 64))
        return _fit(s, self.cost, [[("u", 2), ("v", 2), ("w", 2)]])

    def cost(self, s):
        i, j, k = 2 * s["l1"] + 1, 2 * s["l2"] + 1, 2 * s["l3"] + 1
        u, v, w = s["u"], s["v"], s["w"]
        flops = 2 * (u * v * i * j * k + u * v * k * w + u * i * j * k + u * v * j * k)
        return 2 * flops, max(u * v * i * j, u * v * j * k, u * j * k, w * k), u * v * w + i * j * k

    def largest(self, s):
        return s["u"] * s["v"] * s["w"]

    def params(self, s, gen):
        return dict(cg=cg_like(s["l1"], s["l2"], s["l3"], gen),
                    weight=_randn(gen, s["u"], s["v"], s["w"], scale=(s["u"] * s["v"]) ** -0.5))

    def inputs(self, s, batch, gen):
        return (_randn(gen, batch, s["u"], 2 * s["l1"] + 1), _randn(gen, batch, s["v"], 2 * s["l2"] + 1))

    def out_tail(self, s):
        return (s["w"], 2 * s["l3"] + 1)

    def describe(self, s):
        return f"l={s['l1']} x l={s['l2']} -> l={s['l3']}, channels {s['u']} x {s['v']} -> {s['w']}"


# ---------------------------------------------------------------------------------------------------------------
# attention

class EinsumAttention(TNModule):
    """Multi-head self-attention (Vaswani et al., "Attention is all you need", 2017) written as tensor contractions:
    projections ``[D, H, e]``, scores ``einsum("bhqd,bhkd->bhqk")``, softmax (causal mask optional), values
    ``einsum("bhqk,bhkd->bhqd")`` and the output projection ``[H, e, D]``."""

    def __init__(self, style, s, p):
        super().__init__(style)
        self.causal, self.scale = s["causal"], s["head_dim"] ** -0.5
        if style == "stacked":
            self._stack("qkv", p["qkv"])
        else:
            self._list("qkv", p["qkv"])
        self._one("out", p["out"])
        if self.causal:
            self.register_buffer("mask", torch.ones(s["seq"], s["seq"], dtype=torch.bool).tril())

    def forward(self, x):
        return getattr(self, "_" + self.style)(x)

    def _mask(self, scores):
        return scores.masked_fill(~self.mask, float("-inf")) if self.causal else scores

    def _einsum(self, x):
        q, k, v = (torch.einsum("bsd,dhe->bhse", x, w) for w in self.qkv)
        p = torch.softmax(self._mask(torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale), dim=-1)
        return torch.einsum("bhqd,hde->bqe", torch.einsum("bhqk,bhkd->bhqd", p, v), self.out)

    def _matmul(self, x):
        b, s, dm = x.shape
        h, e = self.out.shape[:2]
        q, k, v = ((x @ w.reshape(dm, h * e)).view(b, s, h, e).transpose(1, 2) for w in self.qkv)
        p = torch.softmax(self._mask(q @ k.transpose(-2, -1) * self.scale), dim=-1)
        return (p @ v).transpose(1, 2).reshape(b, s, h * e) @ self.out.reshape(h * e, dm)

    def _stacked(self, x):
        b, s, _ = x.shape
        h, e = self.out.shape[:2]
        q, k, v = torch.einsum("bsd,tdhe->tbhse", x, self.qkv).reshape(3, b * h, s, e).unbind(0)
        scores = torch.bmm(q, k.transpose(1, 2)).view(b, h, s, s) * self.scale
        p = torch.softmax(self._mask(scores), dim=-1).view(b * h, s, s)
        return torch.einsum("bhqd,hde->bqe", torch.bmm(p, v).view(b, h, s, e), self.out)

    def _tensordot(self, x):
        q, k, v = (torch.tensordot(x, w, dims=([2], [0])).permute(0, 2, 1, 3) for w in self.qkv)
        p = torch.softmax(self._mask(torch.matmul(q, k.transpose(-2, -1)) * self.scale), dim=-1)
        return torch.tensordot(torch.matmul(p, v).permute(0, 2, 1, 3), self.out, dims=([2, 3], [0, 1]))

    def _sdpa(self, x):
        q, k, v = (torch.einsum("bsd,dhe->bhse", x, w) for w in self.qkv)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return torch.einsum("bhqd,hde->bqe", o, self.out)

    def _vmap(self, x):
        def one(xs):
            q, k, v = (torch.einsum("sd,dhe->hse", xs, w) for w in self.qkv)
            p = torch.softmax(self._mask(torch.einsum("hqd,hkd->hqk", q, k) * self.scale), dim=-1)
            return torch.einsum("hqd,hde->qe", torch.einsum("hqk,hkd->hqd", p, v), self.out)
        return torch.vmap(one)(x)


class AttentionFamily(Family):
    name = "attention"
    styles = ("einsum", "matmul", "stacked", "tensordot", "sdpa", "vmap")
    network = EinsumAttention

    def sizes(self, rng):
        s = dict(seq=_loguniform(rng, 2, 128), model=_loguniform(rng, 4, 128), heads=rng.choice((1, 2, 4, 8)),
                 head_dim=_loguniform(rng, 2, 64), causal=rng.random() < 0.5)
        return _fit(s, self.cost, [[("head_dim", 2), ("model", 4)], [("seq", 2)]])

    def cost(self, s):
        S, D, H, e = s["seq"], s["model"], s["heads"], s["head_dim"]
        flops = 2 * 4 * S * D * H * e + 2 * 2 * H * S * S * e + 5 * H * S * S
        return flops, max(2 * H * S * S, 3 * S * H * e, S * D), 4 * D * H * e

    def largest(self, s):
        return s["model"] * s["heads"] * s["head_dim"]

    def params(self, s, gen):
        D, H, e = s["model"], s["heads"], s["head_dim"]
        return dict(qkv=[_randn(gen, D, H, e, scale=D ** -0.5) for _ in range(3)],
                    out=_randn(gen, H, e, D, scale=(H * e) ** -0.5))

    def inputs(self, s, batch, gen):
        return (_randn(gen, batch, s["seq"], s["model"]),)

    def out_tail(self, s):
        return (s["seq"], s["model"])

    def describe(self, s):
        return (f"seq {s['seq']}, model {s['model']}, {s['heads']} heads of {s['head_dim']}"
                f"{', causal' if s['causal'] else ''}")


# ---------------------------------------------------------------------------------------------------------------
# the corpus

FAMILIES: dict[str, Family] = {f.name: f for f in (
    MPSFamily(), TreeFamily(), PEPSFamily(), MERAFamily(), TTFamily(), TuckerFamily(), CPFamily(),
    MultilinearFamily(), TensorProductFamily(), AttentionFamily())}


@dataclass
class CorpusCase:
    """One model of the corpus: ``model(*inputs)`` has shape ``output_shape(batch)``; ``make_inputs(batch)`` draws
    inputs (float64, deterministic in the seed and the batch) at another batch size."""
    seed: int
    family: str
    style: str
    description: str
    model: nn.Module
    inputs: tuple[Tensor, ...]
    sizes: dict
    out_tail: tuple[int, ...]
    cost: dict
    _make: Callable[[int], tuple] = field(repr=False, default=None)

    def make_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return self._make(batch)

    def output_shape(self, batch: int | None = None) -> tuple[int, ...]:
        return (self.sizes["batch"] if batch is None else batch, *self.out_tail)


def batch_for(fam: Family, sizes: dict, style: str, u: float) -> int:
    """The batch for quantile ``u`` of a log-uniform draw up to the largest batch the caps allow the style."""
    flops, elements, _ = fam.style_cost(sizes, style)
    most = max(1, min(MAX_BATCH, int(MAX_FLOPS // max(flops, 1)), int(MAX_ELEMENTS // max(elements, 1))))
    return min(most, int(math.exp(u * math.log(most + 1))))


def draw(seed: int, family: str | None = None, style: str | None = None) -> tuple[Family, str, dict]:
    """The family, style and sizes of seed ``seed`` (``family``/``style`` override the drawn ones). The sizes of a
    family do not depend on the style, but for the batch: each style's batch is drawn (from the same quantile) up
    to what the caps allow that style (``vmap`` copies the weights per sample)."""
    rng = random.Random(seed)
    drawn = rng.choice(sorted(FAMILIES))
    fam = FAMILIES[family or drawn]
    drawn_style = rng.choice(fam.styles)
    if style is not None and style not in fam.styles:
        raise ValueError(f"family {fam.name} has no style {style!r} (styles: {fam.styles})")
    style = style or drawn_style
    sizes = fam.sizes(rng)
    sizes["batch"] = batch_for(fam, sizes, style, rng.random())
    return fam, style, sizes


def shared_parameters(fam: Family, sizes: dict, seed: int) -> dict:
    """The family's parameters for ``sizes``, drawn from ``torch.Generator().manual_seed(seed)``."""
    return fam.params(sizes, torch.Generator().manual_seed(seed))


def input_maker(fam: Family, sizes: dict, seed: int) -> Callable[[int], tuple]:
    def make(batch: int) -> tuple[Tensor, ...]:
        return fam.inputs(sizes, batch, torch.Generator().manual_seed(seed * 100_003 + batch + 1))
    return make


def build(fam: Family | str, style: str, sizes: dict, params: dict) -> nn.Module:
    """The family's model in ``style`` from shared ``params`` (the styles compute the same function)."""
    fam = FAMILIES[fam] if isinstance(fam, str) else fam
    return fam.module(style, sizes, params)


def corpus_model(seed: int, family: str | None = None, style: str | None = None) -> CorpusCase:
    """Case ``seed`` of the corpus (see the module docstring)."""
    fam, style, sizes = draw(seed, family, style)
    params = shared_parameters(fam, sizes, seed)
    make = input_maker(fam, sizes, seed)
    flops, elements, n_params = fam.style_cost(sizes, style)
    batch = sizes["batch"]
    cost = dict(flops=flops * batch, elements=elements * batch, params=n_params)
    desc = f"{fam.name}/{style}: {fam.describe(sizes)}, batch {batch} (~{n_params} params, ~{flops * batch:.2g} flop)"
    return CorpusCase(seed=seed, family=fam.name, style=style, description=desc, model=build(fam, style, sizes, params),
                      inputs=make(batch), sizes=sizes, out_tail=fam.out_tail(sizes), cost=cost, _make=make)
