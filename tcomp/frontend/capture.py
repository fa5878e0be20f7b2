"""Capture: turn an ``nn.Module`` into a torch.fx graph with shapes and dtypes recorded.

1. ``torch.fx.symbolic_trace`` — keeps module boundaries and torch-level calls (readable, cheap).
2. Where fx cannot trace (Python control flow on shapes, unsupported constructs), ``torch.export`` at aten level.
3. Where both fail, :class:`UntraceableError` names the construct, with both tracers' messages, and the model is
   compiled in pieces through TorchDynamo (:mod:`tcomp.frontend.dynamo`).

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

from .huggingface import prepare
from .outputs import plain


class CaptureError(RuntimeError):
    """The model, or the arguments of a call, cannot be captured as one program."""


class UntraceableError(CaptureError):
    """Neither torch.fx nor torch.export could trace the model (the message has both tracers' reasons): the model is
    compiled in pieces around the constructs that stop them (:mod:`tcomp.frontend.dynamo`)."""


@dataclass
class Captured:
    gm: fx.GraphModule
    method: str                       # "fx" or "export"
    example_inputs: tuple
    dynamic: dict[tuple[int, int], sympy.Symbol] = field(default_factory=dict)  # (input, dim) -> B or S
    example: Point = field(default_factory=dict)  # the example's value of each symbol
    ranges: dict[sympy.Symbol, tuple[int, int]] = field(default_factory=dict)  # the sizes each symbol was fitted on
    notes: list[str] = field(default_factory=list)
    flat_spec: pytree.TreeSpec | None = None   # the structure of the flat outputs gm returns (see frontend.outputs)
    size_guards: Any = None   # export's checks on the input sizes (see _export), called with the input tensors


def capture(model: torch.nn.Module, example_inputs: tuple, call: Any = None,
            symbols: tuple[sympy.Symbol, ...] = (B,), real_tensors: bool = False) -> Captured:
    """Trace ``model`` and record symbolic shapes in each node's ``meta`` (keys ``tcomp_shape``, ``tcomp_dtype``,
    ``tcomp_value``).

    ``example_inputs`` are the tensor arguments. ``call`` (optional) describes a forward with non-tensor
    arguments or ``*args``: it has ``tensor_names`` and ``call(forward, tensors)``, which calls the real forward with
    the tensors in place and the non-tensor values fixed (the compiled module guards on those values).
    ``symbols`` are the sizes tried as symbolic: the batch ``B`` (dim 0), the sequence ``S`` (dim 1); ``()``
    specialises the shapes to the example's. ``real_tensors``: propagate shapes by running the graph on real
    tensors (for a model whose example run is cheap: fake tensors cost about 2 ms of dispatch per op, and 3 s to
    start in a fresh process) rather than on fake ones first.
    """
    notes: list[str] = []
    prepare(model)
    if call is not None:
        model = _with_fixed_arguments(model, call)
    flat_spec = size_guards = None
    try:
        gm = fx.symbolic_trace(model)
        method = "fx"
    except Exception as fx_error:  # noqa: BLE001 - any tracing failure falls through to export
        fx_msg = _describe_trace_error(fx_error)
        notes.append(f"torch.fx could not trace the model ({fx_msg}); used torch.export instead")
        try:
            gm, flat_spec, size_guards = _export(model, example_inputs)
            method = "export"
        except Exception as export_error:  # noqa: BLE001
            raise UntraceableError(
                f"cannot capture {type(model).__name__}: torch.fx failed with {fx_msg}; "
                f"torch.export failed with {_describe_trace_error(export_error)}") from export_error
    cap = Captured(gm=gm, method=method, example_inputs=tuple(example_inputs), notes=notes,
                   flat_spec=flat_spec, size_guards=size_guards)
    _record_shapes(cap, symbols, real_tensors)
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


def _export(model: torch.nn.Module, example_inputs: tuple) -> tuple[fx.GraphModule, pytree.TreeSpec | None, Any]:
    """torch.export's graph as a plain GraphModule with positional tensor inputs, the structure of its flat outputs
    where they are flat (else None), and its size guards.

    ``ExportedProgram.module()`` flattens inputs and outputs with pytree code generation; tcomp's inputs are
    already a flat tuple of tensors. The output structure is put back into the output node where fx can write it
    (tuples, lists, dicts); other structures are rebuilt around the runner (:mod:`tcomp.frontend.outputs`). The
    candidate batch and sequence dims are exported as ``Dim.AUTO``, so the graph runs at other sizes where the
    model allows (capture then fits them). What the model's Python decided on those sizes (``if x.shape[0] > 2``,
    ``if B < S``, a position table's length) export records as guards: ``_guards_fn`` raises an AssertionError
    where they fail. It runs inside the graph while capture probes other sizes, and the compiled module calls it
    before running the program: a call that fails it is another signature.
    """
    dims: dict[int, dict[int, Any]] = {}
    for sym_dims in _candidate_dims(example_inputs).values():
        for k, d in sym_dims:
            dims.setdefault(k, {})[d] = torch.export.Dim.AUTO
    shapes = tuple(dims.get(k) for k in range(len(example_inputs)))
    ep = torch.export.export(model, tuple(example_inputs), dynamic_shapes=shapes, strict=False)
    if any(_is_transform(n.target) for n in ep.graph_module.graph.nodes):
        # torch.vmap / torch.func transforms stay as regions of per-sample ops between _add_batch_dim and
        # _remove_batch_dim; retracing at the aten level applies their batching rules (plain batched ops)
        ep = ep.run_decompositions({})
    gm = ep.module()
    codegen = gm.graph._codegen
    out_spec = getattr(getattr(codegen, "pytree_info", None), "out_spec", None)
    if out_spec is not None:
        if plain(out_spec):
            out_node = next(n for n in gm.graph.nodes if n.op == "output")
            out_node.args = (pytree.tree_unflatten(list(out_node.args[0]), out_spec),)
        gm.graph._codegen = fx.graph.CodeGen()
        gm.recompile()
    return gm, None if out_spec is None or plain(out_spec) else out_spec, getattr(gm, "_guards_fn", None)


def _is_transform(target: Any) -> bool:
    """A function of torch.func's transforms (vmap's batch levels, grad's wrappers) in a graph."""
    return callable(target) and getattr(target, "__module__", "").startswith(("torch._functorch",
                                                                               "torch._C._functorch"))


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
    devices = sorted({t.device.index or 0 for t in inputs if isinstance(t, torch.Tensor) and t.is_cuda})
    with torch.no_grad(), torch.random.fork_rng(devices=devices):  # the caller's random streams do not move
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


