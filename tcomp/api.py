"""``tcomp.compile``: capture -> lower -> passes -> emit, behind a module that guards its input signature.

The returned :class:`CompiledModule` is an ordinary ``nn.Module``. It keeps the original model as a submodule
(its ``state_dict`` has exactly the original keys) and a cache of compiled programs, each with a guard on the
input signature (dtypes, devices, shapes — the batch dimension is free when the program is batch-symbolic — the
values of non-tensor arguments, and train/eval mode). A call that matches no guard compiles again with the new
inputs as examples; nothing ever runs a program on inputs it was not compiled for.

Failure handling: when capture or compilation fails, ``strict=True`` raises; otherwise the module warns once
and runs the original model eagerly for that signature. If a compiled program raises at run time on an input
the eager model accepts, that signature falls back to eager with a warning.
"""
from __future__ import annotations

import functools
import inspect
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from tcomp.approx.calibration import Calibration, calibration_key, content_digest
from tcomp.frontend.capture import CaptureError, capture, preserved_state
from tcomp.approx.heal import HealConfig
from tcomp.approx.metrics import get_metric
from tcomp.codegen.emit import emit
from tcomp.frontend.lower import lower
from .numerics import compare
from .passmanager import PassContext, run_pipeline, select_passes
from .report import CompileReport

KERNEL_CHOICES = ("auto", "torch", "triton")
BACKENDS = ("auto", "eager", "inductor")


def _default_backend() -> str:
    """``auto`` unless ``TCOMP_DEFAULT_BACKEND`` says otherwise (the test suite sets ``eager`` to skip Inductor's
    cold compiles)."""
    return os.environ.get("TCOMP_DEFAULT_BACKEND", "auto")


class TcompWarning(UserWarning):
    """tcomp fell back to eager execution (the message says why)."""


