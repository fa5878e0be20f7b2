"""Contraction plans: a Network's pairwise contraction tree lowered to GEMMs with chosen layouts, and its cost.

Given a contraction path (a sequence of pairs, as opt_einsum returns it), :func:`plan_network` decides for every
pairwise step how it runs as one ``mm``/``bmm`` (or a broadcast multiply when nothing is summed):

- indices are classified as batch (in both operands and needed later), contracted (in both, not needed later) and
  free (in one operand only);
- each operand is viewed as a ``[batch, rows, cols]`` matrix stack; the order of the indices inside each group and
  which operand is the left one are chosen so that the view needs no copy where strides allow — a GEMM accepts a
  row-major or column-major matrix, so a transposed operand costs nothing, while a group whose indices are not
  adjacent in memory forces a copy (the layout model mirrors ``torch.reshape``'s view rule);
- the result's index order is chosen, with a one-step look-ahead, to make the step that consumes it copy-free, and
  the last step aims at the Network's output order.

Indices held by a single operand and absent from the output are summed before any pairwise step. Sub-trees whose
leaves are all constants (weights, buffers) are *folded*: computed once at compile time and cached (see
:class:`tcomp.codegen.folded.FoldedConstant`); the cost model charges them nothing per call in inference and twice per
step in training (recomputed when the parameters change, and differentiated in backward).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import opt_einsum

from tcomp.cost.gemm import MEASURED_BELOW_S, SIGNIFICANT, SIGNIFICANT_S, gemm_seconds
from tcomp.cost.machine import machine_model
from tcomp.cost.model import Cost, MachineModel, dtype_bytes
from tcomp.ir import ACC, Network, Value
from tcomp.ir.symbolic import Point, Size, as_size, decision_point, evaluate, prod


@dataclass(frozen=True)
class Term:
    """A tensor of the plan: its dims (one index each, in order) and their element strides at the decision point."""

    indices: tuple[str, ...]
    strides: tuple[int, ...]
    const: bool


@dataclass(frozen=True)
class Prep:
    """How operand ``term`` enters the plan: viewed with one dim per index (splitting dims is always a view),
    then ``sum_out`` summed away."""

    term: int
    indices: tuple[str, ...]
    sum_out: tuple[str, ...]


@dataclass(frozen=True)
class PairStep:
    """``out_id = lhs ⋆ rhs``: a GEMM over ``[batch, m, k] @ [batch, k, n]`` or a broadcast multiply (``k`` empty)."""

    lhs: int
    rhs: int
    out_id: int
    kind: str                  # "gemm" or "mul"
    batch: tuple[str, ...]
    m: tuple[str, ...]
    k: tuple[str, ...]
    n: tuple[str, ...]
    out: tuple[str, ...]       # the result's index order
    copy_lhs: bool             # the lowering copies this operand on every call
    copy_rhs: bool
    cost: Cost
    folded: bool = False
    pack_lhs: bool = False     # a constant operand laid out once for this GEMM (when its fold is cached)
    pack_rhs: bool = False


@dataclass
class ContractionPlan:
    preps: tuple[Prep, ...]
    steps: tuple[PairStep, ...]
    result: int
    final: tuple[str, ...]
    cost: Cost
    method: str = ""
    folded_ids: frozenset = field(default_factory=frozenset)

    def format(self, net: Network) -> str:
        """The tree, one step a line, with the cost of each step and the copies avoided or made."""
        names = {k: v.ref() for k, v in enumerate(net.operands)}
        lines = []
        for p in self.preps:
            if p.sum_out:
                lines.append(f"prep {names[p.term]}: sum over {''.join(p.sum_out)}")
        for s in self.steps:
            lhs, rhs = names[s.lhs], names[s.rhs]
            names[s.out_id] = f"t{s.out_id - len(net.operands)}"
            if s.kind == "gemm":
                roles = " ".join(f"{r}={''.join(g)}" for r, g in (("batch", s.batch), ("m", s.m), ("k", s.k),
                                                                 ("n", s.n)) if g)
                op = "bmm" if s.batch else "mm"
            else:
                roles = ""
                op = "mul"
            copies = [n for n, c in (("lhs", s.copy_lhs), ("rhs", s.copy_rhs)) if c]
            packed = [n for n, c in (("lhs", s.pack_lhs), ("rhs", s.pack_rhs)) if c]
            note = f"copies {'+'.join(copies)}" if copies else "no copy"
            if packed:
                note += f" ({'+'.join(packed)} laid out once)"
            folded = ", folded once" if s.folded else ""
            lines.append(f"{names[s.out_id]} = {op}({lhs}, {rhs}) {roles} -> {''.join(s.out)}   "
                         f"{s.cost.flops_str()} flop, {note}{folded}")
        lines.append(f"plan ({self.method}): {self.cost.flops_str()} flop, "
                     f"{len(self.steps)} step(s), copies {self.cost.copy_bytes} B")
        return "\n".join(lines)


def decision_sizes(net: Network, at: Point | int | None) -> dict[str, int]:
    """Numeric index sizes at the point layouts are decided at (:func:`tcomp.ir.symbolic.decision_point`)."""
    where = decision_point(at)
    return {i: evaluate(s, where) for i, s in net.sizes.items()}


# -- layouts ---------------------------------------------------------------------------------------------------

def operand_term(net: Network, k: int, num: dict[str, int], at: Point | int | None) -> Term:
    """Operand ``k`` with one dim per index and the strides implied by its value's layout."""
    v = net.operands[k]
    where = decision_point(at)
    shape = [evaluate(s, where) for s in v.shape]
    order = v.stride_order if v.stride_order is not None else tuple(range(len(shape)))
    strides = [0] * len(shape)
    acc = 1
    for d in reversed(order):
        strides[d] = acc
        acc *= shape[d]
    indices: list[str] = []
    idx_strides: list[int] = []
    for d, group in enumerate(net.operand_dims[k]):
        inner = strides[d]
        sub = []
        for i in reversed(group):
            sub.append((i, inner))
            inner *= num[i]
        for i, s in reversed(sub):
            indices.append(i)
            idx_strides.append(s)
    return Term(tuple(indices), tuple(idx_strides), v.kind == "const")


