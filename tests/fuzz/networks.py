"""Random einsum networks for fuzzing, written as small nn.Modules.

``random_network(seed)`` draws a network (a random hypergraph, a lattice, a tree or a random regular graph: the
families of cotengra's generators, written here so that the tests need no more than opt_einsum), decides which
operands are weights (``nn.Parameter``s, so weight-only sub-networks get folded) and which are inputs (most of them
with a batch index at dimension 0), and how the model is written:

- ``einsum``: one ``torch.einsum`` over all operands;
- ``pairwise``: the same network as a chain of pairwise einsums;
- ``matmul``: the same chain with ``tensordot``, or ``permute`` + ``reshape`` + ``matmul`` / ``bmm``.

Sometimes one operand is another one again (the same parameter or input used twice, as in ``x W x^T``).

Every network is small: the largest intermediate of the chain, at the largest batch the checker uses, stays under
``MAX_ELEMENTS``, so one forward takes milliseconds.
"""
from __future__ import annotations

import itertools
import math
import random
import string
from dataclasses import dataclass

import opt_einsum
import torch
import torch.nn as nn

STYLES = ("einsum", "pairwise", "matmul")
MAX_BATCH = 7            # the largest batch the checker calls a network with
MAX_ELEMENTS = 1 << 13   # bound on every operand and intermediate (at MAX_BATCH)
MAX_FLOPS = 1 << 18


@dataclass(frozen=True)
class Step:
    """One pairwise contraction of the chain: operands ``i`` and ``j`` of the working list (removed; the result,
    with indices ``out``, is appended). ``kind``: "einsum", "tensordot", "matmul" or "bmm"."""

    i: int
    j: int
    a: str
    b: str
    out: str
    kind: str


@dataclass(frozen=True)
class NetworkCase:
    """A random network: operand index strings, output, index sizes, which operands are weights, the batch index
    (a letter; the batch size is ``batch``), how the model is written and whether it runs in training mode."""

    seed: int
    family: str
    terms: tuple[str, ...]
    output: str
    sizes: dict
    weights: tuple[bool, ...]
    tied: dict          # operand j -> the earlier operand i whose tensor it uses again
    batch_index: str
    batch: int
    fresh_batch: int    # the other batch size the checker calls it with
    style: str
    steps: tuple[Step, ...]
    train: bool

    @property
    def equation(self) -> str:
        return ",".join(self.terms) + "->" + self.output

    def shape(self, k: int, batch: int) -> tuple[int, ...]:
        return tuple(batch if c == self.batch_index else self.sizes[c] for c in self.terms[k])

    def describe(self) -> str:
        kinds = "" if self.style == "einsum" else " steps " + ",".join(s.kind for s in self.steps)
        roles = "".join("W" if w else "x" for w in self.weights)
        roles += "".join(f", operand {j} is operand {i}" for j, i in self.tied.items())
        sizes = dict(sorted(self.sizes.items()))
        return (f"network seed={self.seed} {self.family} {self.style}{kinds}: {self.equation} operands {roles}; "
                f"batch index {self.batch_index!r} (B={self.batch}, then {self.fresh_batch}) sizes {sizes} "
                f"{'train' if self.train else 'eval'}")


# -- drawing a network ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Graph:
    """A network's structure before roles: each operand's index names (ints), the output's, and each index's size."""

    inputs: tuple[tuple[int, ...], ...]
    output: tuple[int, ...]
    sizes: dict


def _sized(inputs: list[list[int]], output: list[int], d_min: int, d_max: int, rng: random.Random) -> Graph:
    names = {c for t in inputs for c in t} | set(output)
    return Graph(tuple(map(tuple, inputs)), tuple(output), {c: rng.randint(d_min, d_max) for c in sorted(names)})


