"""Contraction path search for large tensor networks (tens to about a thousand tensors), under one time budget.

The searches are opt_einsum's (Smith & Gray 2018, "opt_einsum - A Python package for optimizing contraction
order for einsum-like expressions", JOSS 3(26) 753) and, when it is installed, cotengra's hyper-optimiser (Gray &
Kourtis 2021, "Hyper-optimized tensor network contraction", Quantum 5, 410); this module does not search by itself.
Its own part is how they are combined:

1. **One metric.** Every candidate is scored by :func:`contraction_cost` — the sum, over the pairwise contractions,
   of the product of the sizes of all indices involved — in exact integer arithmetic. opt_einsum's own ``flops``
   count doubles the steps that sum an index, so its searches rank trees slightly differently; their results are
   always re-scored.
2. **A portfolio under one wall-clock budget.** opt_einsum's ``greedy``; greedy trials — opt_einsum's
   ``ssa_greedy_optimize`` with the score ``size12 - costmod * (size1 + size2)``, optionally multiplied by
   Gaussian noise (its "memory-removed-jitter", generalised): a few noise-free costmods first, then costmod and
   noise drawn at random, later half of the time near the best trial's (cotengra's hyper-optimised greedy samples
   a costmod and a temperature likewise). The costmod range is wider than cotengra's [0.1, 4]: large values win on
   lattices and circuits (greedy on the sycamore circuit: 10^21.8 with costmod 1, 10^18.8 with 6; on the cubic
   lattice 10^26.9 with 1, 10^16.1 at best with 16 and noise). Noise rather than opt_einsum's Boltzmann
   ``thermal_chooser`` randomizes: about as good, and 3x faster on the hyperedge-heavy qucirc circuit (0.65 s a
   trial against 2.2 s). ``DynamicProgramming`` (Pfeifer, Haegeman & Verstraete 2014, Phys. Rev. E 90, 033315) —
   exact and in-process for small networks, in a forked child process killed at the deadline for larger ones.
   cotengra's ``HyperOptimizer`` when importable.
3. **Subtree reconfiguration** (the local search of Gray & Kourtis 2021, written here as a composition of
   opt_einsum's exact search): each sub-tree of the best trees, cut breadth first to at most ``k`` frontier
   tensors, is re-solved by ``DynamicProgramming(minimize="flops")`` — whose objective is exactly this module's
   metric — and replaced when that is cheaper. ``k`` grows (5, 6, 8, 10, 12) while the candidate trees are halved
   after each size (successive halving), so cheap passes run on many trees and expensive ones only on the best.

Paths are in opt_einsum's format: a list of tuples of positions in a shrinking list of terms, each contraction's
result appended at the end. :class:`PathSearch` is the search as an opt_einsum ``PathOptimizer``; importing tcomp
registers it as ``optimize="tcomp"`` (a one-second budget), so ``opt_einsum.contract(eq, *arrays, optimize="tcomp")``
uses it.
"""
from __future__ import annotations

import math
import multiprocessing
import operator
import random
import sys
import time
import warnings
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import opt_einsum

__all__ = ["PathSearch", "SearchResult", "contraction_cost", "search"]

EXACT_MAX = 10                    # up to this many tensors: exact dp over all subsets (outer products too), done
DP_CHILD_MAX = 256                # dp child process up to this many tensors (mps_mpo, 200 tensors: dp takes 25 s)
TRIAL_SHARE = 0.5                 # share of the remaining budget for greedy trials
COTENGRA_SHARE = 0.5              # share of the budget for cotengra's hyper-optimiser, when it is installed
KEEP_TREES = 4                    # distinct cheapest trees kept as starting points for reconfiguration
RECONF_SIZES = (5, 6, 8, 10, 12)  # frontier sizes of subtree reconfiguration, in turn
NEGLIGIBLE = 1e-9                 # sub-trees cheaper than this fraction of the whole tree are not re-solved
COSTMOD_SWEEP = (3.0, 10.0, 0.3, 30.0, 0.1)  # the first greedy trials: these costmods, no noise
EXPLORE_TRIALS = 8                # random greedy trials before half of them perturb the best one's parameters
COSTMOD_RANGE = (0.1, 32.0)       # randomized greedy trials: costmod, log-uniform
NOISE_RANGE = (1e-3, 1e-1)        # randomized greedy trials: relative standard deviation of the noise, log-uniform