def _record_shapes(cap: Captured, symbols: tuple[sympy.Symbol, ...], real_tensors: bool) -> None:
    with preserved_state(cap.gm):
        _record_shapes_now(cap, symbols, real_tensors)


def _record_shapes_now(cap: Captured, symbols: tuple[sympy.Symbol, ...], real_tensors: bool) -> None:
    """Shapes at the example inputs and, for ``symbols``, at other batch sizes and sequence lengths
    (:func:`_candidate_dims`, :func:`_probe_sizes`), every size fitted as a polynomial in them
    (:func:`tcomp.ir.symbolic.fit`). A fit is only known to hold between the sizes it was probed at: each symbol
    keeps the widest range of probes its shapes fit (``cap.ranges``; the compiled module serves that range, and
    compiles again outside it). A symbol with no such range is dropped, and the shapes specialise to its example
    size (the notes say so)."""
    gm, inputs = cap.gm, cap.example_inputs
    base = _propagate_any(gm, inputs, real_tensors)
    candidates = {sym: dims for sym, dims in _candidate_dims(inputs).items() if sym in symbols}
    example = {sym: inputs[dims[0][0]].shape[dims[0][1]] for sym, dims in candidates.items()}
    windows: dict[sympy.Symbol, list[tuple[Point, dict]]] = {}
    for sym, dims in candidates.items():
        probes = []
        for size in _probe_sizes(example[sym]):
            try:
                probes.append(({**example, sym: size}, _propagate_any(gm, _resized(inputs, dims, size),
                                                                  real_tensors)))
            except Exception:  # noqa: BLE001 - the model does not run at that size: a narrower range
                continue
        window = _widest_fitting(base, example, sym, probes)
        if window is None:
            what = "batch size" if sym is B else "length of dimension 1"
            cap.notes.append(f"shapes specialised to the example's {what} (no range of probed sizes around it "
                             f"fits: a size the model fails at, or one that is not a polynomial of degree one)")
        else:
            windows[sym] = window
    runs = [(dict(example), base)] + [run for window in windows.values() for run in window]
    if len(windows) == 2:  # one run with both grown: the B*S terms of flattened [B, S, ...] tensors
        grown = {sym: example[sym] + 2 for sym in windows}
        try:
            grown_inputs = _resized(_resized(inputs, candidates[B], grown[B]), candidates[S], grown[S])
            runs.append((grown, _propagate_any(gm, grown_inputs, real_tensors)))
        except Exception:  # noqa: BLE001
            del windows[S]
    kept = list(windows)
    runs = [({sym: p[sym] for sym in kept}, r) for p, r in runs if all(p[s] == example[s] for s in candidates
                                                                       if s not in kept)]
    fitted = _fit_all(base, runs, kept, cap) if kept else None
    table, kept = fitted if fitted is not None else (base, [])
    cap.dynamic = {dim: sym for sym in kept for dim in candidates[sym]}
    cap.example = {sym: example[sym] for sym in kept}
    cap.ranges = {sym: (min(p[sym] for p, _ in runs), max(p[sym] for p, _ in runs)) for sym in kept}
    sized: set[fx.Node] = set()  # the non-tensor values computed from a symbolic size
    for node in gm.graph.nodes:
        if node.op == "output" or node.name not in table:
            continue
        r = table[node.name]
        if isinstance(r, TensorMeta):
            node.meta["tcomp_shape"] = r.shape
            node.meta["tcomp_dtype"] = r.dtype
            continue
        if _symbolic(r) or any(a in sized for a in node.all_input_nodes):
            sized.add(node)
            if isinstance(r, bool):
                # equal at every size probed is not equal at every size between them (``x.shape[1] == 12``): a
                # flag computed from a symbolic size is computed on every call, never folded
                r = VARIES
        node.meta["tcomp_value"] = r