@dataclass
class Options:
    tolerance: float | None = None
    calibration: Any = None
    metric: Any = "relative_l2"
    target_speedup: float | None = None
    heal: Any = None
    structures: tuple | None = None
    memory_budget: float | int | None = None
    kernels: str = "auto"
    strict: bool = False
    verify: bool = False
    passes: Any = None
    backend: str = field(default_factory=_default_backend)
    progress: bool = False

    @property
    def approximate(self) -> bool:
        return self.tolerance is not None or self.target_speedup is not None

    def validate(self) -> None:
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels={self.kernels!r}: choose one of {KERNEL_CHOICES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: choose one of {BACKENDS}")
        if self.memory_budget is not None:
            from tcomp.remat.result import check_budget

            check_budget(self.memory_budget)
        if self.approximate:
            if self.calibration is None:
                raise ValueError("tolerance= / target_speedup= need calibration= (an iterable of at least 2 input "
                                 "batches: the error is measured on them, the last quarter held out)")
            if self.tolerance is not None and not self.tolerance > 0:
                raise ValueError(f"tolerance must be positive, got {self.tolerance!r}")
            if self.target_speedup is not None and not self.target_speedup > 1:
                raise ValueError(f"target_speedup must be above 1, got {self.target_speedup!r}")
            from tcomp.approx.metrics import get_metric

            get_metric(self.metric)
        elif self.heal is not None:
            raise ValueError("heal= needs tolerance= or target_speedup= (there is nothing to heal otherwise)")


# -- compiled programs ----------------------------------------------------------------------------------------------

@dataclass
class _Guard:
    """What an input signature must match: per flattened argument a (dtype, device, shape) spec for tensors —
    with None for the symbolic batch dims — or the value itself, plus the module's training flag. With
    ``autograd`` (compilations under a memory budget, whose artifact is a traced training step), also whether
    gradients are enabled and which tensor arguments require grad."""

    specs: tuple
    training: bool
    autograd: tuple | None = None

    @staticmethod
    def of(args: tuple, training: bool, batch_dims: set[tuple[int, int]], autograd: bool = False) -> "_Guard":
        specs = []
        for k, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                shape = tuple(None if (k, d) in batch_dims else s for d, s in enumerate(a.shape))
                specs.append(("tensor", a.dtype, a.device, shape))
            else:
                specs.append(("value", a))
        return _Guard(tuple(specs), training, _autograd_state(args) if autograd else None)

    def matches(self, args: tuple, training: bool) -> bool:
        if training != self.training or len(args) != len(self.specs):
            return False
        if self.autograd is not None and _autograd_state(args) != self.autograd:
            return False
        for a, spec in zip(args, self.specs):
            if spec[0] == "tensor":
                if not isinstance(a, torch.Tensor) or a.dtype != spec[1] or a.device != spec[2] \
                        or a.dim() != len(spec[3]):
                    return False
                if any(s is not None and s != t for s, t in zip(spec[3], a.shape)):
                    return False
            elif isinstance(a, torch.Tensor) or not _same_value(a, spec[1]):
                return False
        return True


def _autograd_state(args: tuple) -> tuple:
    return torch.is_grad_enabled(), tuple(a.requires_grad for a in args if isinstance(a, torch.Tensor))


def _same_value(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values never match
        return False


@dataclass
class _StateGuard:
    """The model's parameters and buffers the compiled program holds: still the same tensors, with the same dtype
    and device. A parameter reassigned, or a buffer replaced (``model.double()`` or ``model.to(...)`` called on the
    original model, not on the compiled one), invalidates the program. One dict lookup per tensor per call."""

    entries: list[tuple[dict, str, torch.Tensor, torch.dtype, torch.device]]

    @staticmethod
    def of(model: nn.Module, names: list[str]) -> "_StateGuard":
        entries = []
        for qualname in names:
            owner_name, _, attr = qualname.rpartition(".")
            try:
                owner = model.get_submodule(owner_name) if owner_name else model
            except AttributeError:
                continue
            for table in (owner._parameters, owner._buffers):
                t = table.get(attr)
                if t is not None:
                    entries.append((table, attr, t, t.dtype, t.device))
                    break
        return _StateGuard(entries)

    def valid(self) -> bool:
        return all(table.get(k) is t and t.dtype == dt and t.device == dev for table, k, t, dt, dev in self.entries)


@dataclass
class _Artifact:
    guard: _Guard
    report: CompileReport
    gm: fx.GraphModule | None = None     # None: run the original model eagerly
    program: Any = None
    state: _StateGuard = field(default_factory=lambda: _StateGuard([]))
    runner: Any = None                   # what a call runs: gm, or an Inductor runner (tcomp.inductor)
    selection: dict | None = None        # approximate compilation: the options chosen per site

    def matches(self, flat: tuple, training: bool) -> bool:
        return self.guard.matches(flat, training) and self.state.valid()


# -- the module ---------------------------------------------------------------------------------------------------

class CompiledModule(nn.Module):
    """The result of :func:`compile`: call it like the original model."""

    def __init__(self, model: nn.Module, options: Options, name: str | None = None):
        super().__init__()
        self._orig_mod = model
        self._tcomp_options = options
        self._tcomp_name = name or type(model).__name__
        self._tcomp_artifacts: list[_Artifact] = []
        self._tcomp_signature = inspect.signature(model.forward)
        self._register_state_dict_hook(_strip_prefix)
        self._register_load_state_dict_pre_hook(_add_prefix)

    # nn.Module.__setattr__ would register the artifacts' modules; keep them out of the module tree (they share
    # the original's parameters) by storing plain Python objects only.
    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._tcomp_artifacts.clear()  # buffers may be new tensors now: recompile on the next call
        return out

    def flat_args(self, args: tuple, kwargs: dict) -> tuple:
        return flatten_arguments(self._tcomp_signature, args, kwargs)[0]

    def forward(self, *args, **kwargs):
        flat = self.flat_args(args, kwargs)
        training = self._orig_mod.training
        art = next((a for a in self._tcomp_artifacts if a.matches(flat, training)), None)
        if art is None:
            self._tcomp_artifacts[:] = [a for a in self._tcomp_artifacts if a.state.valid()]
            art = self._compile(flat)
        if art.gm is None:
            return self._orig_mod(*args, **kwargs)
        try:
            return (art.runner or art.gm)(*[a for a in flat if isinstance(a, torch.Tensor)])
        except Exception as err:  # noqa: BLE001 - never crash where eager would not
            if self._tcomp_options.strict:
                raise
            result = self._orig_mod(*args, **kwargs)
            art.gm = art.runner = None
            art.report.status = "eager fallback"
            art.report.fallback_reason = f"compiled code raised {type(err).__name__}: {err}"
            warnings.warn(f"tcomp: the compiled {self._tcomp_name} raised {type(err).__name__}: {err}; "
                          f"running eagerly for this input signature", TcompWarning, stacklevel=2)
            return result

    def compile_for(self, *args, **kwargs) -> "_Artifact":
        """Compile for these example inputs now (what the first call would do)."""
        return self._compile(self.flat_args(args, kwargs))

    def _compile(self, flat: tuple) -> _Artifact:
        opts = self._tcomp_options
        earlier = next((a.selection for a in self._tcomp_artifacts if a.selection is not None), None)
        try:
            art = build(self._orig_mod, flat, self._tcomp_signature, opts, self._tcomp_name, selection=earlier)
        except Exception as err:  # noqa: BLE001
            if opts.strict:
                raise
            reason = f"{type(err).__name__}: {err}"
            warnings.warn(f"tcomp: cannot compile {self._tcomp_name} ({reason}); running it eagerly",
                          TcompWarning, stacklevel=3)
            report = CompileReport(self._tcomp_name, status="eager fallback", fallback_reason=reason)
            art = _Artifact(_Guard.of(flat, self._orig_mod.training, set(), opts.memory_budget is not None), report)
        self._tcomp_artifacts.insert(0, art)
        self._register_new_parameters(art)
        return art

    def _register_new_parameters(self, art: "_Artifact") -> None:
        """Parameters a pass introduced (structured factors, their biases) belong to this module: they appear in
        ``parameters()`` (so they train) and in ``state_dict()`` as ``tcomp_params.<name>``."""
        if art.program is None:
            return
        for name, v in art.program.constants.items():
            if name.startswith("tcomp.") and isinstance(v.data, nn.Parameter):
                if not hasattr(self, "tcomp_params"):
                    self.tcomp_params = nn.ParameterDict()
                self.tcomp_params[name[len("tcomp."):]] = v.data

    # -- what users look at ------------------------------------------------------------------------------------
    def _latest(self) -> _Artifact:
        if not self._tcomp_artifacts:
            raise RuntimeError("not compiled yet: call the module once, or pass example_inputs to tcomp.compile")
        return self._tcomp_artifacts[0]

    @property
    def code(self) -> str:
        """The emitted Python, followed by the source of every generated Triton kernel it calls."""
        art = self._latest()
        if art.gm is None:
            return f"# eager fallback: {art.report.fallback_reason}\n"
        return art.gm.code + kernel_sources(art.gm)

    @property
    def graph_module(self) -> fx.GraphModule | None:
        return self._latest().gm

    @property
    def program(self):
        return self._latest().program

    @property
    def report(self) -> CompileReport:
        return self._latest().report

    def explain(self) -> str:
        return self._latest().report.explain()


def flatten_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> tuple[tuple, list[str], Callable]:
    """Bind a call to ``forward``'s signature: the flat argument values (``*args``/``**kwargs`` spread), a name for
    each, and a function that rebuilds ``(args, kwargs)`` from flat values."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    flat: list = []
    names: list[str] = []
    layout: list[tuple[str, str, Any]] = []  # (parameter kind, name, key)
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind == inspect.Parameter.VAR_POSITIONAL:
            for j, v in enumerate(value):
                flat.append(v)
                names.append(f"{name}_{j}")
                layout.append(("var_positional", name, j))
        elif kind == inspect.Parameter.VAR_KEYWORD:
            for key, v in value.items():
                flat.append(v)
                names.append(key)
                layout.append(("var_keyword", name, key))
        else:
            flat.append(value)
            names.append(name)
            layout.append(("keyword" if kind == inspect.Parameter.KEYWORD_ONLY else "positional", name, None))

    def rebuild(values: tuple) -> tuple[tuple, dict]:
        pos: list = []
        kw: dict = {}
        for (kind, _, key), v in zip(layout, values):
            if kind in ("positional", "var_positional"):
                pos.append(v)
            elif kind == "var_keyword":
                kw[key] = v
            else:
                kw[_] = v
        return tuple(pos), kw

    return tuple(flat), names, rebuild


def kernel_sources(gm: fx.GraphModule) -> str:
    """The generated Triton kernels a GraphModule calls, as a commented appendix to its code."""
    kernels = getattr(gm, "tcomp_kernels", [])
    if not kernels:
        return ""
    from tcomp.codegen.kernels import kernel_source

    parts = ["\n# ---- generated Triton kernels ----"]
    for eq, signature in kernels:
        parts.append(f"# contract_pair({eq!r}, epilogue={signature})")
        parts.append(kernel_source(eq, epilogue=signature))
    return "\n".join(parts) + "\n"


def _strip_prefix(module, state_dict, prefix, local_metadata):
    key = prefix + "_orig_mod."
    for k in list(state_dict):
        if k.startswith(key):
            state_dict[prefix + k[len(key):]] = state_dict.pop(k)
    return state_dict


def _add_prefix(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    for k in list(state_dict):
        if k.startswith(prefix) and not k.startswith(prefix + "_orig_mod."):
            state_dict[prefix + "_orig_mod." + k[len(prefix):]] = state_dict.pop(k)


# -- the pipeline -----------------------------------------------------------------------------------------------------

def build(model: nn.Module, flat: tuple, signature: inspect.Signature, opts: Options, name: str,
          selection: dict | None = None) -> _Artifact:
    """Capture, lower, optimise and emit ``model`` for the example arguments ``flat``. ``selection``: the choices
    of an earlier approximate compilation of this model, re-applied as they are."""
    from tcomp import passes as passes_pkg

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tensor_positions = [k for k, a in enumerate(flat) if isinstance(a, torch.Tensor)]
    _, names, rebuild = flatten_arguments(signature, *rebuild_call(signature, flat))
    example = tuple(flat[k] for k in tensor_positions)
    plain = len(tensor_positions) == len(flat) and all(
        p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD for p in signature.parameters.values())
    cap = capture(model, example, call=None if plain else _CallTemplate(
        [names[k] for k in tensor_positions], tensor_positions, flat, rebuild))
    timings["capture"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    program = lower(cap, name)
    timings["lower"] = time.perf_counter() - t0
    ctx = PassContext(example_inputs=example, training=model.training, options=vars(opts).copy(), model=model)
    if opts.approximate and selection is not None:
        ctx.options["selection"] = selection
    elif opts.approximate:
        t0 = time.perf_counter()
        ctx.options["calibration_data"] = Calibration.split(model, opts.calibration, get_metric(opts.metric))
        data = ctx.options["calibration_data"].fit + ctx.options["calibration_data"].held_out
        ctx.options["calibration_key"] = calibration_key(model, data)
        if isinstance(opts.metric, str):  # a user's metric function has no stable identity across processes
            ctx.options["calibration_digest"] = content_digest(model, program.format(costs=False), data,
                                                               opts.metric)
        ctx.options["heal"] = HealConfig() if opts.heal is True else opts.heal or None
        timings["calibration"] = time.perf_counter() - t0
    selected = select_passes(passes_pkg.pipeline(), opts.passes, approximate=opts.approximate)
    check = _verifier(model, flat, example, cap) if opts.verify else None
    t0 = time.perf_counter()
    result = run_pipeline(program, selected, ctx, check=check)
    timings["passes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    modules = _submodules(cap.gm)
    gm = emit(result.program, modules)
    timings["emit"] = time.perf_counter() - t0
    batch_dims = {(tensor_positions[p], d) for p, d in cap.batch_inputs}
    remat = None
    if opts.memory_budget is not None and _trains(model):
        runner, remat = _rematerialized(model, signature, flat, gm, opts.memory_budget)
        backend_notes = [f"memory_budget={opts.memory_budget}: the training step runs rematerialized forward and "
                         f"backward graphs (eager backend), specialised to the example shapes"]
        timings["rematerialize"] = remat["compile_time"]
        batch_dims = set()
    else:
        runner, backend_notes = _backend(opts.backend, result.program, modules, gm, example, timings)
        if opts.memory_budget is not None:
            backend_notes.append(f"memory_budget={opts.memory_budget} applies to training: this signature runs "
                                 f"in eval mode or without gradients, so nothing is rematerialized")
    report = CompileReport(
        name, capture=cap.method, batch_symbolic=bool(batch_dims), example_batch=cap.example_batch,
        notes=list(cap.notes), passes=result.reports, snapshots=result.snapshots,
        flops_before=result.reports[0].flops_before if result.reports else 0,
        flops_after=result.reports[-1].flops_after if result.reports else 0, timings=timings,
        backend="inductor" if remat is None and runner is not gm else "eager")
    report.notes += backend_notes
    if remat is not None:
        report.extra["memory"] = remat
    state = _StateGuard.of(model, list(result.program.constants))
    guard = _Guard.of(flat, model.training, batch_dims, opts.memory_budget is not None)
    return _Artifact(guard, report, gm, result.program, state, runner, ctx.cache.get("selection"))


def _backend(choice: str, program, modules, gm: fx.GraphModule, example: tuple, timings: dict):
    """The runner for ``choice``: the emitted module itself ("eager"), Inductor on it ("inductor"), or whichever
    of the two is faster on the example inputs ("auto"). Returns (runner, notes for the report)."""
    if choice == "eager":
        return gm, []
    from tcomp.codegen.inductor import compile_with_inductor
    from .timing import median_time

    t0 = time.perf_counter()
    try:
        runner = compile_with_inductor(emit(program, modules, fold_buffers=True), gm, example)
    except Exception as err:  # noqa: BLE001 - Inductor unavailable or failing: keep the eager backend
        if choice == "inductor":
            raise
        return gm, [f"backend auto: Inductor failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                    f"using the eager backend"]
    finally:
        timings["inductor"] = time.perf_counter() - t0
    if choice == "inductor":
        return runner, []
    t_eager, t_ind = median_time(gm, example), median_time(runner, example)
    note = (f"backend auto: eager {t_eager * 1e3:.3f} ms, inductor {t_ind * 1e3:.3f} ms per call on the example "
            f"inputs; using {'inductor' if t_ind < t_eager else 'eager'}")
    return (runner if t_ind < t_eager else gm), [note]


def _trains(model: nn.Module) -> bool:
    return model.training and torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())


def _rematerialized(model: nn.Module, signature: inspect.Signature, flat: tuple, gm: fx.GraphModule,
                    budget: float | int) -> tuple[Callable, dict]:
    """The emitted module's training step rematerialized under ``budget`` (a fraction of the original model's
    measured peak, or bytes): issue 5's Moccasin schedule turned into forward/backward graphs. Returns the runner
    and its RematReport as a dict. Measuring runs training steps: they run on detached copies of the caller's
    tensors, so that no gradient reaches them or the graph that produced them."""
    from tcomp.passes.rematerialize import rematerialize_module
    from tcomp.passes.rematerialize.training import training_state_preserved

    detached = tuple(a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in flat)
    args, kwargs = rebuild_call(signature, detached)
    example = tuple(a for a in detached if isinstance(a, torch.Tensor))
    with training_state_preserved(model):  # the reference steps update the original's gradients and buffers
        module = rematerialize_module(gm, example, budget, reference=lambda *_: model(*args, **kwargs))
    return module, module.remat_report.to_dict()


def rebuild_call(signature: inspect.Signature, flat: tuple) -> tuple[tuple, dict]:
    """Positional/keyword arguments that bind to ``flat`` (the inverse of flattening, for plain signatures and
    ``*args``: flat values in parameter order)."""
    args: list = []
    kwargs: dict = {}
    it = iter(flat)
    params = list(signature.parameters.values())
    for k, p in enumerate(params):
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            n_after = sum(1 for q in params[k + 1:] if q.kind != inspect.Parameter.VAR_KEYWORD)
            remaining = list(it)
            args.extend(remaining[:len(remaining) - n_after])
            it = iter(remaining[len(remaining) - n_after:])
        elif p.kind in (inspect.Parameter.KEYWORD_ONLY,):
            kwargs[p.name] = next(it)
        elif p.kind == inspect.Parameter.VAR_KEYWORD:
            continue
        else:
            args.append(next(it))
    return tuple(args), kwargs


@dataclass
class _CallTemplate:
    """How the traced wrapper calls ``forward``: tensor parameter names, and the fixed non-tensor values."""

    tensor_names: list[str]
    tensor_positions: list[int]
    flat: tuple
    rebuild: Callable

    def call(self, forward: Callable, tensors: tuple):
        values = list(self.flat)
        for pos, t in zip(self.tensor_positions, tensors):
            values[pos] = t
        args, kwargs = self.rebuild(tuple(values))
        return forward(*args, **kwargs)


def _submodules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return {n.target: gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"}


def _verifier(model: nn.Module, flat: tuple, example: tuple, cap) -> Callable:
    with torch.no_grad(), preserved_state(model):
        reference = model(*flat)

    def check(program) -> str | None:
        gm = emit(program, _submodules(cap.gm))
        with torch.no_grad(), preserved_state(model):
            out = gm(*example)
        c = compare(reference, out)
        return None if c.ok else c.detail

    return check


# -- the entry point -----------------------------------------------------------------------------------------------

def compile(model: Any = None, example_inputs: Any = None, *, tolerance: float | None = None,
            calibration: Any = None, metric: Any = "relative_l2", target_speedup: float | None = None,
            heal: Any = None, structures: tuple | None = None, memory_budget: float | int | None = None,
            kernels: str = "auto", strict: bool = False, verify: bool = False, passes: Any = None,
            backend: str | None = None, progress: bool = False):
    """Compile ``model`` (an ``nn.Module``, a module class or a function) with tcomp.

    Returns a :class:`CompiledModule` (or, for a class, a factory of compiled instances; for a function, a
    function). With ``example_inputs`` (a tensor or a tuple) compilation happens now; otherwise on the first call.
    Used without arguments it is a decorator: ``@tcomp.compile`` or ``@tcomp.compile(verify=True)``.

    Approximate compilation: ``tolerance=0.02, calibration=batches`` (``metric`` "relative_l2", "cosine" or a
    callable), or ``target_speedup=1.5``; ``heal=True`` or a :class:`tcomp.HealConfig` distils the factors;
    ``structures`` the structured methods to try (default ``("asvd", "monarch", "btt")``). ``memory_budget`` (a
    fraction of eager's measured peak, or bytes) rematerializes the training step under that budget. See
    docs/usage.md and docs/passes/.
    """
    opts = Options(tolerance=tolerance, calibration=calibration, metric=metric, target_speedup=target_speedup,
                   heal=heal, structures=structures, memory_budget=memory_budget, kernels=kernels, strict=strict,
                   verify=verify, passes=passes, backend=backend or _default_backend(), progress=progress)
    opts.validate()
    if model is None:
        return functools.partial(_compile_object, example_inputs=example_inputs, opts=opts)
    return _compile_object(model, example_inputs=example_inputs, opts=opts)


def _compile_object(model: Any, example_inputs: Any, opts: Options):
    if isinstance(model, nn.Module):
        compiled = CompiledModule(model, opts)
        if example_inputs is not None:
            ex = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            compiled.compile_for(*ex)
        return compiled
    if isinstance(model, type) and issubclass(model, nn.Module):
        return _compiled_class(model, opts)
    if callable(model):
        return _compiled_function(model, opts)
    raise TypeError(f"tcomp.compile expects an nn.Module, a module class or a function, got {type(model).__name__}")


def _compiled_class(cls: type, opts: Options) -> Callable:
    """``@tcomp.compile`` on a module class: constructing it returns a CompiledModule wrapping an instance."""

    @functools.wraps(cls, updated=())
    def construct(*args, **kwargs) -> CompiledModule:
        return CompiledModule(cls(*args, **kwargs), opts, name=cls.__name__)

    construct.original_class = cls
    return construct


def _compiled_function(fn: Callable, opts: Options) -> Callable:
    class FunctionModule(nn.Module):
        def forward(self, *args, **kwargs):
            return fn(*args, **kwargs)

    sig = inspect.signature(fn)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    FunctionModule.forward.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()])
    compiled = CompiledModule(FunctionModule(), opts, name=getattr(fn, "__name__", "function"))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return compiled(*args, **kwargs)

    wrapper.compiled = compiled
    return wrapper


__all__ = ["compile", "CompiledModule", "CaptureError", "TcompWarning"]
