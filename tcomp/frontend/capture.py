"""Capture: turn an ``nn.Module`` into a torch.fx graph with shapes and dtypes recorded.

1. ``torch.fx.symbolic_trace`` — keeps module boundaries and torch-level calls (readable, cheap).
2. Where fx cannot trace (Python control flow on shapes, unsupported constructs), ``torch.export`` at aten level.
3. Where both fail, :class:`CaptureError` names the construct, with both tracers' messages.

Shapes are then propagated at the example's sizes and at other batch sizes (dim 0) and sequence lengths (dim 1),
with fake tensors (real tensors where an op needs data). Each dimension is fitted with a polynomial of degree at
most one in each of the batch symbol ``B`` and the sequence symbol ``S`` (see :mod:`tcomp.ir.symbolic`): the
symbols every dimension fits stay symbolic and one compiled program serves every value of them (each at least 2);
the rest specialise to the example's sizes, and the compiled module compiles again on a new shape (a guard, never
a silent wrong answer).
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import sympy
import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from tcomp.ir.symbolic import B, S, Point, Size, fit


class CaptureError(RuntimeError):
    """Neither torch.fx nor torch.export could capture the model."""


@dataclass
class Captured:
    gm: fx.GraphModule
    method: str                       # "fx" or "export"
    example_inputs: tuple
    dynamic: dict[tuple[int, int], sympy.Symbol] = field(default_factory=dict)  # (input, dim) -> B or S
    example: Point = field(default_factory=dict)  # the example's value of each symbol
    notes: list[str] = field(default_factory=list)


def capture(model: torch.nn.Module, example_inputs: tuple, call: Any = None,
            symbols: tuple[sympy.Symbol, ...] = (B,)) -> Captured:
    """Trace ``model`` and record symbolic shapes in each node's ``meta`` (keys ``tcomp_shape``, ``tcomp_dtype``,
    ``tcomp_value``).

    ``example_inputs`` are the tensor arguments. ``call`` (optional) describes a forward with non-tensor
    arguments or ``*args``: it has ``tensor_names`` and ``call(forward, tensors)``, which calls the real forward with
    the tensors in place and the non-tensor values fixed (the compiled module guards on those values).
    ``symbols`` are the sizes tried as symbolic: the batch ``B`` (dim 0), the sequence ``S`` (dim 1); ``()``
    specialises the shapes to the example's.
    """
    notes: list[str] = []
    if call is not None:
        model = _with_fixed_arguments(model, call)
    try:
        gm = fx.symbolic_trace(model)
        method = "fx"
    except Exception as fx_error:  # noqa: BLE001 - any tracing failure falls through to export
        fx_msg = _describe_trace_error(fx_error)
        notes.append(f"torch.fx could not trace the model ({fx_msg}); used torch.export instead")
        try:
            gm = _export(model, example_inputs)
            method = "export"
        except Exception as export_error:  # noqa: BLE001
            raise CaptureError(
                f"cannot capture {type(model).__name__}: torch.fx failed with {fx_msg}; "
                f"torch.export failed with {_describe_trace_error(export_error)}") from export_error
    cap = Captured(gm=gm, method=method, example_inputs=tuple(example_inputs), notes=notes)
    _record_shapes(cap, symbols)
    return cap


def _with_fixed_arguments(model: torch.nn.Module, call: Any) -> torch.nn.Module:
    """A module sharing ``model``'s submodules, parameters and buffers (so qualified names are unchanged) whose
    forward takes only the tensor arguments, as named parameters.

    torch.fx creates a placeholder for every parameter of ``forward`` (read from its code object), so the
    forward is generated with exactly the tensor parameters.
    """
    names = call.tensor_names
    for n in names:
        if not n.isidentifier():
            raise CaptureError(f"argument name {n!r} is not an identifier")
    params = ", ".join(names)
    namespace: dict[str, Any] = {}
    packed = f"({params}{',' if names else ''})"
    exec(f"def forward(self, {params}):\n    return self._call(self._inner_forward, {packed})\n", namespace)

    class FixedArguments(torch.nn.Module):
        forward = namespace["forward"]

    wrapper = FixedArguments()
    wrapper._modules = model._modules
    wrapper._parameters = model._parameters
    wrapper._buffers = model._buffers
    wrapper.training = model.training
    object.__setattr__(wrapper, "_inner_forward", model.forward)
    object.__setattr__(wrapper, "_call", call.call)
    FixedArguments.__name__ = type(model).__name__
    return wrapper


def _export(model: torch.nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """torch.export's graph as a plain GraphModule: positional tensor inputs, the model's own output structure.

    ``ExportedProgram.module()`` flattens inputs and outputs with pytree code generation; tcomp's inputs are
    already a flat tuple of tensors, so only the output structure is put back into the output node.
    """
    ep = torch.export.export(model, tuple(example_inputs), strict=False)
    gm = ep.module()
    codegen = gm.graph._codegen
    out_spec = getattr(getattr(codegen, "pytree_info", None), "out_spec", None)
    if out_spec is not None:
        out_node = next(n for n in gm.graph.nodes if n.op == "output")
        out_node.args = (pytree.tree_unflatten(list(out_node.args[0]), out_spec),)
        gm.graph._codegen = fx.graph.CodeGen()
        gm.recompile()
    return gm


def _describe_trace_error(err: BaseException) -> str:
    """The error type and message plus the user-code line that triggered it, when the traceback has one."""
    msg = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if "/torch/" not in f.filename and "/tcomp/" not in f.filename]
    if frames:
        f = frames[-1]
        msg += f" (at {f.filename}:{f.lineno}: {f.line})"
    return msg


# -- shape propagation ------------------------------------------------------------------------------------------

class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.results: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.results[n.name] = _summarise(out)
        return out


def _summarise(x: Any) -> Any:
    """Replace tensors by (shape, dtype) so results of different runs can be compared."""
    if isinstance(x, torch.Tensor):
        return TensorMeta(tuple(int(s) for s in x.shape), x.dtype)
    if isinstance(x, torch.Size):
        return tuple(int(s) for s in x)
    if isinstance(x, (list, tuple)):
        return type(x)(_summarise(v) for v in x) if not hasattr(x, "_fields") else tuple(_summarise(v) for v in x)
    if isinstance(x, dict):
        return {k: _summarise(v) for k, v in x.items()}
    return x


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple
    dtype: torch.dtype


def propagate(gm: fx.GraphModule, inputs: tuple, fake: bool) -> dict[str, Any]:
    """Every node's result (shapes and dtypes as :class:`TensorMeta` leaves) from running ``gm`` on ``inputs``:
    with ``fake``, on fake tensors (no computation)."""
    rec = _Recorder(gm)
    if fake:
        # a failure is expected and handled (a real run follows); keep torch's fake-tensor logger quiet about it
        with _quiet("torch._subclasses.fake_tensor"):
            return _propagate_fake(rec, inputs)
    with torch.no_grad():
        rec.run(*inputs)
    return rec.results


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _propagate_fake(rec: _Recorder, inputs: tuple) -> dict[str, Any]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_inputs = pytree.tree_map(lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t, inputs)
        with torch.no_grad():
            rec.run(*fake_inputs)
    return rec.results


def _resized(inputs: tuple, dims: list[tuple[int, int]], size: int) -> tuple:
    """The inputs with each (input, dim) of ``dims`` resized to ``size`` (entries repeated cyclically, so that token
    ids and masks stay valid)."""
    out = list(inputs)
    for p, d in dims:
        t = out[p]
        reps = -(-size // t.shape[d])
        out[p] = torch.cat([t] * reps, dim=d).narrow(d, 0, size).clone()
    return tuple(out)


@contextlib.contextmanager
def preserved_state(module: torch.nn.Module):
    """Run code that executes the model (shape propagation, reference outputs) without leaving a trace in it:
    buffers a training-mode forward updates in place (batch norm's running statistics and its
    ``num_batches_tracked``) are restored afterwards."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                if b.shape == value.shape:
                    b.copy_(value)


