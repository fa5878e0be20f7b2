"""``tcomp.compile``: capture -> lower -> passes -> emit, behind a module that guards its input signature.

The returned :class:`CompiledModule` is an ordinary ``nn.Module``; the compilation itself is
:func:`tcomp.pipeline.build`. It keeps the original model as a submodule
(its ``state_dict`` has exactly the original keys) and a cache of compiled programs, each with a guard on the
input signature (dtypes, devices, shapes — the batch and sequence dimensions are free, within the range the
program was fitted on, where it is symbolic in them — the values of non-tensor arguments, and train/eval mode). A
call that matches no guard compiles again with the new inputs as examples; nothing ever runs a program on inputs
it was not compiled for.

Failure handling: a model neither torch.fx nor torch.export can trace is compiled in pieces around the constructs
that stop them, through TorchDynamo (:mod:`tcomp.frontend.dynamo`). When capture or compilation fails otherwise,
``strict=True`` raises; otherwise the module warns once and runs the original model eagerly for that signature. If
a compiled program raises at run time on an input the eager model accepts, that signature falls back to eager with
a warning.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import sympy
import torch
import torch.fx as fx
import torch.nn as nn

from tcomp.approx.selection import Selection
from tcomp.codegen.kernels.source import kernel_sources
from tcomp.distributed import refuse_wrapped
from tcomp.frontend.arguments import Arguments, Binder
from tcomp.frontend.capture import UntraceableError
from tcomp.frontend.dynamo import Pieces, in_pieces
from tcomp.ir import Program
from tcomp.ir.symbolic import B, S
from tcomp.options import Options
from tcomp.pipeline import build, check
from tcomp.report import CompileReport

class TcompWarning(UserWarning):
    """tcomp fell back to eager execution (the message says why)."""


# -- compiled programs ----------------------------------------------------------------------------------------------

@dataclass
class _Guard:
    """What an input signature must match: the arguments' names (a keyword passed under another name is another
    call), per argument a (dtype, device, shape) spec for tensors — with the symbol's name for the symbolic dims
    (the batch ``B``, the sequence ``S``): all dims of one symbol must have one size (an input broadcast along it is
    another signature), within the range of sizes the program was fitted on (from 2, or the example's when that is
    1: at 1 a model may squeeze or broadcast a dim, which a program fitted at larger sizes did not see; up to the
    largest size probed) — or the value itself, plus the module's training flag. A program captured by
    torch.export also carries export's guards on the sizes (``size_guards``: the branches the model's Python took
    on them). With ``autograd`` (compilations under a memory budget, whose artifact is a traced training step), also
    whether gradients are enabled and which tensor arguments require grad."""

    names: tuple[str, ...]
    specs: tuple
    training: bool
    autograd: tuple | None = None
    dynamic: tuple[tuple[tuple[int, int], ...], ...] = ()  # per symbol, its (argument, dim) pairs
    ranges: tuple[tuple[int, int], ...] = ()  # per symbol, the sizes the program was fitted on (lowest, highest)
    size_guards: Any = None  # torch.export's checks of the sizes (frontend.capture._export), given the tensors
    SIZES_REMEMBERED = 64    # sizes that passed size_guards, kept so that they are not checked again

    @staticmethod
    def of(arguments: Arguments, training: bool, dynamic: dict[tuple[int, int], str],
           ranges: dict[str, tuple[int, int]], autograd: bool = False, size_guards: Any = None) -> "_Guard":
        args = arguments.values
        specs = []
        for k, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                shape = tuple(dynamic.get((k, d), s) for d, s in enumerate(a.shape))
                specs.append(("tensor", a.dtype, a.device, shape))
            else:
                specs.append(("value", a))
        names = sorted(set(dynamic.values()))
        by_symbol = tuple(tuple(sorted(dim for dim, n in dynamic.items() if n == name)) for name in names)
        return _Guard(arguments.names, tuple(specs), training, _autograd_state(args) if autograd else None, by_symbol,
                      tuple(ranges[name] for name in names), size_guards)

    def describe(self) -> str:
        """The signature in a few words: ``x: float32[B, S, 768], mode eval``."""
        parts = [f"{n}: {str(s[1]).replace('torch.', '')}[{', '.join(str(d) for d in s[3])}]"
                 if s[0] == "tensor" else f"{n}={s[1]!r}" for n, s in zip(self.names, self.specs)]
        return ", ".join(parts) + f", {'train' if self.training else 'eval'} mode"

    def __post_init__(self):
        # what a call checks, laid out for speed (a small model's call costs a few microseconds): per tensor argument
        # its position, dtype, device, rank and fixed sizes; per value argument its position and value
        self._tensor_checks = tuple(
            (k, spec[1], spec[2], len(spec[3]), tuple((d, s) for d, s in enumerate(spec[3]) if isinstance(s, int)))
            for k, spec in enumerate(self.specs) if spec[0] == "tensor")
        self._value_checks = tuple((k, spec[1]) for k, spec in enumerate(self.specs) if spec[0] == "value")
        self._sizes_passed: set = set()

    def matches(self, arguments: Arguments, training: bool, any_length: bool = False) -> bool:
        """Whether a call matches; with ``any_length``, whatever the lengths of dimension 1."""
        args = arguments.values
        if training != self.training or arguments.names != self.names:
            return False
        if self.autograd is not None and _autograd_state(args) != self.autograd:
            return False
        for k, dtype, device, rank, fixed in self._tensor_checks:
            a = args[k]
            if not isinstance(a, torch.Tensor) or a.dtype != dtype or a.device != device or a.dim() != rank:
                return False
            shape = a.shape
            for d, size in fixed:
                if shape[d] != size and not (any_length and d == 1):
                    return False
        for k, value in self._value_checks:
            if isinstance(args[k], torch.Tensor) or not _same_value(args[k], value):
                return False
        for dims, (lowest, highest) in zip(self.dynamic, self.ranges):
            (k0, d0), *rest = dims
            size = args[k0].shape[d0]
            if not lowest <= size <= highest or any(args[k].shape[d] != size for k, d in rest):
                return False
        return any_length or self.size_guards is None or self._sizes_pass(arguments)

    def _sizes_pass(self, arguments: Arguments) -> bool:
        """Export's size guards on the tensors, remembered for the sizes and strides that passed (its checks read
        nothing else, and running them costs more than a small model's call)."""
        tensors = arguments.tensors
        key = tuple((t.shape, t.stride()) for t in tensors)
        if key in self._sizes_passed:
            return True
        try:
            self.size_guards(*tensors)
        except Exception:  # noqa: BLE001 - an AssertionError: a branch the program took on the example's sizes goes
            return False    # the other way here (anything else: not provably the same, so compile again)
        if len(self._sizes_passed) < self.SIZES_REMEMBERED:
            self._sizes_passed.add(key)
        return True