# -- inputs --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Network:
    """A network over integer index labels: index sets per term, the output set, exact integer sizes.

    Integers, not opt_einsum's one-character symbols: a set of integers iterates in the same order in every
    process, while strings hash differently per process (``PYTHONHASHSEED``), and opt_einsum's greedy and dp break
    ties in set order — with string labels, a fixed seed would not give the same path twice."""

    inputs: tuple[frozenset, ...]
    output: frozenset
    sizes: dict


def _network(inputs, output, size_dict) -> _Network:
    """Validate a network given by index names (strings of one-character names, or sequences of hashable names)
    and number the names in order of first appearance."""
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise TypeError(f"inputs must be a list of index strings or tuples, got {type(inputs).__name__}")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: a network needs at least one tensor")
    for k, term in enumerate([*inputs, output]):
        if isinstance(term, bytes) or not isinstance(term, (str, Sequence)):
            what = "output" if k == len(inputs) else f"inputs[{k}]"
            raise TypeError(f"{what} must be a string or a sequence of index names, got {type(term).__name__}")
    labels: dict = {}
    for term in inputs:
        for name in term:
            labels.setdefault(name, len(labels))
    out = tuple(output)
    if len(set(out)) != len(out):
        raise ValueError(f"output repeats an index: {list(out)}")
    missing = [name for name in out if name not in labels]
    if missing:
        raise ValueError(f"output indices {missing} appear in no input")
    sizes = {}
    for name, label in labels.items():
        if name not in size_dict:
            raise ValueError(f"index {name!r} has no size in size_dict")
        try:
            size = operator.index(size_dict[name])
        except TypeError:
            raise TypeError(f"size of index {name!r} must be an integer, got {size_dict[name]!r}") from None
        if size < 1:
            raise ValueError(f"size of index {name!r} must be at least 1, got {size}")
        sizes[label] = size
    return _Network(tuple(frozenset(labels[i] for i in term) for term in inputs),
                    frozenset(labels[i] for i in out), sizes)


def _size(indices, sizes: dict) -> int:
    return math.prod(sizes[i] for i in indices)


def _log10(total: int) -> float:
    return math.log10(total) if total > 0 else float("-inf")


# -- the metric ----------------------------------------------------------------------------------------------

def contraction_cost(inputs: list, output, size_dict: dict, path: list[tuple[int, ...]]) -> float:
    """log10 of the cost of contracting the network along ``path``.

    The cost is the sum, over the pairwise contractions, of the product of the sizes of all indices involved in
    that contraction (the union of both operands' indices). A step with more than two positions is taken as
    pairwise contractions from left to right; a single-position step (summing indices no other tensor holds)
    costs the size of its operand. The sum is an exact Python integer, so index sizes of any magnitude are fine;
    an empty sum (one tensor, empty path) gives ``-inf``.

    ``inputs``: one string or sequence of index names per tensor; ``output``: the output indices; ``path``:
    opt_einsum format (positions in the shrinking list of terms, each result appended at the end).

    Complexity: O(s · t) set operations for s steps and t live terms.
    """
    net = _network(inputs, output, size_dict)
    terms = list(net.inputs)
    total = 0
    for step, contraction in enumerate(path):
        positions = tuple(contraction)
        if not positions or len(set(positions)) != len(positions) or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(terms) for p in positions):
            raise ValueError(f"path step {step} {positions} is not a set of distinct positions in "
                             f"0..{len(terms) - 1}")
        operands = [terms[p] for p in positions]
        for p in sorted(positions, reverse=True):
            terms.pop(p)
        needed_elsewhere = net.output.union(*terms)
        acc = operands[0]
        if len(operands) == 1:
            total += _size(acc, net.sizes)
        for k, other in enumerate(operands[1:], start=2):
            union = acc | other
            total += _size(union, net.sizes)
            acc = union & needed_elsewhere.union(*operands[k:])
        terms.append(acc & needed_elsewhere)
    if len(terms) != 1:
        raise ValueError(f"path leaves {len(terms)} terms: it must contract the network to a single tensor")
    return _log10(total)


# -- contraction trees ---------------------------------------------------------------------------------------

