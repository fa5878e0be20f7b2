"""fuse_networks: merge adjacent contraction ops into maximal Networks.

A Network operand produced by another Network is replaced by that producer's operands (its sub-network), when

- the producer is a pure relabel (reshape / permute / view: free to repeat in every consumer), or its result has
  exactly one reader (an intermediate with several readers stays materialised — never computed twice);
- the producer's epilogue is linear (only scalar scaling, which moves to the front of the merged epilogue);
- the producer's output groups and the consumer's view of it have a common refinement (each reshape in between
  only splits or merges indices — see :func:`tcomp.ir.indices.refine`);
- and the merged network's planned cost is not above the two plans' sum under tcomp's cost model (so merging
  never makes a program slower by the model's account; the contraction_order pass then plans the merged network,
  including pre-contracting constant sub-networks such as two Linears with no activation between them) — and
  strictly below it once the merged network has more operands than contraction_order plans exhaustively
  (:data:`~tcomp.contract.search.OPTIMAL_MAX`), so that a long chain is not grown into one network that
  costs minutes to plan and gains nothing over its pieces.

A producer never merges into a consumer across an op that writes a tensor in place: the merged network reads the
producer's operands where the consumer is, after the write.

A multiply by a Python scalar whose reader is a Network becomes part of the network's epilogue first (scalar
scaling is linear), so networks fuse through it. Merging works across module boundaries: the IR has none.
"""
from __future__ import annotations

import torch

from tcomp.ir.analysis import writes_in_place
from tcomp.ir.indices import IndexPool
from tcomp.ir import ACC, EpilogueOp, Network, Pointwise, Program, Value
from tcomp.passmanager import Pass, PassContext, PassReport
from tcomp.contract.merge import is_scalar, merge, scale_of
from tcomp.contract.plan import ContractionPlan
from tcomp.cost import MachineModel
from tcomp.ir.symbolic import Point, decision_point

from tcomp.contract.search import OPTIMAL_MAX, best_plan

NAME = "fuse_networks"


def _absorb_scalars(program: Program) -> int:
    """Make ``x * c`` / ``x / c`` (c a Python number) part of a network: appended to the epilogue of the Network
    that produces x when it is x's only reader, else a scaled identity Network when x's readers are Networks."""
    changed = 0
    k = 0
    while k < len(program.ops):
        op = program.ops[k]
        k += 1
        if not (isinstance(op, Pointwise) and op.fn in ("mul", "div") and len(op.args) == 2 and not op.kwargs):
            continue
        x, c = op.args
        if not (isinstance(x, Value) and x.is_tensor and is_scalar(c)) or x.dtype != op.out.dtype:
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
    position = {id(op): k for k, op in enumerate(new.ops)}
    writes = [k for k, op in enumerate(new.ops) if writes_in_place(op)]
    planned = _Plans(ctx, new.example)
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
                if not (single or prod.is_relabel) or scale_of(prod.epilogue) is None:
                    continue  # (a producer whose epilogue is not linear never merges: skip pricing it)
                if any(position[id(prod)] < w < k for w in writes):
                    continue  # merged, the producer's operands would be read after a write in place to them
                separate = [planned(current), planned(prod)]
                merged = merge(current, pos, prod, tuple([(s.lhs, s.rhs) for s in p.steps] for p in separate))
                if merged is None:
                    continue
                strictly = len(merged.operands) > OPTIMAL_MAX
                if not _cheaper(planned(merged), separate, new.example, strictly, ctx.machine):
                    rejected_cost += 1
                    continue
                current = merged
                new.ops[k] = current
                producers[id(current.out)] = current
                position[id(current)] = k
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

    def __init__(self, ctx: PassContext, at: Point):
        self.ctx, self.at = ctx, at
        self.known: dict[int, tuple[Network, ContractionPlan]] = {}

    def __call__(self, net: Network) -> ContractionPlan:
        hit = self.known.get(id(net))
        if hit is None or hit[0] is not net:
            hit = self.known[id(net)] = (net, best_plan(net, self.at, training=self.ctx.training, quick=True,
                                                        machine=self.ctx.machine))
        return hit[1]


def _cheaper(fused: ContractionPlan, separate: list[ContractionPlan], at: Point, strictly: bool,
             machine: MachineModel) -> bool:
    """Whether the merged network's plan costs no more (``strictly``: less) than the separate plans together.
    The merged network's hint is their unfused evaluation, so a tie is the common case; ties merge only while the
    merged network stays small enough to be planned exhaustively (:data:`OPTIMAL_MAX` operands) — beyond that a
    merge must pay, or a long chain (an MPS, 63 sites) would grow into one network that costs minutes to plan and
    gains nothing over its pieces."""
    where = decision_point(at)
    fused_time = fused.cost.time_at(where, machine)
    separate_time = sum(p.cost.time_at(where, machine) for p in separate)
    return fused_time < separate_time * (1 - 1e-9) if strictly else fused_time <= separate_time * (1 + 1e-9)


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
