"""The pipeline for one input signature: capture → lower → passes → emit → the backend that runs it.

:func:`build` is what :class:`tcomp.api.CompiledModule` calls when a call matches none of its compiled programs.
Data flows one way: capture (:mod:`tcomp.frontend`) gives a torch.fx graph, lowering turns it into a Program
(:mod:`tcomp.ir`), the pass manager runs the passes (:mod:`tcomp.passes`) with one typed
:class:`~tcomp.passmanager.PassContext`, emit (:mod:`tcomp.codegen`) prints the final Program as a GraphModule, and
the runner is that module, Inductor on it, or — under a memory budget in training — its rematerialized training
step (:mod:`tcomp.passes.rematerialize`).
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import sympy
import torch
import torch.fx as fx
import torch.nn as nn

from tcomp import passes
from tcomp.approx.calibration import Calibration
from tcomp.approx.measurements import Measurements
from tcomp.approx.metrics import get_metric
from tcomp.approx.selection import Selection
from tcomp.cache import DiskCache
from tcomp.codegen.emit import NotAffine, emit
from tcomp.codegen.inductor import compile_with_inductor
from tcomp.cost import machine_model
from tcomp.distributed import agree
from tcomp.frontend.arguments import Arguments, CallTemplate, plain_value
from tcomp.frontend.capture import CaptureError, Captured, capture, preserved_state
from tcomp.frontend.lower import lower
from tcomp.frontend.outputs import in_eager_structure
from tcomp.ir import Program
from tcomp.ir.analysis import deterministic
from tcomp.ir.symbolic import B
from tcomp.numerics import compare
from tcomp.options import Options
from tcomp.passmanager import Pass, PassContext, PipelineResult, VerificationError, run_passes, select_passes
from tcomp.report import CompileReport
from tcomp.timing import in_turns, sync_for


@dataclass
class Build:
    """One signature compiled: the runner a call runs (the emitted module, an Inductor runner, or a rematerialized
    training step; None where the original forward measured faster, and runs instead), the emitted module and final
    Program, the report, which (argument, dim) pairs are symbolic and their symbol's name (empty when specialised),
    and the approximate selection to re-apply on recompilation."""

    runner: Callable | None
    gm: fx.GraphModule
    program: Program
    report: CompileReport
    dynamic: dict[tuple[int, int], str]
    selection: Selection | None
    ranges: dict[str, tuple[int, int]]        # per symbol, the sizes (lowest, highest) the program was fitted on
    size_guards: Callable | None = None


def check(opts: Options) -> list[Pass]:
    """Validate the options up front (a clear error before anything is traced) and return the passes to run."""
    opts.validate()
    return select_passes(passes.pipeline(), opts.passes, approximate=opts.approximate)


def build(model: nn.Module, arguments: Arguments, opts: Options, name: str,
          earlier_selection: Selection | None = None, symbols: tuple[sympy.Symbol, ...] = (B,)) -> Build:
    """Capture, lower, optimise and emit ``model`` for the example call ``arguments``. ``earlier_selection``: the
    choices of an earlier approximate compilation of this model, re-applied as they are; ``symbols``: the sizes
    tried as symbolic (:func:`tcomp.frontend.capture.capture`)."""
    held = [f"{name} ({type(v).__name__})" for name, v in zip(arguments.names, arguments.values)
            if not isinstance(v, torch.Tensor) and not plain_value(v)]
    if held:  # fixed at trace time, what they hold would be read from the example on every call
        raise CaptureError(f"the argument(s) {', '.join(held)} may hold tensors or state that a guard cannot check "
                           f"(only tensors and plain values — numbers, strings, None, dtypes, and tuples, lists and "
                           f"dicts of them — are compiled); pass tensors as arguments of forward")
    timings: dict[str, float] = {}
    with _timed(timings, "eager"):
        eager = _Eager(model, arguments)  # inputs the model rejects fail here, with eager's own error
    try:
        cap, result, gm = _compile(model, arguments, opts, name, earlier_selection, eager, timings, symbols)
    except NotAffine as err:  # a size the program cannot compute from its inputs: specialise to the example
        cap, result, gm = _compile(model, arguments, opts, name, earlier_selection, eager, timings, ())
        cap.notes.append(f"shapes specialised to the example inputs ({err})")
    positions = arguments.tensor_positions
    example = arguments.tensors
    dynamic = {(positions[p], d): sym.name for (p, d), sym in cap.dynamic.items()}
    ranges = {sym.name: span for sym, span in cap.ranges.items()}
    if opts.memory_budget is not None and _trains(model):
        runner, memory = _rematerialized(model, arguments, gm, opts.memory_budget)
        timings["rematerialize"] = memory["compile_time"]
        notes = [f"memory_budget={opts.memory_budget}: the training step runs rematerialized forward and backward "
                 f"graphs (eager backend), specialised to the example shapes"]
        dynamic, ranges, backend = {}, {}, "eager"
    else:
        original = None if opts.approximate else eager.call()  # an approximation is asked for: it is what runs
        with preserved_state(model):  # compiling and timing run the program: a training-mode batch norm's statistics
            runner, notes = _backend(opts.backend, result.program, gm, example, timings, original)  # must not move
        memory, backend = None, "original" if runner is None else "inductor" if runner is not gm else "eager"
        if runner is not None:
            runner = in_eager_structure(runner, gm, eager.outputs, cap.flat_spec)
        if opts.memory_budget is not None:
            notes.append(f"memory_budget={opts.memory_budget} applies to training: this signature runs in eval mode "
                         f"or without gradients, so nothing is rematerialized")
    if memory is None and runner is not None:  # (a rematerialized step is checked against eager's training steps
        # when it is measured; the original forward is eager)
        exact = not opts.approximate and all(map(deterministic, result.program.ops))
        with _timed(timings, "check"):
            problem = eager.mismatch(runner, values=exact)
        if problem is not None:
            raise VerificationError(f"the compiled program's results differ from eager's on the example inputs: "
                                    f"{problem}")
    report = _report(name, cap, result, timings, ranges, backend, notes, memory)
    return Build(runner, gm, result.program, report, dynamic, result.selection, ranges,
                 cap.size_guards if dynamic else None)


REAL_PROPAGATION_S = 0.05
"""A model whose example run takes less than this has its shapes propagated on real tensors (the probes run it at up
to about twice the example's sizes, a few times): cheaper than fake tensors' dispatch, which cost 0.16 s a run of a
24-site MPS chain that runs in 5 ms."""


def _compile(model: nn.Module, arguments: Arguments, opts: Options, name: str, earlier_selection: Selection | None,
             eager: "_Eager", timings: dict[str, float],
             symbols: tuple[sympy.Symbol, ...]) -> tuple[Captured, PipelineResult, fx.GraphModule]:
    """Capture (symbolic in ``symbols`` where the shapes allow), lower, run the passes, emit."""
    with _timed(timings, "capture"):
        cap = capture(model, arguments.tensors, call=None if arguments.plain else CallTemplate(arguments),
                      symbols=symbols, real_tensors=timings["eager"] < REAL_PROPAGATION_S)
    with _timed(timings, "lower"):
        program = lower(cap, name)
    ctx = _context(model, arguments.tensors, program, opts, earlier_selection, timings)
    verify = (lambda program: eager.mismatch(emit(program))) if opts.verify else None
    with _timed(timings, "passes"):
        result = run_passes(program, check(opts), ctx, check=verify)
    with _timed(timings, "emit"):
        gm = emit(result.program)
    return cap, result, gm


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - t0


def _context(model: nn.Module, example: tuple, program: Program, opts: Options,
             earlier_selection: Selection | None, timings: dict[str, float]) -> PassContext:
    """The pass context; for an approximate compilation that measures (no earlier selection), the calibration data
    split with the model's reference outputs, and the measurements remembered for model and data."""
    ctx = PassContext(example_inputs=example, training=model.training, options=opts, machine=agree(machine_model()))
    if not opts.approximate:
        return ctx
    if earlier_selection is not None:
        ctx.earlier_selection = earlier_selection
        return ctx
    with _timed(timings, "calibration"):
        ctx.calibration = Calibration.split(model, opts.calibration, get_metric(opts.metric))
        text = program.format(lambda op: "")  # what the model computes, without costs (a plan would add them)
        ctx.measurements = Measurements.of(model, ctx.calibration.fit + ctx.calibration.held_out, text, opts.metric)
    return ctx


class _Eager:
    """Eager's results on copies of the example arguments, computed once, and a check of anything run on the example
    against them (structure, shapes and dtypes; values with ``values``). Both run without a trace: no gradients, the
    model's buffers restored, the random generators forked, the caller's tensors untouched. Eager's own error
    propagates from the constructor, so a compilation for inputs the model rejects fails with it."""

    def __init__(self, model: nn.Module, arguments: Arguments):
        self.model, self.arguments = model, arguments
        args, kwargs = arguments.copied().call_args()
        with self._quiet():
            self.outputs = model(*args, **kwargs)

    def call(self) -> Callable[[], object]:
        """A call of the model on copies of the example, made once: to time the original forward against the compiled
        program (the caller turns gradients off and keeps the model's state, as for the program)."""
        args, kwargs = self.arguments.copied().call_args()
        return lambda: self.model(*args, **kwargs)

    def mismatch(self, run: Callable, values: bool = True) -> str | None:
        """None when ``run`` (called with the example's tensors) gives eager's results, else what differs."""
        with self._quiet():
            out = run(*self.arguments.copied().tensors)
        c = compare(self.outputs, out, values=values)
        return None if c.ok else c.detail

    @contextmanager
    def _quiet(self):
        devices = self.arguments.cuda_devices
        with torch.no_grad(), preserved_state(self.model), torch.random.fork_rng(devices=devices):
            yield


ORIGINAL_MARGIN = 0.9
"""``backend="auto"`` runs the original forward instead of the compiled program only where the compiled program
measured slower by more than this (time of the original / time of the faster compiled runner below it): timings
move by several percent between runs, and on a near tie the compiled program is kept."""


def _backend(choice: str, program: Program, gm: fx.GraphModule, example: tuple, timings: dict,
             original: Callable[[], object] | None = None) -> tuple[Callable | None, list[str]]:
    """The runner for ``choice``: the emitted module itself ("eager"), Inductor on it ("inductor"), or whichever
    of the two is faster on the example inputs ("auto") — and, for "auto" where ``original`` (a call of the
    original forward on the example) is given, None when that measured faster than the faster of the two by a clear
    margin (``ORIGINAL_MARGIN``): tcomp does not run a program that is slower than the model it came from. Returns
    (runner, notes for the report).

    "auto" keeps its measurement in the on-disk cache (table ``backend``, keyed by the emitted code and the example's
    shapes and dtypes): a program measured faster without Inductor is not compiled with it again (a cold Inductor
    compile is 5-40 s), one measured faster with it is compiled without measuring again. The original's time is
    measured on every compile (it depends on the model's own code, which the key does not see)."""
    if choice == "eager":
        return gm, []
    retried: list[str] = []

    def inductor():
        with _timed(timings, "inductor"):
            compiled = compile_with_inductor(emit(program, fold_buffers=True), gm, example)
        if not compiled.pattern_rewrites:
            retried.append("Inductor failed with its pattern rewrites; compiled without them (pattern_matcher=False)")
        return compiled

    if choice == "inductor":
        return inductor(), retried
    table, key = DiskCache.open("backend"), _backend_key(gm, example)
    known = table.get(key, valid=lambda v: v in ("eager", "inductor"))
    runner, note = None, ""
    if known != "eager":
        try:
            runner = inductor()
        except Exception as err:  # noqa: BLE001 - Inductor unavailable or failing: keep the eager backend
            note = (f"backend auto: Inductor failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                    f"using the eager backend")
    calls = {"eager": lambda: gm(*example), "inductor": lambda: runner(*example), "original": original}
    times: dict[str, float] = {}

    def measure(*names: str) -> None:
        with _timed(timings, "backend measurement"), torch.no_grad():
            times.update(in_turns({n: calls[n] for n in names}, rounds=BACKEND_ROUNDS, min_seconds=BACKEND_MIN_S,
                                  sync=sync_for(example)))

    if runner is not None and known is DiskCache.MISSING:
        measure("eager", "inductor", *(("original",) if original is not None else ()))
        known = "inductor" if times["inductor"] < times["eager"] else "eager"
        table.put(key, known)
        note = (f"backend auto: eager {times['eager'] * 1e3:.3f} ms, inductor {times['inductor'] * 1e3:.3f} ms per "
                f"call on the example inputs; using {known}")
    elif not note:
        note = f"backend auto: {known}, as measured for this program before (tcomp's cache)"
    use_inductor = agree(runner is not None and known == "inductor")  # rank 0's choice on every rank
    if use_inductor and runner is None:  # rank 0 chose Inductor where this rank has none (its cache said eager)
        runner = inductor()
    chosen = "inductor" if use_inductor else "eager"
    notes = [note]
    if original is not None:
        if "original" not in times:
            measure(chosen, "original")
        slower = agree(times["original"] < ORIGINAL_MARGIN * times[chosen])
        notes.append(f"backend auto: the original forward {times['original'] * 1e3:.3f} ms per call, the compiled "
                     f"program ({chosen}) {times[chosen] * 1e3:.3f} ms"
                     + ("; running the original forward, which is faster on these inputs" if slower else ""))
        if slower:
            return None, retried + notes
    return (runner if use_inductor else gm), retried + notes


BACKEND_ROUNDS, BACKEND_MIN_S = 5, 0.05  # the backend measurement: at least 5 calls each, in turns, and 50 ms


def _backend_key(gm: fx.GraphModule, example: tuple) -> str:
    """The emitted code and the example's shapes and dtypes, hashed: what the backend measurement depends on besides
    the machine (which names the cache file)."""
    shapes = [(tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else repr(t) for t in example]
    return hashlib.sha256(f"{gm.code}\n{shapes}".encode()).hexdigest()


def _trains(model: nn.Module) -> bool:
    return model.training and torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())


def _rematerialized(model: nn.Module, arguments: Arguments, gm: fx.GraphModule,
                    budget: float | int) -> tuple[Callable, dict]:
    """The emitted module's training step rematerialized under ``budget`` (a fraction of the original model's
    measured peak, or bytes): the Moccasin schedule turned into forward/backward graphs. Returns the runner and its
    RematReport as a dict. Measuring runs training steps: they run on detached copies of the caller's tensors, so
    that no gradient reaches them or the graph that produced them."""
    # imported on use, for start-up time: the pass imports torch._functorch and OR-Tools (0.4 s), and only a memory
    # budget in training needs it
    from tcomp.passes.rematerialize.training import rematerialize_module, training_state_preserved

    detached = arguments.with_values(tuple(a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
                                           else a for a in arguments.values))
    args, kwargs = detached.call_args()
    example = detached.tensors
    with training_state_preserved(model):  # the reference steps update the original's gradients and buffers
        module = rematerialize_module(gm, example, budget, reference=lambda *_: model(*args, **kwargs))
    return module, module.remat_report.to_dict()


def _report(name: str, cap: Captured, result: PipelineResult, timings: dict[str, float],
            ranges: dict[str, tuple[int, int]], backend: str, notes: list[str], memory: dict | None) -> CompileReport:
    report = CompileReport(
        name, capture=cap.method, example=dict(cap.example), ranges=dict(ranges),
        notes=list(cap.notes) + notes, passes=result.reports, snapshots=result.snapshots,
        flops_before=result.reports[0].flops_before if result.reports else 0,
        flops_after=result.reports[-1].flops_after if result.reports else 0, timings=timings, backend=backend)
    if memory is not None:
        report.extra["memory"] = memory
    return report