def _pairs(ssa_path, n: int) -> list[tuple[int, int]]:
    """An SSA path with steps of any length as SSA pairs: longer steps split left to right, single-position
    steps dropped (what they sum is summed by the next pairwise contraction instead)."""
    pairs: list[tuple[int, int]] = []
    alias: dict[int, int] = {}
    ssa = n
    for contraction in ssa_path:
        acc, *rest = (alias.get(i, i) for i in contraction)
        for other in rest:
            pairs.append((acc, other))
            acc = n + len(pairs) - 1
        alias[ssa] = acc
        ssa += 1
    return pairs


class _Tree:
    """A binary contraction tree: leaves ``0..n-1``; internal nodes with their children, legs and cost.

    A node's legs are the indices of its sub-tree's leaves that are also held outside the sub-tree or by the
    output; its cost is the product of the sizes of its children's legs together (the metric's term for it). The
    metric depends only on the tree, not on the order in which independent nodes are contracted, and a node's
    legs only on its set of leaves — so a node id, once made, never changes meaning.
    """

    def __init__(self, net: _Network):
        self.net = net
        # how many holders (tensors, plus the output) each index has overall, and inside each node's sub-tree
        self.holders = Counter(i for term in net.inputs for i in term)
        self.holders.update(net.output)
        self.legs: dict[int, frozenset] = dict(enumerate(net.inputs))
        self.inside: dict[int, dict] = {k: dict.fromkeys(term, 1) for k, term in enumerate(net.inputs)}
        self.children: dict[int, tuple[int, int]] = {}
        self.parent: dict[int, int] = {}
        self.cost: dict[int, int] = {}
        self.next_id = len(net.inputs)
        self.root = 0

    @classmethod
    def from_ssa(cls, net: _Network, ssa_path) -> "_Tree":
        """Build from an SSA path (inputs 0..n-1, results numbered on), steps of any length."""
        tree = cls(net)
        for a, b in _pairs(ssa_path, len(net.inputs)):
            tree.join(a, b)
        roots = [k for k in tree.legs if k not in tree.parent]
        if len(roots) != 1:
            raise ValueError(f"path leaves {len(roots)} terms: it must contract the network to a single tensor")
        tree.root = roots[0]
        return tree

    @classmethod
    def from_path(cls, net: _Network, path) -> "_Tree":
        return cls.from_ssa(net, opt_einsum.paths.linear_to_ssa([tuple(c) for c in path]))

    def join(self, a: int, b: int) -> int:
        """Add the node contracting ``a`` and ``b``; return its id."""
        union = self.legs[a] | self.legs[b]
        inside_a, inside_b = self.inside[a], self.inside[b]
        inside = {i: inside_a.get(i, 0) + inside_b.get(i, 0) for i in union}
        node = self.next_id
        self.next_id += 1
        self.legs[node] = frozenset(i for i, c in inside.items() if c < self.holders[i])
        self.inside[node] = {i: inside[i] for i in self.legs[node]}
        self.children[node] = (a, b)
        self.parent[a] = self.parent[b] = node
        self.cost[node] = _size(union, self.net.sizes)
        return node

    def total(self) -> int:
        return sum(self.cost.values())

    def path(self) -> list[tuple[int, ...]]:
        """The tree as an opt_einsum path (children before parents, depth first from the root)."""
        n = len(self.net.inputs)
        if n == 1:
            return [(0,)]
        ids: dict[int, int] = {k: k for k in range(n)}
        pairs: list[tuple[int, int]] = []
        stack = [(self.root, False)]
        while stack:
            node, ready = stack.pop()
            if node in ids:
                continue
            a, b = self.children[node]
            if ready:
                pairs.append((ids[a], ids[b]))
                ids[node] = n + len(pairs) - 1
            else:
                stack += [(node, True), (b, False), (a, False)]
        return [tuple(c) for c in opt_einsum.paths.ssa_to_linear(pairs)]

    def copy(self) -> "_Tree":
        new = _Tree.__new__(_Tree)
        new.net, new.holders, new.root, new.next_id = self.net, self.holders, self.root, self.next_id
        new.legs, new.inside = dict(self.legs), dict(self.inside)
        new.children, new.parent, new.cost = dict(self.children), dict(self.parent), dict(self.cost)
        return new

    def frontier(self, node: int, k: int) -> tuple[list[int], list[int]]:
        """Cut the sub-tree under ``node`` to at most ``k`` frontier nodes, opening nodes breadth first.

        Breadth first gives balanced windows; opening the costliest node first instead (tried) cuts deep
        caterpillars whose re-solving finds far less: on the benchmark's lattices and circuits it ended 1 to 10
        orders of magnitude higher, and slower. Returns (frontier, opened internal nodes, ``node`` first)."""
        opened = [node]
        queue = deque(self.children[node])
        frontier: list[int] = []
        while queue and len(queue) + len(frontier) < k:
            c = queue.popleft()
            if c in self.children:
                opened.append(c)
                queue.extend(self.children[c])
            else:
                frontier.append(c)
        return frontier + list(queue), opened

    def replace(self, node: int, frontier: list[int], opened: list[int], pairs) -> None:
        """Replace the nodes ``opened`` (``node`` and the nodes under it down to ``frontier``) by the SSA pairs
        over ``frontier``."""
        parent = self.parent.pop(node, None)
        for c in opened:
            for g in self.children.pop(c):
                del self.parent[g]
            del self.legs[c], self.inside[c], self.cost[c]
        ids = list(frontier)
        for a, b in pairs:
            ids.append(self.join(ids[a], ids[b]))
        top = ids[-1]
        if parent is None:
            self.root = top
        else:
            self.parent[top] = parent
            self.children[parent] = tuple(top if c == node else c for c in self.children[parent])


