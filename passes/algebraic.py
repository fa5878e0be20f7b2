"""algebraic: exact algebraic simplifications that the tensor-network form exposes.

A term-rewriting pass (the peephole identities of classic compilers, applied to tensor programs as in TASO,
Jia et al. 2019 — here only identities that hold exactly, never found by search):

1. **Relabel round trips.** A chain of relabels (reshape / view / transpose / permute / flatten / ``contiguous``,
   Networks with one operand and no sum) is composed with :func:`tcomp.passes.fuse_networks.merge`; when the composition
   is the identity — a transpose of a transpose, a reshape and its inverse, a reshape to the same shape — its
   readers read the chain's source instead.
2. **Scalar identities.** ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` and ``x ** 1`` are ``x``
   when they keep x's shape and dtype (``x + 0`` turns ``-0.0`` into ``+0.0``: equal values).
3. **Weight-only elementwise ops.** An elementwise op whose tensor inputs are all weight-only (``w * 2``,
   ``exp(log_scale)``) is computed once and cached (:mod:`tcomp.rewrite.weights`), no longer on every call.
4. **Constant factors folded into a weight.** Multiplying or dividing a Network's result by a scalar, or one of its
   activation operands (``q_proj(x) * scale``, ``(x / c) @ w``), is folded into a weight-only operand of the
   Network — the product is linear in each operand — and into its bias: ``(x·W + b)·c = x·(W·c) + b·c``, with
   ``W·c`` and ``b·c`` cached functions of the original parameters.

Nothing is rewritten in a program that writes tensors in place (a rewrite could change which values alias one
another; see :func:`tcomp.passes.cse.mutation`), and a program output never becomes an alias of another value.
Complexity: three walks over the ops, O(ops).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from tcomp.ir import ACC, Call, EpilogueOp, Network, Op, Pointwise, Program, Value, substitute_inputs
from tcomp.passmanager import Pass, PassContext, PassReport

from tcomp.ir.analysis import deterministic, mutation
from tcomp.contract.merge import is_scalar, merge
from tcomp.ir.names import Names
from tcomp.rewrite.weights import cached_call, weight_recipe, WeightRecipe

NAME = "algebraic"

_NEUTRAL = {"add": (0, "both"), "sub": (0, "right"), "mul": (1, "both"), "div": (1, "right"), "pow": (1, "right")}


# -- 1 and 2: identities ---------------------------------------------------------------------------------------

def _plain_relabel(op: Op) -> bool:
    return isinstance(op, Network) and op.is_relabel and not op.epilogue


def _is_identity(net: Network, source: Value) -> bool:
    return net.flat_operand_indices()[0] == net.flat_out_indices and net.out.shape == source.shape \
        and net.out.dtype == source.dtype


def _neutral_operand(op: Pointwise) -> Value | None:
    """x when ``op`` is ``x ∘ e`` (or ``e ∘ x``) with e the neutral element of ∘, keeping x's shape and dtype."""
    spec = _NEUTRAL.get(op.fn)
    if spec is None or len(op.args) != 2 or op.kwargs:
        return None
    neutral, side = spec
    a, b = op.args
    if isinstance(a, Value) and is_scalar(b) and b == neutral:
        x = a
    elif side == "both" and isinstance(b, Value) and is_scalar(a) and a == neutral:
        x = b
    else:
        return None
    return x if x.is_tensor and x.shape == op.out.shape and x.dtype == op.out.dtype else None


def _identities(program: Program) -> dict[str, int]:
    """Drop identity relabel chains and neutral scalar ops (their readers read the source); returns counts."""
    outputs = {id(v) for v in program.output_values()}
    chains: dict[int, tuple[Value, Network]] = {}   # id(value) -> (source, one relabel from source to it)
    alias: dict[int, Value] = {}
    counts = {"relabel round trip(s)": 0, "scalar identit(ies)": 0}
    ops: list[Op] = []
    for op in program.ops:
        if alias and any(id(v) in alias for v in op.inputs()):
            op = substitute_inputs(op, alias)
        source, kind = None, ""
        if _plain_relabel(op):
            (u,) = op.operands
            root, inner = chains.get(id(u), (u, None))
            composite = merge(op, 0, inner) if inner is not None else None
            if composite is None:
                root, composite = u, op
            chains[id(op.out)] = (root, composite)
            source, kind = (root if _is_identity(composite, root) else None), "relabel round trip(s)"
        elif isinstance(op, Pointwise):
            source, kind = _neutral_operand(op), "scalar identit(ies)"
        if source is not None and id(op.out) not in outputs:
            alias[id(op.out)] = source
            counts[kind] += 1
            continue
        ops.append(op)
    program.ops = ops
    return counts