def _merged(term: Term, group: tuple[str, ...], num: dict[str, int]) -> tuple[int, int] | None:
    """(size, stride) of the group's indices merged into one dim, or None when that needs a copy. An index the
    term does not have is a broadcast (stride 0) dimension."""
    pos = {i: p for p, i in enumerate(term.indices)}
    dims = [(num[i], term.strides[pos[i]] if i in pos else 0) for i in group if num[i] != 1]
    if not dims:
        return 1, 1
    for (s0, st0), (s1, st1) in zip(dims, dims[1:]):
        if st0 != st1 * s1:
            return None
    return prod(s for s, _ in dims), dims[-1][1]


def matrix_copy(term: Term, batch: tuple, rows: tuple, cols: tuple, num: dict[str, int]) -> bool:
    """Whether viewing ``term`` as a ``[batch, rows, cols]`` matrix stack for a GEMM needs a copy."""
    merged = [_merged(term, g, num) for g in (batch, rows, cols)]
    if any(m is None for m in merged):
        return True
    (_, _), (nr, sr), (nc, sc) = merged
    row_major = (nc == 1 or sc == 1) and (nr == 1 or sr >= max(1, nc))
    col_major = (nr == 1 or sr == 1) and (nc == 1 or sc >= max(1, nr))
    return not (row_major or col_major)


def contiguous_term(indices: tuple[str, ...], num: dict[str, int], const: bool) -> Term:
    strides = []
    acc = 1
    for i in reversed(indices):
        strides.append(acc)
        acc *= num[i]
    return Term(tuple(indices), tuple(reversed(strides)), const)