def _subproblem_cost(tree: _Tree, frontier: list[int], output: frozenset, pairs) -> int:
    """Cost of the nodes SSA pairs over ``frontier`` would add (legs as in :meth:`_Tree.join`)."""
    sizes = tree.net.sizes
    holders = Counter(i for f in frontier for i in tree.legs[f])
    holders.update(output)
    legs = [tree.legs[f] for f in frontier]
    inside = [dict.fromkeys(tree.legs[f], 1) for f in frontier]
    total = 0
    for a, b in pairs:
        union = legs[a] | legs[b]
        total += _size(union, sizes)
        count = {i: inside[a].get(i, 0) + inside[b].get(i, 0) for i in union}
        kept = frozenset(i for i, c in count.items() if c < holders[i])
        legs.append(kept)
        inside.append({i: count[i] for i in kept})
    return total


# -- the searches --------------------------------------------------------------------------------------------

def _exact_pairs(inputs: list[frozenset], output: frozenset, sizes: dict, cap: int, outer: bool):
    """The cheapest tree under the metric (without outer products unless ``outer``) as SSA pairs, by opt_einsum's
    dp.

    dp with ``minimize="flops"`` sums exactly this module's per-node cost. ``cap`` is the cost of a known tree: it
    bounds the search in one pass instead of dp's default of raising a small cap step by step.
    Complexity: O(3^n) pairs of subsets for n tensors in the worst case; far fewer under the cap."""
    dp = opt_einsum.DynamicProgramming(minimize="flops", cost_cap=cap, search_outer=outer)
    return _pairs(opt_einsum.paths.linear_to_ssa(dp(inputs, output, sizes)), len(inputs))


def _reconfigure(tree: _Tree, k: int, deadline: float) -> bool:
    """Subtree reconfiguration: re-solve every sub-tree cut to ``k`` frontier nodes exactly; keep improvements.

    Visits the internal nodes costliest first and repeats passes until one improves nothing or the deadline
    passes; returns whether it converged. A sub-tree already re-solved for the same frontier and nodes is not
    solved again, nor one cheaper than ``NEGLIGIBLE`` of the whole. Each visit is one dp over at most ``k``
    tensors, capped at the sub-tree's current cost: O(3^k) pairs of subsets at worst, so a pass is O(n · 3^k).
    """
    settled: set[tuple[frozenset, frozenset]] = set()
    longest = 0.0  # the longest dp so far: none is started that would likely end past the deadline
    while True:
        improved = False
        floor = tree.total() * NEGLIGIBLE
        for _, node in sorted((-c, v) for v, c in tree.cost.items()):
            now = time.perf_counter()
            if now + longest > deadline:
                return False
            if node not in tree.children:  # replaced earlier in this pass
                continue
            frontier, opened = tree.frontier(node, k)
            key = (frozenset(frontier), frozenset(opened))
            current = sum(tree.cost[c] for c in opened)
            if len(frontier) < 3 or key in settled or current < floor:
                continue
            output = tree.legs[node]
            legs = [tree.legs[f] for f in frontier]
            sizes = {i: tree.net.sizes[i] for i in frozenset().union(*legs)}
            pairs = _exact_pairs(legs, output, sizes, current, outer=False)
            longest = max(longest, time.perf_counter() - now)
            if _subproblem_cost(tree, frontier, output, pairs) < current:
                tree.replace(node, frontier, opened, pairs)
                improved = True
            else:
                settled.add(key)
        if not improved:
            return True