def _record_shapes(cap: Captured, symbols: tuple[sympy.Symbol, ...]) -> None:
    with preserved_state(cap.gm):
        _record_shapes_now(cap, symbols)


def _record_shapes_now(cap: Captured, symbols: tuple[sympy.Symbol, ...]) -> None:
    """Shapes at the example inputs, and for ``symbols`` at other batch sizes and sequence lengths
    (:func:`_candidate_dims`), every size fitted as a polynomial in them (:func:`tcomp.ir.symbolic.fit`). A symbol
    whose runs fail or do not fit is dropped: the shapes then specialise to its example size (the notes say so)."""
    gm, inputs = cap.gm, cap.example_inputs
    base = _propagate_any(gm, inputs)
    candidates = {sym: dims for sym, dims in _candidate_dims(inputs).items() if sym in symbols}
    example = {sym: inputs[dims[0][0]].shape[dims[0][1]] for sym, dims in candidates.items()}
    runs = [(dict(example), base)]
    for sym, dims in list(candidates.items()):
        try:
            runs += [({**example, sym: example[sym] + grown},
                      _propagate_any(gm, _resized(inputs, dims, example[sym] + grown))) for grown in (2, 5)]
        except Exception as e:  # noqa: BLE001 - a model that runs only at its example size specialises that size
            what = "batch size" if sym is B else "length of dimension 1"
            cap.notes.append(f"shapes specialised to the example's {what} (another fails: {type(e).__name__})")
            runs = _without(runs, sym, example)
            del candidates[sym], example[sym]
    if len(candidates) == 2:  # one run with both grown: the B*S terms of flattened [B, S, ...] tensors
        grown = {sym: example[sym] + 2 for sym in candidates}
        try:
            runs.append((grown, _propagate_any(gm, _resized(_resized(inputs, candidates[B], grown[B]),
                                                            candidates[S], grown[S]))))
        except Exception:  # noqa: BLE001
            runs = _without(runs, S, example)
            del candidates[S], example[S]
    fitted = _fit_all(base, runs, list(candidates), cap) if candidates else None
    table, kept = fitted if fitted is not None else (base, [])
    cap.dynamic = {dim: sym for sym in kept for dim in candidates[sym]}
    cap.example = {sym: example[sym] for sym in kept}
    for node in gm.graph.nodes:
        if node.op == "output" or node.name not in table:
            continue
        r = table[node.name]
        if isinstance(r, TensorMeta):
            node.meta["tcomp_shape"] = r.shape
            node.meta["tcomp_dtype"] = r.dtype
        else:
            node.meta["tcomp_value"] = r