def _ordered(indices: set, order: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(i for i in order if i in indices)


# -- building a plan ------------------------------------------------------------------------------------------

def ssa_path(path, ids: list[int], next_id: int) -> list[tuple[int, int]]:
    """opt_einsum's path (positions in a shrinking list of terms, tuples of any length) -> pairs of term ids.

    ``ids`` are the ids of the terms the path starts from; new terms are numbered from ``next_id`` on.
    """
    live = list(ids)
    pairs: list[tuple[int, int]] = []
    for contraction in path:
        chosen = [live[p] for p in contraction]
        for p in sorted(contraction, reverse=True):
            live.pop(p)
        acc = chosen[0]
        for other in chosen[1:]:
            pairs.append((acc, other))
            acc = next_id
            next_id += 1
        live.append(acc)
    return pairs


def prepare(net: Network) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Per operand: its flat indices, and those summed before any pairwise step (held by it alone)."""
    flat = net.flat_operand_indices()
    out = set(net.flat_out_indices)
    kept, summed = [], []
    for k, ix in enumerate(flat):
        others = set().union(*(set(f) for j, f in enumerate(flat) if j != k)) if len(flat) > 1 else set()
        s = tuple(i for i in ix if i not in out and i not in others)
        summed.append(s)
        kept.append(tuple(i for i in ix if i not in s))
    return kept, summed


def opt_einsum_pairs(net: Network, terms: list[int], indices: dict[int, tuple[str, ...]], out: tuple[str, ...],
                     next_id: int, strategy, at: Point | int | None = None) -> list[tuple[int, int]]:
    """Pairs (of term ids) from an opt_einsum search over ``terms`` (with the given indices) producing ``out``, the
    sizes taken at the decision point of ``at``."""
    if len(terms) < 2:
        return []
    num = decision_sizes(net, at)
    eq = ",".join("".join(indices[t]) for t in terms) + "->" + "".join(out)
    shapes = [tuple(num[i] for i in indices[t]) for t in terms]
    path, _ = opt_einsum.contract_path(eq, *shapes, shapes=True, optimize=strategy)
    return ssa_path(path, terms, next_id)


def default_pairs(net: Network, strategy="auto", at: Point | int | None = None) -> list[tuple[int, int]]:
    """The pairs opt_einsum's ``strategy`` chooses over the prepared operands (``auto``: what torch.einsum does)."""
    kept, _ = prepare(net)
    return opt_einsum_pairs(net, list(range(len(kept))), dict(enumerate(kept)), net.flat_out_indices, len(kept),
                            strategy, at)


MATRIX_VECTOR_FACTOR = 4
"""A batched product whose right operand is a vector (``[b, m, k] @ [b, k, 1]``) costs this many fixed per-matrix
costs: measured with torch 2.13's CPU bmm at 64 × 32×32, 46.6 µs against 11.6 µs for the same product as
vector-times-matrix (``[b, 1, k] @ [b, k, m]``, the matrix read transposed), so the planner lays such a step out
with the vector on the left."""


def plan_network(net: Network, pairs: list[tuple[int, int]], *, at: Point | int | None = None,
                 fold_constants: bool = False, training: bool = False, method: str = "",
                 machine: MachineModel | None = None, measure: bool = False) -> ContractionPlan:
    """Lower a contraction tree (pairs of term ids: operands are 0..n-1, step s creates term n+s) to a plan with
    every step's layout chosen and costs attached, priced on ``machine`` (default: this one's constants); with
    ``measure``, small GEMMs the model cannot rank are measured (:meth:`_Planner.measured`)."""
    return _Planner(net, at, fold_constants, training, machine or machine_model(), measure).plan(pairs, method)


class _Planner:
    """Chooses every step's layout for one Network and prices it (see the module docstring)."""

    def __init__(self, net: Network, at: Point | int | None, fold_constants: bool, training: bool,
                 machine: MachineModel, measure: bool = False):
        self.net = net
        self.at = decision_point(at)
        self.num = decision_sizes(net, at)
        self.elt = dtype_bytes(net.compute_dtype or net.out.dtype)
        self.fold = fold_constants
        self.training = training
        self.machine = machine
        self.measure = measure and machine.source != "default"

    def plan(self, pairs: list[tuple[int, int]], method: str) -> ContractionPlan:
        net, num, elt = self.net, self.num, self.elt
        kept, summed = prepare(net)
        n = len(net.operands)
        terms: dict[int, Term] = {}
        preps = []
        total = Cost()
        for k in range(n):
            t = operand_term(net, k, num, self.at)
            if summed[k]:
                size = prod(net.sizes[i] for i in t.indices)
                total = total + Cost(flops=size, bytes=as_size(size * elt), launches=1)
                t = contiguous_term(kept[k], num, t.const)
            preps.append(Prep(k, kept[k], summed[k]))
            terms[k] = t
        remaining_use = _future_indices(pairs, kept, net.flat_out_indices, n)
        steps: list[PairStep] = []
        folded: set[int] = set()
        for s, (a, b) in enumerate(pairs):
            out_id = n + s
            next_step = _consumer(pairs, out_id, n)
            step = self.best_step(terms, a, b, out_id, remaining_use[s],
                                  target=net.flat_out_indices if s == len(pairs) - 1 else None,
                                  lookahead=(pairs, next_step, remaining_use, n) if next_step is not None else None)
            if self.fold and terms[a].const and terms[b].const:
                folded.add(out_id)
                step = PairStep(**{**step.__dict__, "folded": True})
                charge = step.cost.scaled(2) if self.training else Cost()
            else:
                charge = step.cost
            total = total + charge
            steps.append(step)
            terms[out_id] = contiguous_term(step.out, num, terms[a].const and terms[b].const)
        result = n + len(pairs) - 1 if pairs else 0
        final = terms[result].indices
        total = total + _final_cost(net, terms[result], num, elt)
        total = total + _epilogue_cost(net, steps, final, elt)
        return ContractionPlan(tuple(preps), tuple(steps), result, final, total, method, frozenset(folded))

    def price(self, terms: dict[int, Term], a: int, b: int, out_id: int, cand) -> PairStep:
        """One candidate layout of the step ``a ⋆ b``. A constant operand that would need a copy is *packed*
        instead — laid out once, when its fold is cached — and costs nothing per call in inference."""
        net, num, elt = self.net, self.num, self.elt
        swap, batch, m, k, nn = cand
        lhs, rhs = (b, a) if swap else (a, b)
        tl, tr = terms[lhs], terms[rhs]
        sizes = net.sizes
        bt, mm, kk, ns = (prod(sizes[i] for i in g) for g in (batch, m, k, nn))
        out = batch + m + nn
        matrices: Size = 0
        if k:
            copy_l = matrix_copy(tl, batch, m, k, num)
            copy_r = matrix_copy(tr, batch, k, nn, num)
            flops = as_size(2 * bt * mm * kk * ns)
            kind = "gemm"
            matrices = bt * (MATRIX_VECTOR_FACTOR if m and not nn else 1) if batch else 0
        else:
            copy_l = copy_r = False
            flops = as_size(bt * mm * ns)
            kind = "mul"
        pack_l = copy_l and self.fold and tl.const
        pack_r = copy_r and self.fold and tr.const
        numel_l = prod(sizes[i] for i in tl.indices)
        numel_r = prod(sizes[i] for i in tr.indices)
        numel_o = as_size(bt * mm * ns)
        per_call_l = copy_l and (not pack_l or self.training)
        per_call_r = copy_r and (not pack_r or self.training)
        copy_bytes = as_size(2 * elt * ((numel_l if per_call_l else 0) + (numel_r if per_call_r else 0)))
        cost = Cost(flops=flops, bytes=as_size(elt * (numel_l + numel_r + numel_o)), copy_bytes=copy_bytes,
                    launches=1 + int(per_call_l) + int(per_call_r), matrices=matrices)
        return PairStep(lhs, rhs, out_id, kind, batch, m, k, nn, out, copy_l and not pack_l,
                        copy_r and not pack_r, cost, pack_lhs=pack_l, pack_rhs=pack_r)

    def best_step(self, terms, a, b, out_id, later, target, lookahead) -> PairStep:
        best, best_score = None, None
        steps = self.measured([self.price(terms, a, b, out_id, cand)
                               for cand in _step_candidates(terms[a], terms[b], later)], terms)
        for step in steps:
            score = step.cost.time_at(self.at, self.machine)
            if target is not None and step.out != tuple(target):
                score += _final_copy_time(self.net, step.out, self.num, self.elt, self.machine)
            if lookahead is not None:
                score += self.lookahead_time(terms, step, lookahead)
            if best_score is None or score < best_score - 1e-15:
                best, best_score = step, score
        return best

    def measured(self, steps: list[PairStep], terms: dict[int, Term]) -> list[PairStep]:
        """``steps`` (one pair's candidate layouts), each GEMM's cost corrected by its time measured on this machine
        (:mod:`tcomp.cost.gemm`), where the candidates are small GEMMs whose measured times differ significantly;
        otherwise as the model priced them."""
        if not self.measure or not all(s.kind == "gemm" for s in steps) or len(steps) < 2:
            return steps
        if terms[steps[0].lhs].const and terms[steps[0].rhs].const and not self.training:
            return steps  # folded once: no per-call time to measure
        modeled = [evaluate(s.cost.flops, self.at) / self.machine.gemm_flops_per_s
                   + evaluate(s.cost.matrices, self.at) * self.machine.matrix_s for s in steps]
        if max(modeled) >= MEASURED_BELOW_S:
            return steps
        dtype = self.net.compute_dtype or self.net.out.dtype
        measured = [gemm_seconds(dtype, *self._gemm_shape(s, terms)) for s in steps]
        if max(measured) < SIGNIFICANT * min(measured) or max(measured) - min(measured) < SIGNIFICANT_S:
            return steps
        return [replace(s, cost=replace(s.cost, measured_s=t - mdl)) for s, t, mdl in zip(steps, measured, modeled)]

    def _gemm_shape(self, step: PairStep, terms: dict[int, Term]) -> tuple[int, int, int, int, bool, bool]:
        """(batch, m, k, n, left transposed, right transposed) of the product the step's lowering calls, at the
        decision point (batch 0: a plain ``mm``); an operand copied or packed is row-major."""
        num = self.num
        batch, m, k, n = (prod(num[i] for i in g) for g in (step.batch, step.m, step.k, step.n))

        def transposed(term: Term, rows: tuple, cols: tuple, laid_out: bool) -> bool:
            if laid_out:
                return False
            (nr, _), (nc, sc) = _merged(term, rows, num), _merged(term, cols, num)
            return nr > 1 and nc > 1 and sc != 1

        return (batch if step.batch else 0, m, k, n,
                transposed(terms[step.lhs], step.m, step.k, step.copy_lhs or step.pack_lhs),
                transposed(terms[step.rhs], step.k, step.n, step.copy_rhs or step.pack_rhs))

    def lookahead_time(self, terms, step, lookahead) -> float:
        """The cheapest price of the step that consumes ``step``'s result, if its other input is already known."""
        pairs, s_next, remaining_use, n = lookahead
        a, b = pairs[s_next]
        other = b if a == step.out_id else a
        if other not in terms:
            return 0.0
        trial = dict(terms)
        trial[step.out_id] = contiguous_term(step.out, self.num, terms[step.lhs].const and terms[step.rhs].const)
        later = remaining_use[s_next]
        return min(self.price(trial, a, b, n + s_next, c).cost.time_at(self.at, self.machine)
                   for c in _step_candidates(trial[a], trial[b], later))


def _future_indices(pairs, kept, out, n) -> list[set[str]]:
    """For step s: the indices still needed after it by other live terms or the output (excluding its inputs)."""
    result = []
    live_indices: dict[int, set[str]] = {k: set(kept[k]) for k in range(n)}
    live = set(range(n))
    for s, (a, b) in enumerate(pairs):
        live.discard(a)
        live.discard(b)
        need = set(out)
        for t in live:
            need |= live_indices[t]
        result.append(need)
        out_id = n + s
        live_indices[out_id] = (live_indices[a] | live_indices[b]) & need
        live.add(out_id)
    return result


def _consumer(pairs, term_id: int, n: int) -> int | None:
    for s, (a, b) in enumerate(pairs):
        if a == term_id or b == term_id:
            return s
    return None


def _step_candidates(ta: Term, tb: Term, later: set[str]):
    """(swap, batch, m, k, n) layouts worth pricing for one pairwise contraction.

    Besides the plain classification, the outermost free index of either operand may be *promoted* to a batch
    index, the other operand broadcast along it (a stride-0 dimension): a batched GEMM over it then reads an
    operand whose free indices are not adjacent in memory without copying it (e.g. a Linear applied to a
    transposed activation: ``x[b,t,c]·W[d,t]`` as ``bmm`` over b with W broadcast)."""
    sa, sb = set(ta.indices), set(tb.indices)
    shared = sa & sb
    batch_set = {i for i in shared if i in later}
    k_set = shared - batch_set
    m_set = sa - sb
    n_set = sb - sa
    for swap in (False, True):
        (tl, ml), (tr, nr) = ((tb, n_set), (ta, m_set)) if swap else ((ta, m_set), (tb, n_set))
        for border in dict.fromkeys((_ordered(batch_set, tl.indices), _ordered(batch_set, tr.indices))):
            for korder in dict.fromkeys((_ordered(k_set, tl.indices), _ordered(k_set, tr.indices))):
                mo, no = _ordered(ml, tl.indices), _ordered(nr, tr.indices)
                yield swap, border, mo, korder, no
                if korder and len(mo) > 1:
                    yield swap, (mo[0],) + border, mo[1:], korder, no
                if korder and len(no) > 1:
                    yield swap, (no[0],) + border, mo, korder, no[1:]


def _final_copy_time(net, order, num, elt, machine) -> float:
    numel = prod(num[i] for i in order)
    return 2 * elt * numel / machine.copy_bytes_per_s


def _final_cost(net: Network, term: Term, num, elt) -> Cost:
    """A result left in another order than the output's is returned as a permuted view; it is charged one copy,
    the price its readers usually pay."""
    if term.indices == net.flat_out_indices:
        return Cost()
    return Cost(copy_bytes=as_size(2 * elt * prod(net.sizes[i] for i in term.indices)), launches=1)


def _epilogue_cost(net: Network, steps, final, elt) -> Cost:
    c = Cost()
    out_bytes = as_size(net.out.numel * elt) if net.out.is_tensor else 0
    for k, e in enumerate(net.epilogue):
        if k == 0 and fused_bias(net, steps, final):
            continue
        c = c + Cost(flops=net.out.numel, bytes=as_size(2 * out_bytes), launches=1)
    return c


def fused_bias(net: Network, steps, final) -> bool:
    """Whether the first epilogue step (a bias add) is fused into the last GEMM as ``addmm``: a 2-D GEMM whose
    result is already in output order, and a 1-D bias over its columns."""
    if not net.epilogue or net.epilogue[0].fn != "add" or not steps:
        return False
    last = steps[-1]
    if last.kind != "gemm" or last.batch or final != net.flat_out_indices or last.folded:
        return False
    args = net.epilogue[0].args
    if len(args) != 2 or args[0] is not ACC or not isinstance(args[1], Value) or args[1].shape is None:
        return False
    bias = args[1]
    n_size = prod(net.sizes[i] for i in last.n)
    return len(bias.shape) == 1 and bias.shape[0] == n_size and bias.dtype == net.out.dtype and bool(last.n) \
        and len(net.out_dims) >= 1 and tuple(net.out_dims[-1]) == tuple(last.n)


def network_cost(net: Network) -> Cost:
    """The planned cost, or for an unplanned Network the cost of opt_einsum's default path (cached)."""
    if net.plan is not None:
        return net.plan.cost
    cached = getattr(net, "_default_cost", None)
    if cached is None:
        cached = plan_network(net, default_pairs(net), method="einsum default").cost
        net._default_cost = cached
    return cached