def _greedy_score(costmod: float, noise: float, rng: random.Random):
    """A score for opt_einsum's greedy: ``size12 - costmod * (size1 + size2)`` (costmod 1 is its 'memory-removed'),
    multiplied by ``N(1, noise)`` drawn from ``rng`` when ``noise`` is not 0."""
    def score(size12, size1, size2, k12, k1, k2):
        return (size12 - costmod * (size1 + size2)) * (rng.gauss(1.0, noise) if noise else 1.0)
    return score


def _greedy_tree(net: _Network, costmod: float, noise: float, rng: random.Random) -> _Tree:
    """opt_einsum's greedy with :func:`_greedy_score`. Complexity: O(n · c log n) for n tensors and c candidate
    pairs per step."""
    ssa = opt_einsum.paths.ssa_greedy_optimize(list(net.inputs), net.output, net.sizes,
                                               cost_fn=_greedy_score(costmod, noise, rng))
    return _Tree.from_ssa(net, ssa)


def _trial_parameters(rng: random.Random, trial: int, best: tuple[int, float, float] | None) -> tuple[float, float]:
    """(costmod, noise) of greedy trial number ``trial``, given the (cost, costmod, noise) of the best trial so far.

    First the noise-free costmods of ``COSTMOD_SWEEP``; then draws from ``COSTMOD_RANGE`` × ``NOISE_RANGE``
    (log-uniform), after ``EXPLORE_TRIALS`` of them half of the time a perturbation of the best trial's
    parameters instead (costmod × e^N(0, 0.3), noise × e^N(0, 0.7), within the ranges). Noise-free trials keep
    greedy's tie-breaking (by tensor number, which follows the network's own order): the best choice on the qucirc
    circuit (10^19.8, against 10^21.7 at best with noise, costmods 4 and 16). Noise explores: the best choice on
    the cubic lattice (10^16.1 against 10^24.4, costmod 16)."""
    if trial < len(COSTMOD_SWEEP):
        return COSTMOD_SWEEP[trial], 0.0
    if best is not None and trial >= len(COSTMOD_SWEEP) + EXPLORE_TRIALS and rng.random() < 0.5:
        _, costmod, noise = best
        costmod = min(max(costmod * math.exp(rng.gauss(0.0, 0.3)), COSTMOD_RANGE[0]), COSTMOD_RANGE[1])
        if noise:
            noise = min(max(noise * math.exp(rng.gauss(0.0, 0.7)), NOISE_RANGE[0]), NOISE_RANGE[1])
        return costmod, noise
    return (math.exp(rng.uniform(*map(math.log, COSTMOD_RANGE))),
            math.exp(rng.uniform(*map(math.log, NOISE_RANGE))))


def _dp_child(conn, net: _Network, cap: int) -> None:
    """Child process: opt_einsum's dp on the whole network; sends its SSA pairs back."""
    conn.send(_exact_pairs(list(net.inputs), net.output, net.sizes, cap, outer=False))
    conn.close()


class _DpChild:
    """opt_einsum's dp in a forked child process, so that it can be stopped at the deadline.

    Fork, not spawn: the child needs nothing but what is already in memory, and starts in milliseconds."""

    def __init__(self, net: _Network, cap: int):
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_dp_child, args=(child_conn, net, cap), daemon=True)
        with warnings.catch_warnings():  # Python 3.12+ warns on fork in a threaded process; the child runs only
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)  # dp
            self.proc.start()
        child_conn.close()

    @staticmethod
    def available() -> bool:
        """Whether this process can fork a child (POSIX, and not itself a daemonic multiprocessing worker)."""
        return "fork" in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon

    def result(self, deadline: float):
        """dp's SSA pairs, or None when dp did not finish by ``deadline`` (the child is then killed)."""
        try:
            if self.conn.poll(max(0.0, deadline - time.perf_counter())):
                return self.conn.recv()
            return None
        except EOFError:  # the child died (for instance out of memory)
            return None
        finally:
            self.proc.kill()
            self.proc.join()
            self.conn.close()


