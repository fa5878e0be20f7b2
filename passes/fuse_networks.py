"""fuse_networks: merge adjacent contraction ops into maximal Networks.

A Network operand produced by another Network is replaced by that producer's operands (its sub-network), when

- the producer is a pure relabel (reshape / permute / view: free to repeat in every consumer), or its result has
  exactly one reader (an intermediate with several readers stays materialised — never computed twice);
- the producer's epilogue is linear (only scalar scaling, which moves to the front of the merged epilogue);
- the producer's output groups and the consumer's view of it have a common refinement (each reshape in between
  only splits or merges indices — see :func:`tcomp.indices.refine`);
- and the merged network's planned cost is not above the two plans' sum under tcomp's cost model (so merging
  never makes a program slower by the model's account; the contraction_order pass then plans the merged network,
  including pre-contracting constant sub-networks such as two Linears with no activation between them) — and
  strictly below it once the merged network has more operands than contraction_order plans exhaustively
  (:data:`~tcomp.passes.contraction_order.OPTIMAL_MAX`), so that a long chain is not grown into one network that
  costs minutes to plan and gains nothing over its pieces.

A multiply by a Python scalar whose reader is a Network becomes part of the network's epilogue first (scalar
scaling is linear), so networks fuse through it. Merging works across module boundaries: the IR has none.
"""
from __future__ import annotations

from tcomp.ir.indices import IndexPool, refine
from tcomp.ir.program import ACC, EpilogueOp, Network, Pointwise, Program, Value
from tcomp.passmanager import Pass, PassContext, PassReport
from tcomp.contract.plan import ContractionPlan, default_pairs
from tcomp.ir.symbolic import as_size

from .contraction_order import OPTIMAL_MAX, best_plan

NAME = "fuse_networks"


def _scale_of(epilogue: tuple[EpilogueOp, ...]) -> float | None:
    """The product of a purely scalar-scaling epilogue, or None if the epilogue does anything else."""
    s = 1.0
    for e in epilogue:
        if e.fn == "mul" and len(e.args) == 2 and e.args[0] is ACC and _is_scalar(e.args[1]) and not e.kwargs:
            s *= e.args[1]
        elif e.fn == "div" and len(e.args) == 2 and e.args[0] is ACC and _is_scalar(e.args[1]) and not e.kwargs:
            s /= e.args[1]
        else:
            return None
    return s


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scale_epilogue(scale: float) -> tuple[EpilogueOp, ...]:
    import torch

    return () if scale == 1.0 else (EpilogueOp("mul", torch.mul, (ACC, scale)),)


def _split_dims(dims, mapping: dict[str, tuple[str, ...]]):
    return tuple(tuple(j for i in g for j in mapping.get(i, (i,))) for g in dims)


def _rename(net: Network, mapping: dict[str, tuple[str, ...]], sizes: dict[str, int]) -> Network:
    """``net`` with each index in ``mapping`` replaced by its tuple of (finer) indices."""
    new_sizes = {}
    for i, s in net.sizes.items():
        if i in mapping:
            for j in mapping[i]:
                new_sizes[j] = sizes[j]
        else:
            new_sizes[i] = s
    return Network(net.out, net.operands, tuple(_split_dims(d, mapping) for d in net.operand_dims),
                   _split_dims(net.out_dims, mapping), new_sizes, net.epilogue, None, net.origin, net.hint)


