"""Capture: turn an ``nn.Module`` into a torch.fx graph with shapes and dtypes recorded.

1. ``torch.fx.symbolic_trace`` — keeps module boundaries and torch-level calls (readable, cheap).
2. Where fx cannot trace (Python control flow on shapes, unsupported constructs), ``torch.export`` at aten level.
3. Where both fail, :class:`CaptureError` names the construct, with both tracers' messages.

Shapes are then propagated at the example batch size and at two more batch sizes (with fake tensors; real
tensors where an op needs data). Each dimension is fitted with an affine function of the batch symbol ``B``
(see :mod:`tcomp.ir.symbolic`): when every dimension fits, the graph is *batch-symbolic* and one compiled program
serves every batch size; otherwise it is specialised to the example shapes and the compiled module recompiles on
a new shape (a guard, never a silent wrong answer).
"""
from __future__ import annotations

import contextlib
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from tcomp.ir.symbolic import Size, fit_affine


class CaptureError(RuntimeError):
    """Neither torch.fx nor torch.export could capture the model."""


@dataclass
class Captured:
    gm: fx.GraphModule
    method: str                       # "fx" or "export"
    example_inputs: tuple
    batch_inputs: list[tuple[int, int]] = field(default_factory=list)  # (input position, dim) that are B
    example_batch: int | None = None
    notes: list[str] = field(default_factory=list)


def capture(model: torch.nn.Module, example_inputs: tuple, call: Any = None, symbolic: bool = True) -> Captured:
    """Trace ``model`` and record symbolic shapes in each node's ``meta`` (keys ``tcomp_shape``, ``tcomp_dtype``,
    ``tcomp_value``).

    ``example_inputs`` are the tensor arguments. ``call`` (optional) describes a forward with non-tensor
    arguments or ``*args``: it has ``tensor_names`` and ``call(forward, tensors)``, which calls the real forward with
    the tensors in place and the non-tensor values fixed (the compiled module guards on those values).
    ``symbolic=False`` specialises the shapes to the example's without trying other batch sizes.
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
    _record_shapes(cap, symbolic)
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


def _with_batch(inputs: tuple, positions: list[int], batch: int) -> tuple:
    """The example inputs with dim 0 of the batch inputs resized to ``batch`` (rows repeated cyclically)."""
    out = list(inputs)
    for p in positions:
        t = inputs[p]
        reps = -(-batch // t.shape[0])
        out[p] = torch.cat([t] * reps, dim=0)[:batch].clone()
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


def _record_shapes(cap: Captured, symbolic: bool) -> None:
    with preserved_state(cap.gm):
        _record_shapes_now(cap, symbolic)


def _record_shapes_now(cap: Captured, symbolic: bool) -> None:
    gm, inputs = cap.gm, cap.example_inputs
    tensors = [(k, t) for k, t in enumerate(inputs)
               if isinstance(t, torch.Tensor) and t.dim() > 0 and not isinstance(t, torch.nn.Parameter)]
    base = _propagate_any(gm, inputs)
    runs: list[tuple[int, dict]] = []
    batch = tensors[0][1].shape[0] if tensors else None
    positions = [k for k, t in tensors if t.shape[0] == batch]
    if batch is not None and symbolic:
        try:
            for b in (batch + 2, batch + 5):
                runs.append((b, _propagate_any(gm, _with_batch(inputs, positions, b))))
        except Exception as e:  # noqa: BLE001 - a model that only runs at its example shape is specialised
            cap.notes.append(f"shapes specialised to the example inputs (another batch size fails: "
                             f"{type(e).__name__})")
            runs = []
    fitted = _fit_all(base, [(batch, base)] + runs) if runs else None
    if fitted is None and runs:
        cap.notes.append("shapes specialised to the example inputs (some dimension is not affine in the batch)")
    table = fitted if fitted is not None else base
    if fitted is not None:
        cap.batch_inputs = [(p, 0) for p in positions]
        cap.example_batch = batch
    for node in gm.graph.nodes:
        if node.op == "output" or node.name not in table:
            continue
        r = table[node.name]
        if isinstance(r, TensorMeta):
            node.meta["tcomp_shape"] = r.shape
            node.meta["tcomp_dtype"] = r.dtype
        else:
            node.meta["tcomp_value"] = r


def _propagate_any(gm: fx.GraphModule, inputs: tuple) -> dict[str, Any]:
    try:
        return propagate(gm, inputs, fake=True)
    except Exception:  # noqa: BLE001 - data-dependent ops need real tensors
        return propagate(gm, inputs, fake=False)


def _fit_all(base: dict, runs: list[tuple[int, dict]]) -> dict | None:
    """Fit every int in the base results (shapes and int values) as affine in B across the runs."""
    out = {}
    for name, r0 in base.items():
        try:
            out[name] = _fit_one(r0, [(b, res[name]) for b, res in runs])
        except _NotAffine:
            return None
    return out


class _NotAffine(Exception):
    pass


def _fit_one(r0: Any, samples: list[tuple[int, Any]]) -> Any:
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


def _fit_int(samples: list[tuple[int, int]]) -> Size:
    if any(not isinstance(s, int) or isinstance(s, bool) for _, s in samples):
        raise _NotAffine
    f = fit_affine(samples)
    if f is None:
        raise _NotAffine
    return f