def _cotengra_path(net: _Network, seconds: float):
    """The path of cotengra's HyperOptimizer after ``seconds``, or None when cotengra is not installed."""
    try:
        import cotengra
    except ImportError:
        return None
    optimizer = cotengra.HyperOptimizer(minimize="flops", max_time=seconds, max_repeats=10**9, parallel=False,
                                        progbar=False)
    symbol = opt_einsum.get_symbol
    return optimizer([tuple(symbol(i) for i in sorted(t)) for t in net.inputs],
                     tuple(symbol(i) for i in sorted(net.output)), {symbol(i): d for i, d in net.sizes.items()})


@dataclass
class SearchResult:
    """The chosen path and how it was found.

    ``log10_cost``: :func:`contraction_cost` of ``path``; ``method``: the strategy that found it; ``seconds``: the
    search's wall time; ``trials``: one ``(method, log10_cost, seconds since the start)`` per strategy run, the
    cost ``nan`` for a dp stopped at the deadline."""

    path: list[tuple[int, ...]]
    log10_cost: float
    method: str
    seconds: float
    trials: list[tuple[str, float, float]] = field(default_factory=list)


class _Portfolio:
    """The cheapest distinct trees found so far and the record of every strategy run."""

    def __init__(self, start: float, progress: bool):
        self.start, self.progress = start, progress
        self.trees: list[tuple[int, str, _Tree]] = []  # (cost, method, tree), distinct costs, cheapest first
        self.trials: list[tuple[str, float, float]] = []

    def add(self, method: str, tree: _Tree) -> None:
        cost = tree.total()
        if all(c != cost for c, _, _ in self.trees):
            self.trees.append((cost, method, tree))
            self.trees.sort(key=operator.itemgetter(0))
            del self.trees[KEEP_TREES:]

    def record(self, method: str, cost: float) -> None:
        elapsed = time.perf_counter() - self.start
        self.trials.append((method, cost, elapsed))
        if self.progress:
            print(f"[pathsearch] {elapsed:7.2f} s  {method:<40} log10 cost {cost:8.3f}   "
                  f"best {_log10(self.trees[0][0]):.3f}", file=sys.stderr)


def search(inputs: list, output, size_dict: dict, *, time_budget: float = 10.0, seed: int = 0,
           progress: bool = False, max_trials: int = 4096) -> SearchResult:
    """The cheapest contraction path found within ``time_budget`` seconds, under :func:`contraction_cost`.

    Order of work: opt_einsum's greedy; dp over all subsets (outer products included) when the network has at
    most ``EXACT_MAX`` tensors, which ends the search — exact under the metric when every index is held by two
    tensors or by the output (dp sums an index only one tensor holds before any pairwise step, which the metric
    does not count; its tree is re-scored and greedy's kept if cheaper). Otherwise: dp in a forked child process
    (up to ``DP_CHILD_MAX`` tensors, killed at the deadline); cotengra's hyper-optimiser for ``COTENGRA_SHARE`` of
    the budget when it is installed; greedy trials (at most ``max_trials``) for ``TRIAL_SHARE`` of what remains;
    subtree reconfiguration of the ``KEEP_TREES`` cheapest trees, with frontiers of ``RECONF_SIZES`` tensors and
    the candidates halved after each size, until it converges or the deadline passes; last, dp's tree if it
    finished.

    The result is never costlier than opt_einsum's greedy path. It is a function of the network and ``seed``
    alone when the search completes before the deadline (all trials run, every reconfiguration converges, dp
    finishes); otherwise it depends on how much work fit in the budget. No greedy trial or sub-tree dp is started
    that would likely end past the deadline (judged by the longest one so far), so the budget is overrun by
    little more than the spread of their run times. ``progress`` prints each strategy's result to stderr.
    """
    if not time_budget > 0:
        raise ValueError(f"time_budget must be positive, got {time_budget}")
    if max_trials < 0:
        raise ValueError(f"max_trials must be non-negative, got {max_trials}")
    start = time.perf_counter()
    deadline = start + time_budget
    net = _network(inputs, output, size_dict)
    found = _Portfolio(start, progress)

    def found_tree(method: str, tree: _Tree) -> None:
        found.add(method, tree)
        found.record(method, _log10(tree.total()))

    greedy = _Tree.from_path(net, opt_einsum.paths.greedy(list(net.inputs), net.output, net.sizes))
    found_tree("greedy", greedy)
    n = len(net.inputs)
    if n <= 2:
        return _result(net, found, start)
    if n <= EXACT_MAX:
        pairs = _exact_pairs(list(net.inputs), net.output, net.sizes, greedy.total(), outer=True)
        found_tree("dp (exact)", _Tree.from_ssa(net, pairs))
        return _result(net, found, start)

    dp = _DpChild(net, greedy.total()) if n <= DP_CHILD_MAX and _DpChild.available() else None
    path = _cotengra_path(net, COTENGRA_SHARE * time_budget)
    if path is not None:
        found_tree("cotengra", _Tree.from_path(net, path))

    _greedy_trials(net, found, seed, max_trials, time.perf_counter() + TRIAL_SHARE * (deadline - time.perf_counter()),
                   deadline)
    _reconfigure_best(found, deadline)
    if dp is not None:
        pairs = dp.result(deadline)
        if pairs is None:
            found.record("dp (stopped at the deadline)", float("nan"))
        else:
            found_tree("dp", _Tree.from_ssa(net, pairs))
    return _result(net, found, start)