def merge(consumer: Network, position: int, producer: Network,
          trees: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None) -> Network | None:
    """The consumer with operand ``position`` (the producer's result) replaced by the producer's sub-network, or
    None when the two index structures have no common refinement or the producer's epilogue is not linear.

    ``trees`` — the (consumer, producer) contraction trees the two were priced with — make the merged network's
    hint exactly that unfused evaluation, so that planning the merged network can only do better; without them
    the hint is built from each network's own hint (or opt_einsum's default tree)."""
    scale = _scale_of(producer.epilogue)
    if scale is None:
        return None
    pool = IndexPool(set(consumer.sizes) | set(producer.sizes))
    fresh = {i: (pool.new(),) for i in producer.sizes}
    prod_sizes = {fresh[i][0]: s for i, s in producer.sizes.items()}
    producer = _rename(producer, fresh, prod_sizes)
    c_map: dict[str, tuple[str, ...]] = {}
    p_map: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, int] = {}
    for pg, cg in zip(producer.out_dims, consumer.operand_dims[position]):
        r = refine([producer.sizes[i] for i in pg], [consumer.sizes[i] for i in cg])
        if r is None:
            return None
        pieces, p_ranges, c_ranges = r
        names = [pool.new() for _ in pieces]
        for i, rg in zip(pg, p_ranges):
            p_map[i] = tuple(names[k] for k in rg)
        for i, rg in zip(cg, c_ranges):
            c_map[i] = tuple(names[k] for k in rg)
        sizes.update(zip(names, (as_size(p) for p in pieces)))
    producer = _rename(producer, p_map, sizes)
    consumer = _rename(consumer, c_map, sizes)
    operands = consumer.operands[:position] + producer.operands + consumer.operands[position + 1:]
    dims = consumer.operand_dims[:position] + producer.operand_dims + consumer.operand_dims[position + 1:]
    all_sizes = {**consumer.sizes, **producer.sizes}
    used = {i for d in (*dims, consumer.out_dims) for g in d for i in g}
    own_scale = _scale_of(consumer.epilogue[:1]) if consumer.epilogue else None
    if own_scale is not None and consumer.epilogue:
        epilogue = _scale_epilogue(scale * own_scale) + consumer.epilogue[1:]
    else:
        epilogue = _scale_epilogue(scale) + consumer.epilogue
    origin = " + ".join(o for o in (producer.origin, consumer.origin) if o)
    return Network(consumer.out, operands, dims, consumer.out_dims,
                   {i: s for i, s in all_sizes.items() if i in used}, epilogue, None, origin,
                   _merged_tree(consumer, position, producer, trees))


def _merged_tree(consumer: Network, position: int, producer: Network,
                 trees: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None) -> tuple[tuple[int, int], ...]:
    """The tree that evaluates the producer's sub-network first, then the consumer's (the unfused order), over
    the merged operand list; contraction_order prices it beside opt_einsum's trees."""
    m, n = len(producer.operands), len(consumer.operands)
    total = n - 1 + m
    if trees is not None:
        c_pairs, p_pairs = (list(t) for t in trees)
    else:
        p_pairs = list(producer.hint) if producer.hint is not None else default_pairs(producer)
        c_pairs = list(consumer.hint) if consumer.hint is not None else default_pairs(consumer)

    def p_id(t: int) -> int:
        return position + t if t < m else total + (t - m)

    p_result = p_id(m + len(p_pairs) - 1) if p_pairs else position

    def c_id(t: int) -> int:
        if t < n:
            return t if t < position else (p_result if t == position else t + m - 1)
        return total + len(p_pairs) + (t - n)

    return tuple((p_id(a), p_id(b)) for a, b in p_pairs) + tuple((c_id(a), c_id(b)) for a, b in c_pairs)


