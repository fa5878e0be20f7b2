"""Contraction planning as a library: the best plan of a Network, and of every Network of a Program.

Path search is opt_einsum's (Gray & Kourtis 2021; Smith & Gray 2018): exhaustive ``optimal`` and ``dp``
(dynamic programming over connected subgraphs) for small networks, ``greedy`` and ``random-greedy`` for large
ones, and cotengra's hyper-optimiser when it is installed. tcomp does not search itself: it prices every candidate
path with its own cost model (:mod:`tcomp.cost` — FLOPs, memory traffic, the transposition copies the lowering
would need, kernel launches; constant-only sub-trees folded once) after choosing each step's layout
(:mod:`tcomp.contract.plan`), and keeps the cheapest. opt_einsum's ``auto`` path — what ``torch.einsum`` itself would
use — is always among the candidates, so the chosen plan is never worse than it under tcomp's model.

Complexity: ``optimal`` is O(n!) and only used up to 6 operands; ``dp`` up to 12; beyond that opt_einsum's greedy
and tcomp's time-bounded large-network search (:mod:`tcomp.contract.pathsearch`, one second per network).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import opt_einsum

from tcomp.cost.machine import machine_model
from tcomp.cost.model import MachineModel
from tcomp.ir import ACC, Network, Program, Value
from tcomp.ir.symbolic import Point, decision_point, point_key

from .pathsearch import search
from .plan import ContractionPlan, decision_sizes, default_pairs, opt_einsum_pairs, plan_network, prepare, ssa_path

OPTIMAL_MAX = 6  # networks up to this many operands are also planned exhaustively (every pair, outer products too)
_DP_MAX = 12  # networks up to this many operands are planned by dynamic programming (exactly, under FLOPs)


def candidate_trees(net: Network, at: Point | int | None = None, time_budget: float = 1.0, quick: bool = False
                    ) -> list[tuple[str, list[tuple[int, int]]]]:
    """Contraction trees worth pricing for ``net``: (method name, pairs of term ids), deduplicated, each searched
    with the sizes at the decision point of ``at``.

    ``quick`` limits the search to opt_einsum's ``auto`` and ``greedy`` (and constants-first): what the
    fuse_networks pass uses to decide whether a merge pays, many times per program."""
    kept, _ = prepare(net)
    n = len(kept)
    if n < 2:
        return [("single operand", [])]
    if n == 2:
        return [("pair", [(0, 1)])]
    strategies: list[tuple[str, object]] = [("auto", "auto"), ("greedy", "greedy")]
    if not quick and n <= OPTIMAL_MAX:
        strategies.append(("optimal", "optimal"))
    if not quick and n <= _DP_MAX:
        strategies += [("dp-flops", opt_einsum.DynamicProgramming(minimize="flops")),
                       ("dp-size", opt_einsum.DynamicProgramming(minimize="size")),
                       ("dp-combo", opt_einsum.DynamicProgramming(minimize="combo")),
                       # outer products too (opt_einsum's dp skips them by default): an MPS site's boundary vector
                       # times its feature, then one GEMM with the core, beats a batch of matrix-vector products
                       ("dp-outer", opt_einsum.DynamicProgramming(minimize="flops", search_outer=True))]
    trees: dict[tuple, str] = {}
    for name, strategy in strategies:
        try:
            pairs = default_pairs(net, strategy, at)
        except (ValueError, RuntimeError, MemoryError):
            continue
        trees.setdefault(tuple(pairs), name)
    if not quick and n > _DP_MAX:
        trees.setdefault(tuple(_searched(net, kept, time_budget, at)), "path search")
    # the operands in the order they were written, left to right (torch.einsum's order without opt_einsum):
    # merged chains keep their operands in chain order, so this is an MPS's vector-times-feature, then-core chain
    trees.setdefault(tuple((0, 1) if s == 0 else (n + s - 1, s + 1) for s in range(n - 1)), "left to right")
    folded = _constants_first(net, kept, at)
    if folded is not None:
        trees.setdefault(tuple(folded), "constants-first")
    if net.hint is not None:
        trees.setdefault(tuple(net.hint), "pre-fusion order")
    return [(name, list(pairs)) for pairs, name in trees.items()]


def _searched(net: Network, kept: list[tuple[str, ...]], time_budget: float,
              at: Point | int | None) -> list[tuple[int, int]]:
    """The tree of :func:`tcomp.contract.pathsearch.search` (greedy variants, time-bounded dp, subtree reconfiguration)
    under the FLOP metric at the decision point."""
    num = decision_sizes(net, at)
    sizes = {i: num[i] for ix in kept for i in ix}
    result = search([list(ix) for ix in kept], list(net.flat_out_indices), sizes, time_budget=time_budget)
    return ssa_path(result.path, list(range(len(kept))), len(kept))


def _constants_first(net: Network, kept: list[tuple[str, ...]],
                     at: Point | int | None) -> list[tuple[int, int]] | None:
    """A tree that contracts all constant operands together first (weight pre-contraction), then the rest."""
    n = len(kept)
    consts = [k for k, v in enumerate(net.operands) if v.kind == "const"]
    if len(consts) < 2 or len(consts) == n:
        return None
    rest = [k for k in range(n) if k not in consts]
    outside = set(net.flat_out_indices).union(*(set(kept[k]) for k in rest))
    inner_out = tuple(dict.fromkeys(i for k in consts for i in kept[k] if i in outside))
    indices = dict(enumerate(kept))
    pairs = opt_einsum_pairs(net, consts, indices, inner_out, n, "auto", at)
    folded_id = n + len(pairs) - 1
    indices[folded_id] = inner_out
    pairs += opt_einsum_pairs(net, rest + [folded_id], indices, net.flat_out_indices, n + len(pairs), "auto", at)
    return pairs


def best_plan(net: Network, at: Point | int | None, *, training: bool = False, quick: bool = False,
              machine: MachineModel | None = None, measure: bool = False) -> ContractionPlan:
    """The cheapest plan among the candidate trees, under tcomp's cost model, both at the decision point of ``at``
    (:func:`tcomp.ir.symbolic.decision_point`: the example's sizes); among plans
    the model prices equal, the first candidate (opt_einsum's ``auto`` first). Breaking ties by how close the
    result's index order is to the output's was measured and rejected: on Monarch-MLP it made the eager backend
    15% faster and the Inductor backend 2.2× slower (docs/passes/contraction_order.md).

    ``measure``: the model's two cheapest trees are planned again with their small GEMMs measured where the model
    cannot rank their layouts (:mod:`tcomp.cost.gemm`), and the faster kept. Only the final plan of a Network is
    chosen so; the passes that compare programs (merging Networks, batching them) price with the model alone, so that
    a measured correction on one side of a comparison and none on the other cannot decide it."""
    where = decision_point(at)
    machine = machine or machine_model()
    key = (network_signature(net), point_key(where), training, quick, machine, measure)
    if key in _PLANS:
        _PLANS.move_to_end(key)
        return _PLANS[key]
    priced = sorted(((plan.cost.time_at(where, machine), k, plan, pairs)
                     for k, (method, pairs) in enumerate(candidate_trees(net, where, quick=quick))
                     for plan in [plan_network(net, pairs, at=where, fold_constants=True, training=training,
                                               method=method, machine=machine)]), key=lambda t: t[:2])
    best = priced[0][2]
    if measure:  # (measuring every candidate tree's steps cost a 24-site MERA 25 s of compile time)
        remeasured = [plan_network(net, pairs, at=where, fold_constants=True, training=training, method=plan.method,
                                   machine=machine, measure=True) for _, _, plan, pairs in priced[:MEASURED_TREES]]
        best = min(remeasured, key=lambda p: p.cost.time_at(where, machine))
    _PLANS[key] = best
    if len(_PLANS) > _PLANS_KEPT:
        _PLANS.popitem(last=False)
    return best


MEASURED_TREES = 2
"""How many of the model's cheapest trees are planned again with their small GEMMs measured (tcomp.cost.gemm)."""

_PLANS: OrderedDict = OrderedDict()  # signature -> plan: isomorphic Networks (a chain's sites, a model's
_PLANS_KEPT = 4096                   # repeated blocks) are searched once per process


def network_signature(net: Network) -> tuple:
    """Everything a plan depends on, and nothing else: two Networks with the same signature get the same plan
    (index names included, so the plan applies as it is). Operands are told apart by position, kind, shape,
    dtype and layout, and by which positions hold the same value (a tied operand is prepared once)."""
    def value(v: Value) -> tuple:
        return v.kind, v.shape, v.dtype, v.stride_order

    def arg(a) -> object:
        return value(a) if isinstance(a, Value) else ("acc" if a is ACC else repr(a))

    ids = [id(v) for v in net.operands]
    return (net.operand_dims, net.out_dims, tuple(sorted(net.sizes.items())), tuple(map(value, net.operands)),
            tuple(ids.index(i) for i in ids), value(net.out), net.hint, net.compute_dtype,
            tuple((e.fn, tuple(map(arg, e.args)), tuple((k, arg(a)) for k, a in sorted(e.kwargs.items())))
                  for e in net.epilogue))


def result_stride_order(net: Network, plan: ContractionPlan) -> tuple[int, ...] | None:
    """The memory order of the Network's output dims when the plan leaves it as a permuted view, else None.

    The result is in ``plan.final`` index order; the output is a permuted view of it only when every output
    dim's indices stay adjacent (and in order) in ``plan.final`` — otherwise the reshape copies (contiguous).
    """
    if plan.final == net.flat_out_indices:
        return None
    pos = {i: p for p, i in enumerate(plan.final)}
    dims = [(d, [pos[i] for i in g]) for d, g in enumerate(net.out_dims) if g]
    for _, ps in dims:
        if ps != list(range(ps[0], ps[0] + len(ps))):
            return None
    order = [d for d, ps in sorted(dims, key=lambda x: x[1][0])]
    size1 = [d for d, g in enumerate(net.out_dims) if not g]
    full = tuple(size1 + order)
    return None if full == tuple(range(len(net.out_dims))) else full


@dataclass
class ProgramPlan:
    """What :func:`plan_program` did: Networks planned, constant steps folded, transposition copies left, how
    many plans each tree search won, and the seconds it took."""

    planned: int = 0
    folded: int = 0
    copies: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def plan_program(program: Program, *, training: bool = False, machine: MachineModel | None = None,
                 measure: bool = False) -> tuple[Program, ProgramPlan]:
    """``program`` with every Network given its best plan (:func:`best_plan`, small GEMMs measured with
    ``measure``) and its result's memory order (:func:`result_stride_order`, which later plans read)."""
    new = program.copy()
    summary = ProgramPlan()
    t0 = time.perf_counter()
    for k in range(len(new.ops)):
        op = new.ops[k]  # read afresh: replace_uses below rewrites later ops
        if not isinstance(op, Network):
            continue
        plan = best_plan(op, new.example, training=training, machine=machine, measure=measure)
        stride_order = result_stride_order(op, plan)
        out = op.out
        if stride_order != out.stride_order:
            out = Value(op.out.name, op.out.shape, op.out.dtype, stride_order=stride_order)
        new.ops[k] = op.replace(plan=plan, out=out)
        if out is not op.out:
            new.replace_uses(op.out, out)
        summary.planned += 1
        summary.folded += len(plan.folded_ids)
        summary.copies += sum(int(s.copy_lhs) + int(s.copy_rhs) for s in plan.steps)
        summary.methods[plan.method] = summary.methods.get(plan.method, 0) + 1
    summary.seconds = time.perf_counter() - t0
    return new, summary