def _greedy_trials(net: _Network, found: _Portfolio, seed: int, max_trials: int, end: float,
                   deadline: float) -> None:
    """Greedy trials (parameters by :func:`_trial_parameters`) until ``end``; none is started that would likely
    end past ``deadline``."""
    best: tuple[int, float, float] | None = None
    done, longest = 0, 0.0
    for trial in range(max_trials):
        now = time.perf_counter()
        if now > end or now + longest > deadline:
            break
        rng = random.Random(f"{seed}:{trial}")
        costmod, noise = _trial_parameters(rng, trial, best)
        try:
            tree = _greedy_tree(net, costmod, noise, rng)
        except OverflowError:  # a tensor beyond float range: the score cannot be computed
            break
        longest = max(longest, time.perf_counter() - now)
        found.add(f"greedy (costmod {costmod:.3g}{f', noise {noise:.2g}' if noise else ''})", tree)
        if best is None or tree.total() < best[0]:
            best = (tree.total(), costmod, noise)
        done += 1
    if done:
        swept = min(done, len(COSTMOD_SWEEP))
        found.record(f"greedy trials ({swept} costmods, {done - swept} random)", _log10(best[0]))


def _reconfigure_best(found: _Portfolio, deadline: float) -> None:
    """Subtree reconfiguration of the kept trees, frontier sizes in turn, keeping the better half after each."""
    candidates = [(method, tree.copy()) for _, method, tree in found.trees]
    for k in RECONF_SIZES:
        for method, tree in candidates:
            converged = _reconfigure(tree, k, deadline)
            found.add(f"{method} + subtree-reconf", tree.copy())
            if not converged:
                found.record(f"subtree-reconf k={k} (stopped at the deadline)", _log10(found.trees[0][0]))
                return
        candidates.sort(key=lambda c: c[1].total())
        del candidates[max(1, len(candidates) // 2):]
        found.record(f"subtree-reconf k={k}", _log10(candidates[0][1].total()))


def _result(net: _Network, found: _Portfolio, start: float) -> SearchResult:
    _, method, tree = found.trees[0]
    path = tree.path()
    inputs = [tuple(term) for term in net.inputs]
    cost = contraction_cost(inputs, tuple(net.output), net.sizes, path)
    return SearchResult(path, cost, method, time.perf_counter() - start, found.trials)


class PathSearch(opt_einsum.paths.PathOptimizer):
    """:func:`search` as an opt_einsum path optimizer: ``opt_einsum.contract(eq, *arrays,
    optimize=PathSearch(time_budget=2.0))``. opt_einsum's ``memory_limit`` is not supported (the search minimises
    :func:`contraction_cost` alone): a limit raises ValueError rather than being ignored."""

    def __init__(self, time_budget: float = 1.0, seed: int = 0):
        self.time_budget = time_budget
        self.seed = seed

    def __call__(self, inputs, output, size_dict, memory_limit=None) -> list[tuple[int, ...]]:
        if memory_limit is not None:
            raise ValueError("tcomp's path search takes no memory_limit: it minimises the contraction cost alone")
        # opt_einsum passes index sets; their order means nothing, but sorted they number alike in every process
        terms = [sorted(term, key=str) for term in inputs]
        return search(terms, sorted(output, key=str), size_dict, time_budget=self.time_budget, seed=self.seed).path


try:
    opt_einsum.paths.register_path_fn("tcomp", PathSearch())
except KeyError:  # already registered (this module imported again)
    pass