def _autograd_state(args: tuple) -> tuple:
    return torch.is_grad_enabled(), tuple(a.requires_grad for a in args if isinstance(a, torch.Tensor))


def _tracking_statistics(model: nn.Module) -> list[nn.Module]:
    """The submodules that keep running statistics (batch norms)."""
    return [m for m in model.modules() if getattr(m, "track_running_stats", False)]


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller point at the user's line: the first frame
    outside tcomp and torch (a call reaches tcomp through ``nn.Module.__call__``, and through Dynamo in pieces)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("tcomp", "torch"):
        frame, level = frame.f_back, level + 1
    return level


def _running_statistics(tracking: list[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The buffers a training-mode forward updates in place (batch norm's running statistics), with copies."""
    return [(b, b.clone()) for m in tracking if m.training for b in m.buffers(recurse=False)]


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
    program: Program | None = None
    state: _StateGuard = field(default_factory=lambda: _StateGuard([]))
    runner: Any = None                   # what a call runs: gm, an Inductor runner, a rematerialized step (None: the
                                         # original model, not compiled or measured faster than gm)
    selection: Selection | None = None   # approximate compilation: the options chosen
    pieces: Pieces | None = None         # a model compiled in pieces: Dynamo runs it, and guards every call itself

    def matches(self, arguments: Arguments, training: bool) -> bool:
        return self.pieces is not None or (self.guard.matches(arguments, training) and self.state.valid())


# -- the module ---------------------------------------------------------------------------------------------------

MAX_PROGRAMS = 8
"""Compiled programs a module keeps, most recently used first; compiling one more drops the least recently used (its
report says so): every new image size, dtype or non-tensor argument compiles again."""


class CompiledModule(nn.Module):
    """The result of :func:`compile`: call it like the original model."""

    def __init__(self, model: nn.Module, options: Options, name: str | None = None):
        super().__init__()
        self._orig_mod = model
        self._tcomp_options = options
        self._tcomp_name = name or type(model).__name__
        self._tcomp_artifacts: list[_Artifact] = []     # most recently used first
        self._tcomp_selection: Selection | None = None  # an approximate compilation's choices, for every recompile
        self._tcomp_binder = Binder(inspect.signature(model.forward))
        self._tcomp_tracking = _tracking_statistics(model)  # again at each compile: a module may be added before
        self._register_state_dict_hook(_strip_prefix)
        self._register_load_state_dict_pre_hook(_add_prefix)

    # nn.Module.__setattr__ would register the artifacts' modules; keep them out of the module tree (they share
    # the original's parameters) by storing plain Python objects only.
    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._tcomp_artifacts.clear()  # buffers may be new tensors now: recompile on the next call
        return out

    def forward(self, *args, **kwargs):
        arguments = self._tcomp_binder.bind(args, kwargs)
        training = self._orig_mod.training
        art = next((a for a in self._tcomp_artifacts if a.matches(arguments, training)), None)
        if art is None:
            self._tcomp_artifacts[:] = [a for a in self._tcomp_artifacts if a.state.valid()]
            art = self._compile(arguments)
        elif art is not self._tcomp_artifacts[0]:
            self._tcomp_artifacts.remove(art)
            self._tcomp_artifacts.insert(0, art)
        if art.runner is None and art.pieces is None:  # not compiled, or the original measured faster
            return self._orig_mod(*args, **kwargs)
        statistics = _running_statistics(self._tcomp_tracking) if training and self._tcomp_tracking else []
        try:
            if art.pieces is not None:
                return art.pieces(*args, **kwargs)
            # the GraphModule's forward itself, not fx's call wrapper, which prints a traceback of its own on an error
            return (art.gm.forward if art.runner is art.gm else art.runner)(*arguments.tensors)
        except Exception as err:  # noqa: BLE001 - never crash where eager would not
            if self._tcomp_options.strict:
                raise
            with torch.no_grad():  # the failed program may have updated them already: eager updates them once
                for buffer, value in statistics:
                    buffer.copy_(value)
            result = self._orig_mod(*args, **kwargs)
            art.gm = art.runner = art.pieces = None
            art.report.status = "eager fallback"
            art.report.fallback_reason = f"compiled code raised {type(err).__name__}: {err}"
            warnings.warn(f"tcomp: the compiled {self._tcomp_name} raised {type(err).__name__}: {err}; "
                          f"running eagerly for this input signature", TcompWarning, stacklevel=_user_stacklevel())
            return result

    def compile_for(self, *args, **kwargs) -> "_Artifact":
        """Compile for these example inputs now (what the first call would do)."""
        return self._compile(self._tcomp_binder.bind(args, kwargs))

    def _compile(self, arguments: Arguments) -> _Artifact:
        opts = self._tcomp_options
        model = self._orig_mod
        self._tcomp_tracking = _tracking_statistics(model)
        try:
            # compiling runs the model on its example (reference, shape probes, checks, timing): on copies, since a
            # piece compiled through Dynamo gets a batch norm's running statistics as inputs and a training-mode
            # graph updates them in place; and on a forked random stream, so that a dropout's draws while compiling
            # (a number that depends on timing) leave the caller's stream as it was
            with torch.random.fork_rng(devices=arguments.cuda_devices):
                b = build(model, arguments.copied(), opts, self._tcomp_name, earlier_selection=self._tcomp_selection,
                          symbols=self._symbols(arguments))
            ranges = b.ranges
            if b.runner is None:  # the original forward measured faster at the example's sizes: a larger call
                # compiles again and measures afresh (the compiled program's fixed costs weigh less there)
                at = {name: arguments.values[k].shape[d] for (k, d), name in b.dynamic.items()}
                ranges = {name: (lo, min(hi, at[name])) for name, (lo, hi) in b.ranges.items()}
            guard = _Guard.of(arguments, model.training, b.dynamic, ranges, opts.memory_budget is not None,
                              b.size_guards)
            art = _Artifact(guard, b.report, b.gm, b.program, _StateGuard.of(model, list(b.program.constants)),
                            b.runner, b.selection)
        except UntraceableError as err:
            art = self._in_pieces(arguments, err)
        except Exception as err:  # noqa: BLE001
            art = self._eager(arguments, err)
        self._tcomp_artifacts.insert(0, art)
        if len(self._tcomp_artifacts) > MAX_PROGRAMS:
            dropped = self._tcomp_artifacts.pop()
            art.report.notes.append(f"{MAX_PROGRAMS} compiled programs kept: the least recently used one "
                                    f"({dropped.report.model}, {dropped.guard.describe()}) was dropped")
        if self._tcomp_selection is None:
            self._tcomp_selection = art.selection
        self._register_new_parameters(art)
        return art

    def _eager(self, arguments: Arguments, err: Exception, reason: str | None = None) -> _Artifact:
        """Run this signature eagerly, with one warning (``strict``: raise ``err``)."""
        if self._tcomp_options.strict:
            raise err
        reason = reason or f"{type(err).__name__}: {err}"
        warnings.warn(f"tcomp: cannot compile {self._tcomp_name} ({reason}); running it eagerly", TcompWarning,
                      stacklevel=_user_stacklevel())
        report = CompileReport(self._tcomp_name, status="eager fallback", fallback_reason=reason)
        return _Artifact(_Guard.of(arguments, self._orig_mod.training, {}, {},
                                   self._tcomp_options.memory_budget is not None), report)

    def _in_pieces(self, arguments: Arguments, untraceable: UntraceableError) -> _Artifact:
        """The model compiled in pieces around what stops torch.fx and torch.export (:mod:`tcomp.frontend.dynamo`):
        every graph between the breaks compiled with these options, less the whole-model ones (an error budget
        measured on the model's outputs, a memory budget for its training step), which the report says."""
        opts = self._tcomp_options
        piece_opts = dataclasses.replace(opts, tolerance=None, calibration=None, target_speedup=None, heal=None,
                                         memory_budget=None)
        start = time.perf_counter()
        args, kwargs = arguments.call_args()
        try:
            pieces = in_pieces(self._orig_mod, args, kwargs,
                               lambda gm, example: _compile_object(gm, example, piece_opts), opts.dynamic)
        except Exception as err:  # noqa: BLE001
            return self._eager(arguments, untraceable, f"{untraceable}; compiling it in pieces through TorchDynamo "
                                                       f"failed with {type(err).__name__}: {err}")
        notes = [f"torch.fx and torch.export cannot trace it ({untraceable}); compiled in pieces through "
                 f"TorchDynamo: {len(pieces.breaks)} graph break(s), the code at each runs eagerly"]
        notes += [f"graph break: {b}" for b in pieces.breaks]
        if opts.approximate or opts.memory_budget is not None:
            notes.append("tolerance= and memory_budget= apply to a whole model: the pieces are compiled exactly")
        reports = [m.report for m in pieces.modules]
        report = CompileReport(self._tcomp_name, status="compiled in pieces", capture="dynamo", notes=notes,
                               flops_before=sum((r.flops_at("before") for r in reports), 0),
                               flops_after=sum((r.flops_at("after") for r in reports), 0),
                               timings={"pieces": time.perf_counter() - start}, pieces=pieces.modules)
        return _Artifact(_Guard.of(arguments, self._orig_mod.training, {}, {}), report, pieces=pieces)

    def _symbols(self, arguments: Arguments) -> tuple[sympy.Symbol, ...]:
        """The sizes to try as symbolic (``dynamic=``). Automatically (None): the batch always; the sequence once a
        call arrives that a compiled program would match but for the length of dimension 1 — as torch.compile's
        automatic dynamic shapes, so that a dimension 1 of fixed length (an RNN's steps, a tensor network's sites,
        channels) keeps the passes that need its size."""
        dynamic = self._tcomp_options.dynamic
        if dynamic is not None:
            return (B, S) if dynamic else ()
        training = self._orig_mod.training
        other_length = any(a.guard.matches(arguments, training, any_length=True) for a in self._tcomp_artifacts)
        return (B, S) if other_length else (B,)

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
        """The program the last call ran (or the last compilation made): what ``.code``, ``.report`` show."""
        if not self._tcomp_artifacts:
            raise RuntimeError("not compiled yet: call the module once, or pass example_inputs to tcomp.compile")
        return self._tcomp_artifacts[0]

    @property
    def code(self) -> str:
        """The emitted Python, followed by the source of every generated Triton kernel it calls."""
        art = self._latest()
        if art.pieces is not None:
            return "\n".join(f"# piece {k + 1} of {len(art.pieces.modules)}\n{m.code}"
                             for k, m in enumerate(art.pieces.modules))
        if art.gm is None:
            return f"# eager fallback: {art.report.fallback_reason}\n"
        kept = "" if art.runner is not None else "# not run: the original forward measured faster (see the report)\n"
        return kept + art.gm.code + kernel_sources(art.gm)

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


# -- the entry point -----------------------------------------------------------------------------------------------

def compile(model: Any = None, example_inputs: Any = None, *, tolerance: float | None = None,
            calibration: Any = None, metric: Any = "relative_l2", target_speedup: float | None = None,
            heal: Any = None, structures: tuple | None = None, memory_budget: float | int | None = None,
            kernels: str = "auto", strict: bool = False, verify: bool = False, passes: Any = None,
            backend: str | None = None, layout: str | None = None, progress: bool = False,
            dynamic: bool | None = None):
    """Compile ``model`` (an ``nn.Module``, a module class or a function) with tcomp.

    Returns a :class:`CompiledModule` (or, for a class, a factory of compiled instances; for a function, a
    function). With ``example_inputs`` (a tensor or a tuple) compilation happens now; otherwise on the first call.
    Used without arguments it is a decorator: ``@tcomp.compile`` or ``@tcomp.compile(verify=True)``.

    Approximate compilation: ``tolerance=0.02, calibration=batches`` (``metric`` "relative_l2", "cosine" or a
    callable), or ``target_speedup=1.5``; ``heal=True`` or a :class:`tcomp.HealConfig` distils the factors;
    ``structures`` the structured methods to try (default ``("asvd", "monarch", "btt")``). ``memory_budget`` (a
    fraction of eager's measured peak, or bytes) rematerializes the training step under that budget. ``passes``
    selects passes by name; ``backend`` ("auto", "eager", "inductor") and ``layout`` ("auto", "channels_last",
    "contiguous") default to the ``TCOMP_DEFAULT_BACKEND`` and ``TCOMP_LAYOUT`` environment variables, else "auto".
    ``dynamic`` (as torch.compile's): None, the batch (dimension 0) symbolic from the start and the sequence
    (dimension 1) once a call brings a second length; True, both from the start; False, every size specialised.
    See docs/usage.md and docs/passes/.
    """
    defaults = {"backend": backend, "layout": layout}  # None: the environment's default (tcomp.options)
    opts = Options(tolerance=tolerance, calibration=calibration, metric=metric, target_speedup=target_speedup,
                   heal=heal, structures=structures, memory_budget=memory_budget, kernels=kernels, strict=strict,
                   verify=verify, passes=passes, progress=progress, dynamic=dynamic,
                   **{k: v for k, v in defaults.items() if v is not None})
    check(opts)
    if model is None:
        return functools.partial(_compile_object, example_inputs=example_inputs, opts=opts)
    return _compile_object(model, example_inputs=example_inputs, opts=opts)


def _compile_object(model: Any, example_inputs: Any, opts: Options):
    if isinstance(model, nn.Module):
        refuse_wrapped(model)
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


__all__ = ["compile", "CompiledModule", "TcompWarning"]