def _symbolic(value: Any) -> bool:
    """Whether a fitted value is, or holds, a size that is a polynomial in the symbols."""
    if isinstance(value, (tuple, list)):
        return any(_symbolic(v) for v in value)
    return isinstance(value, sympy.Expr) and bool(value.free_symbols)


def _probe_sizes(example: int) -> list[int]:
    """Where a symbol is probed besides its example: the smallest symbolic size (2), two sizes just above the
    example (enough to fit a line and check it), and one far above (twice the example and 8 more: shape
    propagation on real tensors costs in proportion) — a size that is constant only above some length
    (``x[:, :10]``) or a flag that flips (``x.shape[1] > 6``) shows up as a size that does not fit."""
    return sorted({2, example + 2, example + 5, 2 * example + 8} - {example})


def _widest_fitting(base: dict, example: Point, sym: sympy.Symbol,
                    probes: list[tuple[Point, dict]]) -> list[tuple[Point, dict]] | None:
    """The probes of the widest range around the example whose shapes all fit one polynomial in ``sym`` (dropping
    the far probe first, then the smallest), or None. The two sizes just above the example must be in it."""
    near = {example[sym] + 2, example[sym] + 5}
    if not near <= {p[sym] for p, _ in probes}:
        return None
    far, small = max(p[sym] for p, _ in probes), min(p[sym] for p, _ in probes)
    for dropped in ((), (far,), (small,), (far, small)):
        window = [(p, r) for p, r in probes if p[sym] in near or p[sym] not in dropped]
        runs = [({sym: example[sym]}, base)] + [({sym: p[sym]}, r) for p, r in window]
        try:
            for name, r0 in base.items():
                _fit_one(r0, [(p, res[name]) for p, res in runs])
        except _DoesNotFit:
            continue
        return window
    return None


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


def _propagate_any(gm: fx.GraphModule, inputs: tuple, real_tensors: bool) -> dict[str, Any]:
    if real_tensors:
        return propagate(gm, inputs, fake=False)
    try:
        return propagate(gm, inputs, fake=True)
    except Exception:  # noqa: BLE001 - data-dependent ops need real tensors
        return propagate(gm, inputs, fake=False)


def _fit_all(base: dict, runs: list[tuple[Point, dict]], symbols: list[sympy.Symbol],
             cap: Captured) -> tuple[dict, list[sympy.Symbol]] | None:
    """Every shape, int and flag of the base results fitted across the runs, and the symbols it is symbolic in: all of
    ``symbols``, else the batch alone (the runs at the example's sequence length), else None."""
    example = runs[0][0]
    attempts = [symbols] + ([[B]] if len(symbols) == 2 else [])
    for kept in attempts:
        subset = [(p, res) for p, res in runs if all(p[sym] == example[sym] for sym in symbols if sym not in kept)]
        try:
            return {name: _fit_one(r0, [(p, res[name]) for p, res in subset]) for name, r0 in base.items()}, kept
        except _DoesNotFit:
            what = " and ".join("the batch size" if sym is B else "the length of dimension 1" for sym in kept)
            cap.notes.append(f"shapes specialised to the example's sizes (some size is not a polynomial of degree "
                             f"one in {what})")
    return None


class _DoesNotFit(Exception):
    pass


def _fit_one(r0: Any, samples: list[tuple[Point, Any]]) -> Any:
    if isinstance(r0, TensorMeta):
        if any(not isinstance(s, TensorMeta) or len(s.shape) != len(r0.shape) for _, s in samples):
            raise _DoesNotFit
        shape = tuple(_fit_int([(b, s.shape[d]) for b, s in samples]) for d in range(len(r0.shape)))
        return TensorMeta(shape, r0.dtype)
    if isinstance(r0, bool) or r0 is None:  # a flag computed from a size (``x.shape[1] > 6``) must not flip
        if any(s != r0 for _, s in samples):
            raise _DoesNotFit
        return r0
    if isinstance(r0, int):
        return _fit_int([(b, s) for b, s in samples])
    if isinstance(r0, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(r0) for _, s in samples):
            raise _DoesNotFit
        return type(r0)(_fit_one(r0[i], [(b, s[i]) for b, s in samples]) for i in range(len(r0)))
    if isinstance(r0, dict):
        return {k: _fit_one(v, [(b, s[k]) for b, s in samples]) for k, v in r0.items()}
    if isinstance(r0, float) and any(s != r0 for _, s in samples):
        return VARIES
    return r0


class _Varies:
    """A non-integer value that changes with the symbolic sizes (kept as a computed value, never folded)."""

    def __repr__(self) -> str:
        return "<varies with the sizes>"


VARIES = _Varies()


def _fit_int(samples: list[tuple[Point, int]]) -> Size:
    if any(not isinstance(s, int) or isinstance(s, bool) for _, s in samples):
        raise _DoesNotFit
    f = fit(samples)
    if f is None:
        raise _DoesNotFit
    return f