def _absorb_scalars(program: Program) -> int:
    """Make ``x * c`` / ``x / c`` (c a Python number) part of a network: appended to the epilogue of the Network
    that produces x when it is x's only reader, else a scaled identity Network when x's readers are Networks."""
    import torch

    changed = 0
    k = 0
    while k < len(program.ops):
        op = program.ops[k]
        k += 1
        if not (isinstance(op, Pointwise) and op.fn in ("mul", "div") and len(op.args) == 2 and not op.kwargs):
            continue
        x, c = op.args
        if not (isinstance(x, Value) and x.is_tensor and _is_scalar(c)) or x.dtype != op.out.dtype:
            continue
        step = EpilogueOp(op.fn, torch.mul if op.fn == "mul" else torch.div, (ACC, c))
        users = program.users()
        producer = program.producers().get(id(x))
        if isinstance(producer, Network) and len(users.get(id(x), [])) == 1 and not program.is_output(x):
            at = program.ops.index(producer)
            program.ops[at] = producer.replace(out=op.out, epilogue=producer.epilogue + (step,))
            program.ops.remove(op)
            k -= 1
            changed += 1
            continue
        readers = users.get(id(op.out), [])
        if not readers or not all(isinstance(r, Network) for r in readers) or program.is_output(op.out):
            continue
        pool = IndexPool()
        dims = tuple((pool.new(),) if s != 1 else () for s in x.shape)
        sizes = {g[0]: s for g, s in zip(dims, x.shape) if g}
        program.ops[k - 1] = Network(op.out, (x,), (dims,), dims, sizes, (step,), origin=f"scale by {c:g}")
        changed += 1
    return changed


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    scalars = _absorb_scalars(new)
    merges = 0
    rejected_cost = 0
    producers = new.producers()
    planned = _Plans(ctx, new.example_batch)
    for k, op in enumerate(new.ops):
        if not isinstance(op, Network):
            continue
        current = op
        progress = True
        while progress:
            progress = False
            users = new.users()
            for pos, v in enumerate(current.operands):
                prod = producers.get(id(v))
                if not isinstance(prod, Network) or new.is_output(v) or v.dtype != current.out.dtype:
                    continue
                readers = users.get(id(v), [])
                single = len(readers) == 1 and sum(1 for o in current.operands if o is v) == 1
                if not (single or prod.is_relabel) or _scale_of(prod.epilogue) is None:
                    continue  # (a producer whose epilogue is not linear never merges: skip pricing it)
                separate = [planned(current), planned(prod)]
                merged = merge(current, pos, prod, tuple([(s.lhs, s.rhs) for s in p.steps] for p in separate))
                if merged is None:
                    continue
                strictly = len(merged.operands) > OPTIMAL_MAX
                if not _cheaper(planned(merged), separate, new.example_batch, strictly):
                    rejected_cost += 1
                    continue
                current = merged
                new.ops[k] = current
                producers[id(current.out)] = current
                merges += 1
                progress = True
                break
    removed = new.eliminate_dead_code()
    report = PassReport(NAME, changed=merges > 0 or scalars > 0)
    report.notes.append(f"{merges} merge(s), {scalars} scalar scaling(s) absorbed, {removed} op(s) removed, "
                        f"{rejected_cost} merge(s) rejected by the cost model")
    report.details = {"merges": merges, "scalars": scalars, "removed": removed, "rejected_by_cost": rejected_cost}
    return new, report


class _Plans:
    """Each network's quick best plan, computed once per network object: a network is priced again for every
    operand it might absorb, and a merged network that is kept is the next merge's consumer."""

    def __init__(self, ctx: PassContext, batch):
        self.ctx, self.batch = ctx, batch
        self.known: dict[int, tuple[Network, ContractionPlan]] = {}

    def __call__(self, net: Network) -> ContractionPlan:
        hit = self.known.get(id(net))
        if hit is None or hit[0] is not net:
            hit = self.known[id(net)] = (net, best_plan(net, self.ctx, self.batch, quick=True))
        return hit[1]


def _cheaper(fused: ContractionPlan, separate: list[ContractionPlan], batch, strictly: bool) -> bool:
    """Whether the merged network's plan costs no more (``strictly``: less) than the separate plans together.
    The merged network's hint is their unfused evaluation, so a tie is the common case; ties merge only while the
    merged network stays small enough to be planned exhaustively (:data:`OPTIMAL_MAX` operands) — beyond that a
    merge must pay, or a long chain (an MPS, 63 sites) would grow into one network that costs minutes to plan and
    gains nothing over its pieces."""
    b = max(batch or 2, 2)
    fused_time = fused.cost.time_at(b)
    separate_time = sum(p.cost.time_at(b) for p in separate)
    return fused_time < separate_time * (1 - 1e-9) if strictly else fused_time <= separate_time * (1 + 1e-9)


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