def random_hypergraph(rng: random.Random) -> Graph:
    """n operands joined by about n*reg/2 random bonds (as opt_einsum.testing.rand_equation), with now and then an
    open index, a hyper-index shared by three or more operands (kept or summed), a trace (an index twice in one
    operand) and a size-1 index."""
    n, reg = rng.randint(2, 6), rng.randint(2, 4)
    inputs: list[list[int]] = [[] for _ in range(n)]
    fresh = iter(range(10 ** 6))
    for _ in range(n * reg // 2):
        i, j = rng.sample(range(n), 2)
        c = next(fresh)
        inputs[i].append(c)
        inputs[j].append(c)
    output = []
    for _ in range(rng.randint(0, 2)):  # open indices
        c = next(fresh)
        inputs[rng.randrange(n)].append(c)
        output.append(c)
    for kept in (False, True):  # hyper-indices
        for _ in range(rng.choice((0, 0, 1, 2) if not kept else (0, 0, 1))):
            c = next(fresh)
            for k in rng.sample(range(n), min(n, rng.randint(2, 3) + (not kept))):
                inputs[k].append(c)
            if kept:
                output.append(c)
    if rng.random() < 0.1:  # a trace
        k = rng.randrange(n)
        c = next(fresh)
        inputs[k] += [c, c]
    for t in inputs:
        rng.shuffle(t)
    return _sized(inputs, output, rng.choice((1, 2, 2, 2)), rng.randint(2, 4), rng)


def lattice(rng: random.Random) -> Graph:
    """A closed 1- or 2-dimensional lattice (PEPS/MPS-like contraction), open or periodic."""
    dims = [rng.randint(2, 4)] if rng.random() < 0.5 else [rng.randint(2, 3), rng.randint(2, 3)]
    cyclic = rng.random() < 0.4
    sites = list(itertools.product(*map(range, dims)))
    inputs: dict = {s: [] for s in sites}
    bond = 0
    for s in sites:
        for axis, n in enumerate(dims):
            if s[axis] + 1 < n or (cyclic and n > 2):
                t = tuple((x + 1) % n if a == axis else x for a, x in enumerate(s))
                inputs[s].append(bond)
                inputs[t].append(bond)
                bond += 1
    return _sized(list(inputs.values()), [], 2, rng.randint(2, 3), rng)


def tree(rng: random.Random) -> Graph:
    """A random tree of n operands (each joined to an earlier one), with up to two open legs."""
    n = rng.randint(2, 8)
    inputs: list[list[int]] = [[] for _ in range(n)]
    for k in range(1, n):
        parent = rng.randrange(k)
        inputs[k].append(k)
        inputs[parent].append(k)
    output = []
    for c in range(n, n + rng.randint(0, min(2, n - 1))):
        inputs[rng.randrange(n)].append(c)
        output.append(c)
    return _sized(inputs, output, 2, rng.randint(2, 4), rng)


def random_regular(rng: random.Random) -> Graph | None:
    """A random regular graph (the pairing model, drawn again until no operand is joined to itself or twice to
    another: every operand has ``reg`` bonds); None after 20 failed pairings."""
    n, reg = rng.randint(3, 8), rng.randint(2, 3)
    n += (n * reg) % 2
    stubs = [k for k in range(n) for _ in range(reg)]
    for _ in range(20):
        rng.shuffle(stubs)
        edges = {tuple(sorted(stubs[k:k + 2])) for k in range(0, len(stubs), 2)}
        if len(edges) == len(stubs) // 2 and all(i != j for i, j in edges):
            break
    else:
        return None
    inputs: list[list[int]] = [[] for _ in range(n)]
    for c, (i, j) in enumerate(sorted(edges)):
        inputs[i].append(c)
        inputs[j].append(c)
    return _sized(inputs, [], 2, rng.randint(2, 3), rng)


GENERATORS = {"rand": random_hypergraph, "lattice": lattice, "tree": tree, "randreg": random_regular}
FAMILIES = tuple(GENERATORS)


def _draw_graph(rng: random.Random) -> tuple[str, Graph]:
    """A family and a graph of it (a failed draw is drawn again)."""
    while True:
        family = rng.choice(FAMILIES)
        graph = GENERATORS[family](rng)
        if graph is not None and all(graph.inputs):
            return family, graph


def _letters(graph: Graph) -> dict:
    """Index names mapped to einsum letters, in order of appearance (the output's last)."""
    names: dict = {}
    for term in [*graph.inputs, graph.output]:
        for name in term:
            names.setdefault(name, string.ascii_letters[len(names)] if len(names) < 52 else None)
    return names


def _roles(n: int, rng: random.Random) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Which operands are weights, and which inputs carry the batch index: at least one batched input."""
    p_weight = rng.choice((0.0, 0.3, 0.5, 0.7))
    weights = [rng.random() < p_weight for _ in range(n)]
    if all(weights):
        weights[rng.randrange(n)] = False
    inputs = [k for k in range(n) if not weights[k]]
    batched = [not weights[k] and rng.random() < 0.85 for k in range(n)]
    if not any(batched):
        batched[rng.choice(inputs)] = True
    return tuple(weights), tuple(batched)


def random_network(seed: int) -> NetworkCase:
    """The network of this seed (deterministic); networks above the size bounds are drawn again."""
    rng = random.Random(seed)
    while True:
        case = _draw_case(seed, rng)
        if case is not None:
            return case


def _draw_case(seed: int, rng: random.Random) -> NetworkCase | None:
    family, graph = _draw_graph(rng)
    names = _letters(graph)
    if len(names) >= len(string.ascii_letters):
        return None
    batch_index = string.ascii_letters[len(names)]
    weights, batched = _roles(len(graph.inputs), rng)
    terms = tuple((batch_index if b else "") + "".join(names[c] for c in t) for t, b in zip(graph.inputs, batched))
    sizes = {names[c]: n for c, n in graph.sizes.items()}
    tied = _tie(terms, weights, sizes, rng)
    output = [names[c] for c in graph.output]
    if rng.random() < 0.9:  # usually the batch stays in the output, usually first
        output.insert(0 if rng.random() < 0.8 else rng.randint(0, len(output)), batch_index)
    if rng.random() < 0.3:
        rng.shuffle(output)
    style = rng.choice(STYLES)
    if style == "matmul" and any(len(set(t)) < len(t) for t in terms):
        style = "pairwise"  # a trace (an index twice in one operand) has no matmul form
    steps = _chain(terms, "".join(output), sizes | {batch_index: MAX_BATCH}, style, rng)
    if steps is None or not _small(terms, "".join(output), sizes | {batch_index: MAX_BATCH}):
        return None
    batch, fresh = rng.sample(range(1, MAX_BATCH + 1), 2)
    return NetworkCase(seed, family, terms, "".join(output), sizes, weights, tied, batch_index, batch, fresh,
                       style, tuple(steps), rng.random() < 0.3)


def written_case(equation: str, sizes: dict, roles: str, batch_index: str, batch: int, fresh_batch: int,
                 style: str = "einsum", tied: dict | None = None, train: bool = False, seed: int = 0) -> NetworkCase:
    """A network written out, as a long run reports one (``roles``: ``W`` a weight, ``x`` an input, per operand);
    a chain's order of pairs is drawn from ``seed``."""
    inputs, output = equation.split("->")
    terms = tuple(inputs.split(","))
    steps = _chain(terms, output, sizes | {batch_index: MAX_BATCH}, style, random.Random(seed))
    assert steps is not None, f"{equation}: every order tried has an intermediate above MAX_ELEMENTS"
    return NetworkCase(seed, "written", terms, output, sizes, tuple(r == "W" for r in roles), tied or {}, batch_index,
                       batch, fresh_batch, style, tuple(steps), train)


def _tie(terms, weights, sizes: dict, rng: random.Random) -> dict:
    """Now and then one operand made another again: a later one of the same role and shape ({j: i})."""
    def shape(t):
        return tuple(sizes.get(c, "B") for c in t)  # the batch index has no size yet
    pairs = [(j, i) for j in range(len(terms)) for i in range(j)
             if weights[i] == weights[j] and shape(terms[i]) == shape(terms[j])]
    return dict([rng.choice(pairs)]) if pairs and rng.random() < 0.25 else {}


def _small(terms, output: str, sizes: dict) -> bool:
    """Every operand, the optimal path's largest intermediate and its cost within the bounds."""
    if any(math.prod(sizes[c] for c in t) > MAX_ELEMENTS for t in terms):
        return False
    _, info = opt_einsum.contract_path(",".join(terms) + "->" + output,
                                       *[tuple(sizes[c] for c in t) for t in terms], shapes=True)
    return info.largest_intermediate <= MAX_ELEMENTS and info.opt_cost <= MAX_FLOPS


# -- the chain of pairwise contractions ---------------------------------------------------------------------------

def _chain(terms, output: str, sizes: dict, style: str, rng: random.Random) -> list[Step] | None:
    """The pairwise steps (a random order, else opt_einsum's greedy one), or None when every order tried has an
    intermediate above MAX_ELEMENTS."""
    if style == "einsum":
        return []
    for order in ("random", "greedy"):
        steps = _steps(list(terms), output, sizes, style, rng, order)
        if steps is not None:
            return steps
    return None


def _steps(work: list[str], output: str, sizes: dict, style: str, rng: random.Random, order: str):
    path = opt_einsum.contract_path(",".join(work) + "->" + output, *[tuple(sizes[c] for c in t) for t in work],
                                    shapes=True, optimize="greedy")[0] if order == "greedy" else None
    steps = []
    while len(work) > 1:
        pair = path[len(steps)] if path else rng.sample(range(len(work)), 2)
        if len(pair) != 2:
            return None
        i, j = sorted(pair)
        a, b = work[i], work[j]
        rest = set(output).union(*[t for k, t in enumerate(work) if k not in (i, j)])
        kept = [c for c in dict.fromkeys(a + b) if c in rest]
        if len(work) == 2:
            kept = list(output)
        out = "".join(kept) if style == "pairwise" else _natural_order(a, b, kept)
        if math.prod(sizes[c] for c in out) > MAX_ELEMENTS:
            return None
        kind = "einsum" if style == "pairwise" else _product_kind(a, b, out, rng)
        steps.append(Step(i, j, a, b, out, kind))
        work = [t for k, t in enumerate(work) if k not in (i, j)] + [out]
    return steps


def _natural_order(a: str, b: str, kept: list[str]) -> str:
    """The indices a matmul or tensordot leaves: the shared kept ones (matmul's batch), then a's, then b's."""
    shared = [c for c in a if c in b and c in kept]
    return "".join(shared + [c for c in a if c not in b and c in kept] + [c for c in b if c not in a and c in kept])


def _product_kind(a: str, b: str, out: str, rng: random.Random) -> str:
    if any(c in b and c in out for c in a):  # a shared index that stays: a batch of matrix products
        return rng.choice(("matmul", "bmm"))
    return rng.choice(("tensordot", "matmul"))


# -- running a step ----------------------------------------------------------------------------------------------

def _sum_unused(x: torch.Tensor, idx: str, keep: str) -> tuple[torch.Tensor, str]:
    """x summed over its indices that are not in ``keep``."""
    dims = tuple(d for d, c in enumerate(idx) if c not in keep)
    if not dims:
        return x, idx
    return x.sum(dim=dims), "".join(c for c in idx if c in keep)


def _group(idx, sizes: dict) -> int:
    """The size of a group of indices in a reshape; -1 where it holds the batch index (sizes has no entry)."""
    return -1 if any(c not in sizes for c in idx) else math.prod(sizes[c] for c in idx)


def _product(x: torch.Tensor, y: torch.Tensor, step: Step, sizes: dict) -> torch.Tensor:
    """Step ``step`` written with tensordot, or with permute + reshape + matmul/bmm (its output in natural order)."""
    x, a = _sum_unused(x, step.a, step.b + step.out)
    y, b = _sum_unused(y, step.b, a + step.out)
    contracted = [c for c in a if c in b and c not in step.out]
    if step.kind == "tensordot":
        return torch.tensordot(x, y, dims=([a.index(c) for c in contracted], [b.index(c) for c in contracted]))
    shared = [c for c in a if c in b and c in step.out]
    free_a, free_b = [c for c in a if c not in b], [c for c in b if c not in a]
    x3 = x.permute([a.index(c) for c in shared + free_a + contracted])
    x3 = x3.reshape(_group(shared, sizes), _group(free_a, sizes), _group(contracted, sizes))
    y3 = y.permute([b.index(c) for c in shared + contracted + free_b])
    y3 = y3.reshape(_group(shared, sizes), _group(contracted, sizes), _group(free_b, sizes))
    z = torch.bmm(x3, y3) if step.kind == "bmm" else torch.matmul(x3, y3)
    return z.reshape([_group(c, sizes) for c in shared + free_a + free_b])


class NetworkModule(nn.Module):
    """A NetworkCase as a module: the weights are parameters ``w<k>`` (k: the operand's position), forward takes the
    other operands in order (a tied operand is neither: it is its twin again)."""

    def __init__(self, case: NetworkCase, generator: torch.Generator):
        super().__init__()
        self.case = case
        for k, is_weight in enumerate(case.weights):
            if is_weight and k not in case.tied:
                w = torch.randn(case.shape(k, 0), generator=generator, dtype=torch.float64)
                self.register_parameter(f"w{k}", nn.Parameter(w))

    def operands(self, inputs) -> list[torch.Tensor]:
        """All operands in order: the weights, ``inputs`` and tied operands interleaved."""
        it, ops = iter(inputs), []
        for k, w in enumerate(self.case.weights):
            ops.append(ops[self.case.tied[k]] if k in self.case.tied else getattr(self, f"w{k}") if w else next(it))
        return ops

    def forward(self, *inputs):
        ops = self.operands(inputs)
        if self.case.style == "einsum":
            return torch.einsum(self.case.equation, *ops)
        for step in self.case.steps:
            x, y = ops[step.i], ops[step.j]
            ops = [t for k, t in enumerate(ops) if k not in (step.i, step.j)]
            if step.kind == "einsum":
                ops.append(torch.einsum(f"{step.a},{step.b}->{step.out}", x, y))
            else:
                ops.append(_product(x, y, step, self.case.sizes))
        last = self.case.steps[-1].out
        return ops[0].permute([last.index(c) for c in self.case.output])

    def extra_repr(self) -> str:
        return self.case.describe()


def network_inputs(case: NetworkCase, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Float64 inputs of the network (its non-weight operands) at this batch size."""
    return tuple(torch.randn(case.shape(k, batch), generator=generator, dtype=torch.float64)
                 for k, w in enumerate(case.weights) if not w and k not in case.tied)


def network_trial(seed: int) -> tuple[str, nn.Module, tuple, tuple]:
    """The network of this seed as (description, float64 module in its mode, example inputs, fresh inputs)."""
    case = random_network(seed)
    g = torch.Generator().manual_seed(seed)
    model = NetworkModule(case, g).train(case.train)
    return case.describe(), model, network_inputs(case, case.batch, g), network_inputs(case, case.fresh_batch, g)