# -- 3: weight-only elementwise ops --------------------------------------------------------------------------------

class ElementwiseOnWeights:
    """``target(*args, **kwargs)`` with the weight tensors it is called on placed at the argument positions
    ``slots`` (the other arguments are Python constants)."""

    def __init__(self, name: str, target: Callable, args: tuple, kwargs: dict, slots: tuple[int, ...]):
        self.name, self.target, self.args, self.kwargs, self.slots = name, target, args, kwargs, slots

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        args = list(self.args)
        for k, t in zip(self.slots, tensors):
            args[k] = t
        return self.target(*args, **self.kwargs)

    def __repr__(self) -> str:
        shown = ["·" if k in self.slots else repr(a) for k, a in enumerate(self.args)]
        shown += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(shown)})"


def _cache_weight_only(program: Program, names: Names) -> int:
    """Replace each elementwise op over weight-only values by a cached call; returns how many."""
    producers = program.producers()
    cached = 0
    for k, op in enumerate(program.ops):
        if not isinstance(op, Pointwise) or not op.out.is_tensor or not deterministic(op) \
                or any(isinstance(v, Value) for v in op.kwargs.values()):
            continue
        slots = tuple(j for j, a in enumerate(op.args) if isinstance(a, Value))
        if not slots or len(slots) != len(op.inputs()):
            continue  # no tensor, or a tensor inside a container
        recipes = [weight_recipe(op.args[j], producers) for j in slots]
        if any(r is None for r in recipes) or (len(recipes) > 1 and any(r.fn is not None for r in recipes)):
            continue
        recipe = recipes[0] if len(recipes) == 1 else WeightRecipe(None, tuple(op.args[j] for j in slots))
        fn = ElementwiseOnWeights(op.fn, op.target, tuple(None if j in slots else a for j, a in enumerate(op.args)),
                                  dict(op.kwargs), slots)
        call = cached_call(names.target(f"weights_{op.out.name}"), op.out, fn, recipe)
        program.ops[k] = call
        producers[id(op.out)] = call
        cached += 1
    return cached


# -- 4: constant factors folded into a weight ----------------------------------------------------------------

def _scaling(op: Op) -> tuple[Value, Callable] | None:
    """(x, the same scaling as a function of a weight) when ``op`` is ``x * c``, ``c * x`` or ``x / c``."""
    if not isinstance(op, Pointwise) or op.fn not in ("mul", "div") or len(op.args) != 2 or op.kwargs:
        return None
    a, b = op.args
    if isinstance(a, Value) and is_scalar(b):
        x, c = a, b
    elif op.fn == "mul" and isinstance(b, Value) and is_scalar(a):
        x, c = b, a
    else:
        return None
    if not x.is_tensor or x.shape != op.out.shape or x.dtype != op.out.dtype:
        return None
    return x, functools.partial(torch.mul if op.fn == "mul" else torch.div, other=c)


