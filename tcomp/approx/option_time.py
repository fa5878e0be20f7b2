"""Measured time of a piece of a Program: a site's ops run alone on random inputs, as tcomp would run them.

An approximation is eligible only if it is faster than the dense layer *on this device*, measured — FLOP counts
mislead (a rank-256 factorization of a 384-wide layer halves nothing, a skinny Kronecker factor runs at a fraction
of peak). :func:`time_ops` runs the ops as their own small program (:func:`tcomp.ir.subprogram`, planned and
emitted by :func:`tcomp.codegen.runnable.runnable`) on random inputs of the site's shapes and returns the fastest
of several runs; :func:`time_against` times an option in turns with the dense op it would replace and returns the
ratio, which a load change on a shared machine does not skew. Results are kept in the cache table
``layer-times`` (:mod:`tcomp.cache`) by the ops' structure, shapes and dtypes, so the same layer shape is measured
once per machine.
"""
from __future__ import annotations

import hashlib

from tcomp.cache import DiskCache
from tcomp.codegen.runnable import random_inputs, runnable, time_in_turns
from tcomp.cost.model import MachineModel
from tcomp.ir import Network, Op, Pointwise, Program, Value, subprogram
from tcomp.ir.symbolic import Point, evaluate


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and v > 0


def signature(program: Program, at: Point) -> str:
    """A key for the cache: each op's structure and every value's concrete shape and dtype (not their names)."""
    parts = [f"in:{[evaluate(s, at) for s in v.shape]}:{v.dtype}:{v.stride_order}" for v in program.inputs]
    for op in program.ops:
        vals = [f"{[evaluate(s, at) for s in v.shape]}:{v.dtype}" for v in op.inputs() if v.is_tensor]
        if isinstance(op, Network):
            head = f"net:{op.grouped_equation()}:{op.compute_dtype}:{[e.fn for e in op.epilogue]}"
        elif isinstance(op, Pointwise):
            head = f"pw:{op.fn}"
        else:
            head = f"call:{op.target_name}:{[a for a in op.args if not isinstance(a, Value)]}"
        parts.append(head + ":" + ",".join(vals))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def time_ops(ops: list[Op], at: Point, *, training: bool = False, repeats: int = 9,
             machine: MachineModel | None = None) -> float:
    """Seconds per call (the fastest of ``repeats``) of ``ops`` run as tcomp would, on random inputs (cached;
    :func:`time_against` lowers the cached time when it measures these ops faster). ``at`` gives each symbol's
    value (the program's example)."""
    program = subprogram(ops, at)
    cache = DiskCache.open("layer-times")
    key = signature(program, at)
    found = cache.get(key, valid=_positive)
    if found is DiskCache.MISSING:
        gm, args = runnable(program, training=training, machine=machine), random_inputs(program, at)
        found = time_in_turns({"ops": (gm, args)}, rounds=repeats, max_rounds=repeats, statistic=min)["ops"]
        cache.put(key, found)
    return found


def time_against(ops: list[Op], reference: list[Op], at: Point, *, training: bool = False,
                 rounds: int = 9, machine: MachineModel | None = None) -> float:
    """How long ``ops`` take as a fraction of ``reference`` (a site's dense op): the two run in turns, ``rounds``
    times, and the fastest of each are compared — so a burst of other work on a shared machine slows both alike
    instead of making one look slow for good (a single-shot time measured under load, cached, once kept MiniLM's
    bf16 feed-forward layers at 43 ms against 13 ms quiet and the selection left them in float32). Cached by both
    signatures; the reference's own cached time (:func:`time_ops`) is lowered to the fastest seen."""
    prog, ref = subprogram(ops, at), subprogram(reference, at)
    cache = DiskCache.open("layer-times")
    key_ref = signature(ref, at)
    key = f"{signature(prog, at)}/{key_ref}"
    found = cache.get(key, valid=_positive)
    if found is DiskCache.MISSING:
        t = time_in_turns({"ops": (runnable(prog, training=training, machine=machine), random_inputs(prog, at)),
                           "reference": (runnable(ref, training=training, machine=machine), random_inputs(ref, at))},
                          rounds=rounds, max_rounds=rounds, statistic=min)
        found = t["ops"] / t["reference"]
        cache.put(key, found)
        known = cache.get(key_ref, valid=_positive)
        if known is DiskCache.MISSING or t["reference"] < known:
            cache.put(key_ref, t["reference"])
    return found