def _without(runs: list[tuple[Point, dict]], sym: sympy.Symbol, example: Point) -> list[tuple[Point, dict]]:
    """The runs at the example's value of ``sym``, their points without it."""
    return [({s: v for s, v in p.items() if s is not sym}, r) for p, r in runs if p[sym] == example[sym]]


def _candidate_dims(inputs: tuple) -> dict[sympy.Symbol, list[tuple[int, int]]]:
    """The (input, dim) pairs tried as the batch (dim 0 of the inputs whose dim 0 is the first input's) and as the
    sequence (dim 1 of the inputs of rank 2 or more whose dim 1 is the first such input's, when at least 2: a dim 1
    of size 1 is a channel, not a sequence)."""
    tensors = [(k, t) for k, t in enumerate(inputs)
               if isinstance(t, torch.Tensor) and t.dim() > 0 and not isinstance(t, torch.nn.Parameter)]
    found: dict[sympy.Symbol, list[tuple[int, int]]] = {}
    if tensors:
        found[B] = [(k, 0) for k, t in tensors if t.shape[0] == tensors[0][1].shape[0]]
    ranked = [(k, t) for k, t in tensors if t.dim() >= 2]
    if ranked and ranked[0][1].shape[1] >= 2:
        found[S] = [(k, 1) for k, t in ranked if t.shape[1] == ranked[0][1].shape[1]]
    return found


def _propagate_any(gm: fx.GraphModule, inputs: tuple) -> dict[str, Any]:
    try:
        return propagate(gm, inputs, fake=True)
    except Exception:  # noqa: BLE001 - data-dependent ops need real tensors
        return propagate(gm, inputs, fake=False)


def _fit_all(base: dict, runs: list[tuple[Point, dict]], symbols: list[sympy.Symbol],
             cap: Captured) -> tuple[dict, list[sympy.Symbol]] | None:
    """Every shape and int of the base results fitted across the runs, and the symbols it is symbolic in: all of
    ``symbols``, else the batch alone (the runs at the example's sequence length), else None."""
    example = runs[0][0]
    attempts = [symbols] + ([[B]] if len(symbols) == 2 else [])
    for kept in attempts:
        subset = [(p, res) for p, res in runs if all(p[sym] == example[sym] for sym in symbols if sym not in kept)]
        try:
            return {name: _fit_one(r0, [(p, res[name]) for p, res in subset]) for name, r0 in base.items()}, kept
        except _NotAffine:
            what = " and ".join("the batch size" if sym is B else "the length of dimension 1" for sym in kept)
            cap.notes.append(f"shapes specialised to the example's sizes (some size is not a polynomial of degree "
                             f"one in {what})")
    return None


class _NotAffine(Exception):
    pass


def _fit_one(r0: Any, samples: list[tuple[Point, Any]]) -> Any:
    if isinstance(r0, TensorMeta):
        if any(not isinstance(s, TensorMeta) or len(s.shape) != len(r0.shape) for _, s in samples):
            raise _NotAffine
        shape = tuple(_fit_int([(b, s.shape[d]) for b, s in samples]) for d in range(len(r0.shape)))
        return TensorMeta(shape, r0.dtype)
    if isinstance(r0, bool) or r0 is None:
        return r0
    if isinstance(r0, int):
        return _fit_int([(b, s) for b, s in samples])
    if isinstance(r0, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(r0) for _, s in samples):
            raise _NotAffine
        return type(r0)(_fit_one(r0[i], [(b, s[i]) for b, s in samples]) for i in range(len(r0)))
    if isinstance(r0, dict):
        return {k: _fit_one(v, [(b, s[k]) for b, s in samples]) for k, v in r0.items()}
    if isinstance(r0, float) and any(s != r0 for _, s in samples):
        return VARIES
    return r0


class _Varies:
    """A non-integer value that changes with the batch size (kept as a computed value, never folded)."""

    def __repr__(self) -> str:
        return "<varies with batch>"


VARIES = _Varies()


def _fit_int(samples: list[tuple[Point, int]]) -> Size:
    if any(not isinstance(s, int) or isinstance(s, bool) for _, s in samples):
        raise _NotAffine
    f = fit(samples)
    if f is None:
        raise _NotAffine
    return f