class _ScaleFolder:
    def __init__(self, program: Program, names: Names):
        self.program = program
        self.names = names
        self.producers = program.producers()

    def weight_position(self, net: Network, exclude: int | None = None) -> int | None:
        """The smallest weight-only operand of ``net`` (the cheapest to scale)."""
        found = [(k, v) for k, v in enumerate(net.operands)
                 if k != exclude and isinstance(v.numel, int) and weight_recipe(v, self.producers) is not None]
        return min(found, key=lambda kv: kv[1].numel)[0] if found else None

    def scaled(self, v: Value, scale: Callable, base: str) -> Call:
        out = Value(self.names.fresh(f"{base}_scaled"), v.shape, v.dtype)
        return cached_call(self.names.target(f"scale_{base}"), out, scale, weight_recipe(v, self.producers))

    def fold_after(self, net: Network, scale: Callable, out: Value) -> list[Op] | None:
        """``scale(net)`` as ops ending with the rescaled Network (producing ``out``)."""
        k = self.weight_position(net)
        bias = None
        if net.epilogue:
            step = net.epilogue[0]
            if len(net.epilogue) != 1 or step.fn != "add" or len(step.args) != 2 or step.args[0] is not ACC \
                    or step.kwargs or not isinstance(step.args[1], Value) \
                    or weight_recipe(step.args[1], self.producers) is None:
                return None
            bias = step.args[1]
        if k is None:
            return None
        w = self.scaled(net.operands[k], scale, net.operands[k].name)
        new_ops: list[Op] = [w]
        epilogue = net.epilogue
        if bias is not None:
            b = self.scaled(bias, scale, bias.name)
            new_ops.append(b)
            epilogue = (EpilogueOp("add", torch.add, (ACC, b.out)),)
        operands = net.operands[:k] + (w.out,) + net.operands[k + 1:]
        return new_ops + [net.replace(out=out, operands=operands, epilogue=epilogue, plan=None)]

    def fold_before(self, net: Network, position: int, x: Value, scale: Callable) -> list[Op] | None:
        """``net`` reading ``x`` instead of ``scale(x)`` at ``position``, the scale moved into a weight."""
        k = self.weight_position(net, exclude=position)
        if k is None:
            return None
        w = self.scaled(net.operands[k], scale, net.operands[k].name)
        operands = list(net.operands)
        operands[position], operands[k] = x, w.out
        return [w, net.replace(operands=tuple(operands), plan=None)]


def _fold_scales(program: Program, names: Names) -> int:
    """Fold scalar factors next to Networks into their weights; returns how many."""
    users = program.users()
    outputs = {id(v) for v in program.output_values()}
    folder = _ScaleFolder(program, names)

    def only_reader(v: Value, op: Op) -> bool:
        return id(v) not in outputs and users.get(id(v), []) == [op]

    ops: list[Op | None] = []
    network_at: dict[int, int] = {}
    scaling_at: dict[int, int] = {}
    folded = 0
    for op in program.ops:
        replacement = None
        scaling = _scaling(op)
        if scaling is not None and id(scaling[0]) in network_at and only_reader(scaling[0], op):
            k = network_at[id(scaling[0])]
            replacement = folder.fold_after(ops[k], scaling[1], op.out)
            if replacement is not None:
                ops[k] = None
        elif isinstance(op, Network):
            for pos, v in enumerate(op.operands):
                j = scaling_at.get(id(v))
                if j is None or not only_reader(v, op) or sum(u is v for u in op.inputs()) != 1:
                    continue
                x, scale = _scaling(ops[j])
                replacement = folder.fold_before(op, pos, x, scale)
                if replacement is not None:
                    ops[j] = None
                    break
        if replacement is None:
            ops.append(op)
            if scaling is not None:
                scaling_at[id(op.out)] = len(ops) - 1
        else:
            ops.extend(replacement)
            folded += 1
        if isinstance(ops[-1], Network):
            network_at[id(ops[-1].out)] = len(ops) - 1
    program.ops = [op for op in ops if op is not None]
    return folded


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    new = program.copy()
    report = PassReport(NAME)
    writer = mutation(new)
    if writer is not None:
        report.notes.append("skipped: the program writes tensors in place")
        return new, report
    counts = _identities(new)
    names = Names(new)
    counts["weight-only op(s) cached"] = _cache_weight_only(new, names)
    counts["constant factor(s) folded into weights"] = _fold_scales(new, names)
    removed = new.eliminate_dead_code()
    report.changed = any(counts.values()) or removed > 0
    done = [f"{n} {what}" for what, n in counts.items() if n]
    report.notes.append((", ".join(done) or "nothing to simplify")
                        + (f"; {removed} dead op(s) removed" if removed else ""))
    report.details = dict(counts, removed=removed)
    return new, report


PASS = Pass(NAME, run, exact=True, doc=__doc__.splitlines()[0])
