"""Measured time of a piece of a Program: a site's ops run alone on random inputs, as tcomp would emit them.

An approximation is eligible only if it is faster than the dense layer *on this device*, measured — FLOP counts
mislead (a rank-256 factorization of a 384-wide layer halves nothing, a skinny Kronecker factor runs at a fraction
of peak). :func:`time_ops` plans (contraction_order) and emits the ops as their own small program, runs it on
random inputs of the site's shapes and returns the fastest of several runs; :func:`time_against` times an option
in turns with the dense op it would replace and returns the ratio, which a load change on a shared machine does not
skew. Results are cached on disk by the ops' shapes, dtypes, structure and the thread count
(``tcomp.calibrate.cache_dir()``), so the same layer shape is measured once.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tcomp.cost.machine import cache_dir
from tcomp.ir.program import Call, Network, Pointwise, Program, Value
from tcomp.ir.symbolic import evaluate
from tcomp.timing import fastest_time, in_turns

_CACHE: dict[str, float] | None = None


def _cache_path() -> Path:
    return cache_dir() / f"layer-times-t{torch.get_num_threads()}-{torch.__version__}.json"


def _load() -> dict[str, float]:
    global _CACHE
    if _CACHE is None:
        try:
            _CACHE = json.loads(_cache_path().read_text())
        except (OSError, ValueError):
            _CACHE = {}
    return _CACHE


def _store(key: str, value: float) -> None:
    cache = _load()
    cache[key] = value
    try:
        path = _cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache))
    except OSError:
        pass


def subprogram(ops: list, batch: int | None, name: str = "site") -> Program:
    """The ops as a program of their own: values they read but do not define become inputs (or constants)."""
    defined = {id(op.out) for op in ops}
    inputs: list[Value] = []
    constants: dict[str, Value] = {}
    seen: set[int] = set()
    for op in ops:
        for v in op.inputs():
            if id(v) in defined or id(v) in seen:
                continue
            seen.add(id(v))
            if v.kind == "const":
                constants[v.name] = v
            else:
                inputs.append(Value(v.name, v.shape, v.dtype, kind="input", stride_order=v.stride_order))
    rename = {v.name: v for v in inputs}
    from tcomp.ir.program import substitute_inputs

    mapping = {}
    for op in ops:
        for v in op.inputs():
            if v.name in rename and v.kind != "const":
                mapping[id(v)] = rename[v.name]
    new_ops = [substitute_inputs(op, mapping) for op in ops]
    batch_inputs = [(k, 0) for k, v in enumerate(inputs) if v.shape and not isinstance(v.shape[0], int)]
    return Program(name, inputs, constants, new_ops, new_ops[-1].out, batch_inputs=batch_inputs,
                   example_batch=batch)


def signature(program: Program, batch: int) -> str:
    """A key for the cache: each op's structure and every value's concrete shape and dtype (not their names)."""
    parts = [f"in:{[evaluate(s, batch) for s in v.shape]}:{v.dtype}:{v.stride_order}" for v in program.inputs]
    for op in program.ops:
        vals = [f"{[evaluate(s, batch) for s in v.shape]}:{v.dtype}" for v in op.inputs() if v.is_tensor]
        if isinstance(op, Network):
            head = f"net:{op.grouped_equation()}:{op.compute_dtype}:{[e.fn for e in op.epilogue]}"
        elif isinstance(op, Pointwise):
            head = f"pw:{op.fn}"
        else:
            head = f"call:{op.target_name}:{[a for a in op.args if not isinstance(a, Value)]}"
        parts.append(head + ":" + ",".join(vals))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def time_ops(ops: list, batch: int | None, *, training: bool = False, repeats: int = 9) -> float:
    """Seconds per call (the fastest of ``repeats``) of ``ops`` planned and emitted as tcomp would, on random
    inputs (cached; :func:`time_against` lowers the cached time when it measures these ops faster)."""
    b = batch or 1
    program = subprogram(ops, batch)
    key = signature(program, b)
    cache = _load()
    if key in cache:
        return cache[key]
    gm, args = _runnable(program, b, training)
    t = fastest_time(gm, args, repeats)
    _store(key, t)
    return t


def time_against(ops: list, reference: list, batch: int | None, *, training: bool = False,
                 rounds: int = 9) -> float:
    """How long ``ops`` take as a fraction of ``reference`` (a site's dense op): the two run in turns, ``rounds``
    times, and the fastest of each are compared — so a burst of other work on a shared machine slows both alike
    instead of making one look slow for good (a single-shot time measured under load, cached, once kept MiniLM's
    bf16 feed-forward layers at 43 ms against 13 ms quiet and the selection left them in float32). Cached by both
    signatures; the reference's own cached time (:func:`time_ops`) is lowered to the fastest seen."""
    b = batch or 1
    prog, ref = subprogram(ops, batch), subprogram(reference, batch)
    key_ref = signature(ref, b)
    key = f"{signature(prog, b)}/{key_ref}"
    cache = _load()
    if key not in cache:
        gm, args = _runnable(prog, b, training)
        gm_ref, args_ref = _runnable(ref, b, training)
        with torch.no_grad():
            t = in_turns({"ops": lambda: gm(*args), "reference": lambda: gm_ref(*args_ref)}, rounds=rounds,
                         max_rounds=rounds, statistic=min)
        fastest_ref = t["reference"]
        _store(key, t["ops"] / fastest_ref)
        if fastest_ref < cache.get(key_ref, float("inf")):
            _store(key_ref, fastest_ref)
    return cache[key]


def _runnable(program: Program, batch: int, training: bool):
    """``program`` planned (contraction_order) and emitted as tcomp would, and random inputs for it."""
    from tcomp.passes import contraction_order

    from tcomp.codegen.emit import emit
    from tcomp.passmanager import PassContext

    program, _ = contraction_order.run(program, PassContext(example_inputs=(), training=training))
    modules = {op.target: op.module for op in program.ops if isinstance(op, Call) and op.kind == "module"}
    return emit(program, modules), random_inputs(program, batch)


def random_inputs(program: Program, batch: int) -> list[torch.Tensor]:
    """Inputs of ``program``'s shapes at ``batch``: seeded normal floats, zero integers (valid indices)."""
    g = torch.Generator().manual_seed(0)
    args = []
    for v in program.inputs:
        shape = [evaluate(s, batch) for s in v.shape]
        if v.dtype.is_floating_point:
            args.append(torch.randn(shape, generator=g).to(v.dtype))
        else:
            args.append(torch.zeros(shape, dtype=v.dtype))
    return args
