"""The selection of approximate compilation: one option per site under a global error budget — a multiple-choice
knapsack.

Every site (a linear layer, a convolution, any network for precision) has options proposed by the structured,
precision and tucker passes, plus its dense original. For each option the pass measures

- its **time**: the option's ops planned and run on inputs of the site's shape in turns with the dense site, as a
  ratio (:func:`tcomp.approx.option_time.time_against`, cached) times the site's fastest dense time; an option
  that is not faster than the dense site is dropped (FLOPs mislead);
- its **sensitivity**: the end-to-end error of the model when that site alone takes that option, on the fit
  calibration batches (:class:`tcomp.approx.calibration.ProgramRunner` replaces the site's result), plus, for a
  reduced dtype, what the ops after the site add by running in it too (:func:`_propagated_dtype_cost`).

With ``tolerance`` it maximises the time saved subject to the summed sensitivities (in the metric's additive
units: squared relative error, or cosine loss) staying within the budget; with ``target_speedup`` it minimises
the summed sensitivity subject to saving enough time. Both are multiple-choice knapsacks, solved exactly with
OR-Tools CP-SAT. The chosen options are applied, the whole program is verified on the held-out batches, and when
the measured error is over the tolerance the budget is tightened (by the ratio of the two) and the knapsack
solved again. With ``heal``, the selection starts from a looser budget, the factors are distilled against the
original model (:mod:`tcomp.approx.heal`) and the *healed* error is what is verified (the healed factors are kept
only where they lower the held-out error).

The knapsack runs on two bases where it can: the float32 program, and the program in bf16 throughout
(:func:`tcomp.approx.precision.throughout`; per-Network bf16 leaves float32 islands — casts, norms and adds — that
this avoids) with the structured bf16 options on top. Both outcomes are verified and timed in turns; the faster (with
``target_speedup``: the more accurate) is kept. With ``heal``, whose training is most of a round's cost, the bases
are tried in the order of what their first knapsack predicts (time; with ``target_speedup``: error), and the next
is tried only when no outcome so far measured faster than the exact program (with a target: reached it).

The select pass (:mod:`tcomp.passes.select`) runs it on a program whose sites carry options; its report lists every
site's choice with its parameters, local error, sensitivity and times, the base kept, and the end-to-end error on
the held-out batches (predicted and measured, every round).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from tcomp.codegen.runnable import runnable, time_in_turns
from tcomp.cost.model import MachineModel
from tcomp.ir import Program, subprogram
from tcomp.ir.sites import Option, Site, find_sites
from tcomp.ir.symbolic import Point, point_key
from tcomp.timing import median_time

from .apply import apply_options, int8_bias, int8_refused, site_replacement
from .calibration import Calibration, ProgramRunner
from .heal import HealConfig, heal
from .measurements import Measurements
from .option_time import time_against, time_ops
from .precision import short_name, throughout

PROGRAM = "<program>"     # the site name of a program-level option (a precision throughout)
MAX_ROUNDS = 6


@dataclass(frozen=True)
class Selection:
    """What a selection chose: an option per site, and the precision the whole program runs in (None: float32).
    Kept by the compiled module, so that a recompilation for another input signature re-applies the same options
    and trains the same factors (:func:`reapply`)."""

    sites: dict[str, Option] = field(default_factory=dict)
    throughout: Option | None = None

    def __bool__(self) -> bool:
        return bool(self.sites) or self.throughout is not None


@dataclass
class Job:
    """What a selection works from: the program with its sites' options, the calibration data and the measurements
    remembered for it, the example inputs and mode, the tolerance or target speed-up, and healing."""

    program: Program
    calibration: Calibration
    measurements: Measurements
    example_inputs: tuple
    training: bool
    tolerance: float | None
    target_speedup: float | None
    heal: HealConfig | None = None
    machine: MachineModel | None = None

    def runnable(self, program: Program):
        return runnable(program, training=self.training, machine=self.machine)


@dataclass
class Result:
    """The program as selected (unchanged when nothing was within the tolerance or reached the target), the
    selection, and what the select pass reports: notes and details (every site's options and choice, the bases,
    every round's predicted and measured error)."""

    program: Program
    selection: Selection
    notes: list[str]
    details: dict


@dataclass
class Measured:
    option: Option
    time: float
    sensitivity: float       # the metric's error with this option alone
    additive: float          # its contribution to the budget


def _isolated_module(job: Job, ops: list, at: Point, out_dtype: torch.dtype):
    """The ops as a callable over the values they read (names), returning the site's value in its dtype."""
    prog = subprogram(ops, at)
    gm = job.runnable(prog)
    names = [v.name for v in prog.inputs]

    def run(*args):
        out = gm(*args)
        return out.to(out_dtype) if out.dtype != out_dtype else out

    return run, names


def measure(job: Job) -> tuple[dict[str, float], dict[str, list[Measured]]]:
    """Dense time per site and the measured options (time, sensitivity) per site. An option's time is its measured
    fraction of the dense site's (:func:`tcomp.approx.option_time.time_against`) times the site's fastest dense
    time."""
    program, cal = job.program, job.calibration
    at, key = program.example, point_key(program.example)
    by_name = {op.out.name: op for op in program.ops}
    gm = job.runnable(program)
    dense: dict[str, float] = {}
    measured: dict[str, list[Measured]] = {}
    runner = ProgramRunner(gm)
    for name, site in program.sites.items():
        if not site.options:
            continue
        op = by_name[name]
        found_rows = []
        for option in site.options:
            def ratio_and_error(op=op, site=site, option=option, name=name):
                try:
                    ops, _ = site_replacement(op, site, option)
                    ratio = time_against(ops, [op], at, training=job.training, machine=job.machine)
                except ValueError:
                    return None
                if ratio >= 0.97:
                    return None  # not faster here: never worth its error
                fn, names = _isolated_module(job, ops, at, op.out.dtype)
                runner.replace = {gm.tcomp_nodes[name]: (fn, [gm.tcomp_nodes[n] for n in names])}
                return ratio, cal.sensitivity_error(runner)

            found = job.measurements.remember("option", name, option.name, key, job.training,
                                              compute=ratio_and_error, persist=True)
            if found is not None:
                found_rows.append((option, *found))
        runner.replace = {}
        dense[name] = time_ops([op], at, training=job.training, machine=job.machine)
        after = _propagated_dtype_cost(job, site, found_rows)
        measured[name] = [Measured(o, ratio * dense[name], cal.metric.from_additive(add), add)
                          for (o, ratio, err) in found_rows if after.get(o.dtype, 0.0) is not None
                          for add in [cal.metric.additive(err) + after.get(o.dtype, 0.0)]]
    return dense, measured


def _propagated_dtype_cost(job: Job, site: Site, rows: list[tuple[Option, float, float]]
                           ) -> dict[torch.dtype, float | None]:
    """Per reduced dtype of ``site``'s measured options (``rows``: option, time ratio, cast-back error): the error,
    in additive units, that the ops after the site add by running in that dtype too; None when the program cannot
    run with the site in that dtype (an op that refuses the mixture), and then the site's
    options of that dtype are dropped.

    A sensitivity is measured with the site's result cast back to its dtype, but once applied the dtype flows on: a
    bf16 projection makes the attention call, the norm and the activation after it bf16 until a promotion (seen on
    ViT-tiny: seven bf16 sites with summed sensitivities of 5e-8 measured 0.018 together). So the site's plain dtype
    option is applied alone to the whole program, dtypes propagated, and run (whether or not it was measured
    faster); what it measures above its cast-back error is charged to every option of that dtype at the site."""
    program, cal = job.program, job.calibration
    extra: dict[torch.dtype, float] = {}
    cast_back = {o.dtype: err for o, _, err in rows if o.dtype is not None and o.factors is None}
    for dtype in {o.dtype for o, _, _ in rows if o.dtype is not None}:
        plain = next((o for o in site.options if o.dtype == dtype and o.factors is None), None)
        if plain is None:
            continue

        def propagated(plain=plain):
            try:
                alone = apply_options(program, {site.name: plain}, job.example_inputs)
                return cal.sensitivity_error(job.runnable(alone))
            except (RuntimeError, TypeError, ValueError):
                return None

        whole = job.measurements.remember("option-propagated", site.name, plain.name, point_key(program.example),
                                          job.training, compute=propagated, persist=True)
        extra[dtype] = None if whole is None else \
            max(0.0, cal.metric.additive(whole) - cal.metric.additive(cast_back.get(dtype, 0.0)))
    return extra


def solve(dense: dict[str, float], measured: dict[str, list[Measured]], budget: float | None,
          required_saving: float | None, time_limit: float = 10.0) -> dict[str, Measured]:
    """The multiple-choice knapsack on CP-SAT. Times in microseconds and budgets in millionths of the budget's
    scale are rounded to integers."""
    from ortools.sat.python import cp_model  # imported on use: OR-Tools (and pandas with it) take 0.3 s to import

    model = cp_model.CpModel()
    choice: dict[tuple[str, int], cp_model.IntVar] = {}
    saved_terms, err_terms = [], []
    scale = (budget if budget else max((m.additive for rows in measured.values() for m in rows), default=1.0)) \
        or 1.0
    for name, rows in measured.items():
        if not rows:
            continue
        vars_ = []
        for j, m in enumerate(rows):
            v = model.NewBoolVar(f"{name}:{j}")
            choice[(name, j)] = v
            vars_.append(v)
            saved_terms.append(int(round((dense[name] - m.time) * 1e6)) * v)
            err_terms.append(int(round(m.additive / scale * 1e6)) * v)
        model.AddAtMostOne(vars_)
    if not choice:
        return {}
    if budget is not None:
        model.Add(sum(err_terms) <= 1_000_000)
        model.Maximize(sum(saved_terms))
    else:
        model.Add(sum(saved_terms) >= int(round(required_saving * 1e6)))
        model.Minimize(sum(err_terms))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 2
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {}
    return {name: measured[name][j] for (name, j), v in choice.items() if solver.Value(v)}


@dataclass
class _Base:
    """What the knapsack's choices apply to: the float32 program as traced, or the program in a reduced precision
    throughout (:func:`tcomp.approx.precision.throughout`). ``dense``/``measured``: each site's time as it runs in the
    base and the options it may take on top (their ``additive`` the error they add to the base's); ``additive``:
    the base's own error in budget units; ``fixed``: the sites' plain precision options the base amounts to (for
    the report); ``marker``: the program-level option, None for float32."""

    label: str
    program: Program
    time: float
    dense: dict[str, float]
    measured: dict[str, list[Measured]]
    additive: float = 0.0
    fixed: dict[str, Measured] = field(default_factory=dict)
    marker: Option | None = None

    def room(self, budget: float | None, required: float | None, fp32_time: float):
        """The error budget and the time saving left for the sites on top of this base."""
        return (None if budget is None else budget - self.additive,
                None if required is None else required - (fp32_time - self.time))

    def choose(self, budget: float | None, required: float | None) -> dict[str, Measured]:
        """The knapsack's choice on top of this base, given what :meth:`room` leaves (nothing when nothing is)."""
        open_ = (budget is not None and budget > 0) or (required is not None and required > 0)
        return solve(self.dense, self.measured, budget, required) if open_ else {}

    def predicted_time(self, chosen: dict[str, Measured]) -> float:
        return self.time - sum(self.dense[n] - m.time for n, m in chosen.items())

    def predicted_error(self, chosen: dict[str, Measured]) -> float:
        """In additive units."""
        return self.additive + sum(m.additive for m in chosen.values())

    def first_prediction(self, budget: float | None, required: float | None, fp32_time: float) -> tuple[float, float]:
        """(time, additive error) that the knapsack's first choice on this base predicts; infinite when the base
        alone spends more than the budget or cannot reach the required saving."""
        budget, required = self.room(budget, required, fp32_time)
        if budget is not None and budget < 0:
            return float("inf"), float("inf")
        chosen = self.choose(budget, required)
        if required is not None and required > 0 and not chosen:
            return float("inf"), float("inf")
        return self.predicted_time(chosen), self.predicted_error(chosen)


@dataclass
class _Outcome:
    """A selection on one base, verified within the tolerance (or, with ``target_speedup``, saving enough)."""

    base: _Base
    program: Program
    on_top: dict[str, Measured]      # the knapsack's choices, applied to the base's program
    error: float                     # on the held-out batches
    healed_curve: list
    gm: object
    healed: list = field(default_factory=list)  # (parameter, its healed value): healing changes them in place
    time: float = 0.0                # measured end to end, in turns with the other outcomes

    @property
    def chosen(self) -> dict[str, Measured]:
        return {**self.base.fixed, **self.on_top}

    def predicted_saving(self, fp32_time: float) -> float:
        return fp32_time - self.base.predicted_time(self.on_top)


class _Factors:
    """The trainable factors that healing changes in place, as first seen (their projections): every round of every
    base heals from them, and the kept outcome's healed values are put back at the end (the options, and so their
    factors, are shared by the bases)."""

    def __init__(self):
        self.initial: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def see(self, params: list[torch.Tensor]) -> None:
        for p in params:
            self.initial.setdefault(id(p), (p, p.detach().clone()))

    def reset(self) -> None:
        self.restore(list(self.initial.values()))

    @staticmethod
    def restore(values: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for p, v in values:
                p.copy_(v)


def _time_outcomes(exact_gm, outcomes: list[_Outcome], args: tuple) -> float:
    """Time every outcome in turns with the exact program (setting ``time``); the exact program's time."""
    exact_time, *times = times_in_turns([exact_gm] + [o.gm for o in outcomes], args)
    for o, t in zip(outcomes, times):
        o.time = t
    return exact_time


def times_in_turns(gms: list, args: tuple) -> list[float]:
    """Median seconds per call of each program, run in turns (so a load change on the machine hits them alike)."""
    t = time_in_turns({str(k): (gm, args) for k, gm in enumerate(gms)}, rounds=5)
    return [t[str(k)] for k in range(len(gms))]


def _precision_base(job: Job, dense: dict[str, float], measured: dict[str, list[Measured]], dtype: torch.dtype,
                    fp32_gm, fp32_time: float) -> tuple[_Base | None, str]:
    """The program in ``dtype`` throughout as a base, or None (and why) when it cannot run so or is not faster (its
    time: ``fp32_time`` × the ratio of the two programs timed in turns). Each site's plain ``dtype`` option is its
    dense there (a site whose plain option was not measured faster keeps its float32 time); its structured ``dtype``
    options go on top, charged what they add to the plain one."""
    cal = job.calibration
    label = f"{short_name(dtype)} throughout"
    whole = throughout(job.program, dtype, job.example_inputs)
    if whole is None:
        return None, f"{label}: not possible (the program does not run in {dtype} throughout)"
    try:
        gm = job.runnable(whole)
        t32, t = times_in_turns([fp32_gm, gm], job.example_inputs)
        err = cal.sensitivity_error(gm)
    except (RuntimeError, TypeError, ValueError) as e:
        return None, f"{label}: not possible ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    note = f"{label}: {t * 1e3:.2f} ms against {t32 * 1e3:.2f} ms float32 in turns, {cal.metric.name} error {err:.3g}"
    if t >= t32 * 0.97:
        return None, note + ": not faster, not a base"
    fixed = {n: m for n, rows in measured.items() for m in rows
             if m.option.dtype == dtype and m.option.factors is None}
    base_dense = {n: fixed[n].time if n in fixed else dense[n] for n in measured}
    on_top = {n: [dataclasses.replace(m, additive=max(0.0, m.additive - (fixed[n].additive if n in fixed else 0.0)))
                  for m in rows if m.option.dtype == dtype and m.option.factors is not None
                  and m.time < base_dense[n] * 0.97]
              for n, rows in measured.items()}
    base = _Base(label, whole, fp32_time * t / t32, base_dense, on_top, cal.metric.additive(err), fixed,
                 Option(PROGRAM, "precision", label, dtype=dtype))
    return base, note + ": a base for the selection"


def _rounds(base: _Base, job: Job, budget: float | None, required: float | None, fp32_time: float, base_gm,
            factors: _Factors) -> tuple[_Outcome | None, list[dict]]:
    """Solve the knapsack on ``base``, apply, verify on the held-out batches, tighten and solve again until within
    the tolerance (at most MAX_ROUNDS): the outcome (None when no round is) and every round's figures."""
    cal, tolerance, heal_config = job.calibration, job.tolerance, job.heal
    budget, required = base.room(budget, required, fp32_time)
    rounds = []
    if budget is not None and budget < 0:
        return None, rounds  # the base alone spends more than the budget
    for _ in range(MAX_ROUNDS):
        factors.reset()  # every round heals from the projections
        chosen = base.choose(budget, required)
        if not chosen and (base.marker is None or (required is not None and required > 0)):
            return None, rounds  # nothing fits (or, for a target, the base alone does not reach it)
        candidate = apply_options(base.program, {n: m.option for n, m in chosen.items()}, job.example_inputs)
        gm = job.runnable(candidate)
        healed_curve, healed, unhealed = [], [], None
        err = cal.error(gm, held_out=True)
        if heal_config is not None and chosen:
            params = [v.data for n, v in candidate.constants.items() if n.startswith("tcomp.")]
            factors.see(params)
            healed_curve = heal(gm, params, cal, base_gm, list(chosen), heal_config)
            unhealed, err = err, cal.error(gm, held_out=True)
            if err < unhealed:
                healed = [(p, p.detach().clone()) for p in params]
            else:  # healing is kept only where it lowers the held-out error (it can overfit the fit batches)
                factors.reset()
                err = unhealed
        predicted = base.predicted_error(chosen)
        rounds.append({"base": base.label, "budget": budget, "required_saving_s": required, "chosen": len(chosen),
                       "predicted": predicted, "measured": cal.metric.additive(err),
                       "unhealed": None if unhealed is None else cal.metric.additive(unhealed),
                       "healed": bool(healed)})
        if tolerance is None or err <= tolerance:
            return _Outcome(base, candidate, chosen, err, healed_curve, gm, healed), rounds
        if budget is None or not chosen:
            return None, rounds
        budget *= min(0.7, 0.9 * cal.metric.budget(tolerance) / max(cal.metric.additive(err), 1e-30))
    return None, rounds


def select(job: Job) -> Result:
    """The selection for ``job`` (the algorithm in the module docstring)."""
    program, cal = job.program, job.calibration
    notes: list[str] = []
    t0 = time.perf_counter()
    dense, measured = measure(job)
    measure_s = time.perf_counter() - t0
    base_gm = job.runnable(program)
    base_time = median_time(base_gm, job.example_inputs)
    budget = cal.metric.budget(job.tolerance) if job.tolerance is not None else None
    if job.heal is not None and budget is not None:
        budget *= job.heal.budget_factor
    required = base_time * (1 - 1 / job.target_speedup) if job.target_speedup is not None else None
    bases = _bases(job, dense, measured, base_gm, base_time, notes)
    if job.heal is not None:  # healing is most of a round's cost: the base predicted best is healed first
        bases.sort(key=lambda b: b.first_prediction(budget, required, base_time)[0 if job.tolerance is not None else 1])
    factors = _Factors()
    outcomes, rounds, exact_time = _try_bases(job, bases, budget, required, base_gm, base_time, factors, notes)
    best = _best(job, outcomes, exact_time, notes)
    factors.reset()
    if best is None:
        why = "no selection within the tolerance" if job.tolerance is not None else \
            f"no selection reaches {job.target_speedup}x"
        if outcomes:
            why += f" is faster than the exact program measured in turns ({exact_time * 1e3:.2f} ms: " + ", ".join(
                f"{o.base.label} {o.time * 1e3:.2f} ms" for o in outcomes) + ")"
        notes.append(why + ": the program is unchanged")
        new, chosen, on = program.copy(), {}, next(b for b in bases if b.marker is None)
    else:
        _Factors.restore(best.healed)
        new, chosen, on = best.program.copy(), best.chosen, best.base
        if len(bases) > 1:
            notes.append("bases measured in turns: " + "; ".join(
                f"{o.base.label} {o.time * 1e3:.2f} ms, error {o.error:.4g}" for o in outcomes)
                + f" against float32 exact {exact_time * 1e3:.2f} ms — kept {best.base.label}")
    new.sites = None
    selection = Selection({n: m.option for n, m in best.on_top.items()}, best.base.marker) if best is not None \
        else Selection()
    final_time = best.time if best is not None else exact_time
    sites = sum(1 for s in program.sites.values() if s.options)
    what = (f"{len(chosen)} of {sites} site(s) approximated" if on.marker is None else
            f"the program in {on.label}, {len(best.on_top)} of {sites} site(s) structured on top")
    notes.append(f"{what}; held-out {cal.metric.name} error {best.error if best else 0.0:.4g} (tolerance "
                 f"{job.tolerance}); measured time in turns {exact_time * 1e3:.2f} ms -> {final_time * 1e3:.2f} ms")
    details = {
        "measure_s": measure_s, "metric": cal.metric.name, "tolerance": job.tolerance,
        "target_speedup": job.target_speedup, "base": on.label, "held_out_error": best.error if best else 0.0,
        "base_time_s": base_time, "exact_time_s": exact_time, "time_s": final_time,
        "predicted_saving_s": best.predicted_saving(base_time) if best is not None else 0.0,
        "rounds": rounds, "heal_loss": [best.healed_curve[0], best.healed_curve[-1]] if best is not None and best.healed
        else None,  # (first step, last step) of the kept outcome's distillation, None when not kept
        "layers": [_row(n, on.dense.get(n, dense[n]), on.measured.get(n, measured[n]), chosen.get(n),
                        "dense" if on.marker is None else on.label) for n in measured]}
    return Result(new, selection, notes, details)


def _bases(job: Job, dense: dict[str, float], measured: dict[str, list[Measured]], base_gm, base_time: float,
           notes: list[str]) -> list[_Base]:
    """The float32 program, and the program in each reduced dtype that some option offers, where it runs so and is
    faster (:func:`_precision_base`; why not, in ``notes``)."""
    bases = [_Base("float32", job.program, base_time, dense, measured)]
    for dtype in sorted({m.option.dtype for rows in measured.values() for m in rows if m.option.dtype is not None},
                        key=str):
        alt, note = _precision_base(job, dense, measured, dtype, base_gm, base_time)
        notes.append(note)
        if alt is not None:
            bases.append(alt)
    return bases


def _kept(job: Job, outcome: _Outcome, exact_time: float) -> bool:
    """Whether an outcome measured faster than the exact program (with a target: reaching it, 5% for noise)."""
    if job.tolerance is not None:
        return outcome.time < exact_time
    return outcome.time * job.target_speedup <= exact_time * 1.05


def _try_bases(job: Job, bases: list[_Base], budget: float | None, required: float | None, base_gm,
               base_time: float, factors: _Factors, notes: list[str]) -> tuple[list[_Outcome], list[dict], float]:
    """The rounds on every base (with healing, a base only while no outcome so far measured faster than exact):
    the outcomes, every round's figures, and the exact program's time measured in turns with the outcomes."""
    outcomes, rounds = [], []
    exact_time = base_time
    for b in bases:
        if job.heal is not None and any(_kept(job, o, exact_time) for o in outcomes):
            notes.append(f"{b.label}: not tried, a base predicted better found a selection that measured "
                         + ("faster than exact" if job.tolerance is not None else "at the target"))
            continue
        outcome, tried = _rounds(b, job, budget, required, base_time, base_gm, factors)
        rounds += tried
        if outcome is not None:
            outcomes.append(outcome)
            if job.heal is not None:  # measured now: whether the next base is worth its healing
                exact_time = _time_outcomes(base_gm, outcomes, job.example_inputs)
    if outcomes and job.heal is None:
        exact_time = _time_outcomes(base_gm, outcomes, job.example_inputs)
    return outcomes, rounds, exact_time


def _best(job: Job, outcomes: list[_Outcome], exact_time: float, notes: list[str]) -> _Outcome | None:
    """With a tolerance, the fastest outcome measured faster than exact; with a target, the most accurate that
    reaches it as measured, else the fastest (said so in ``notes``)."""
    reach = [o for o in outcomes if _kept(job, o, exact_time)]
    if job.tolerance is not None:
        return min(reach, key=lambda o: o.time, default=None)
    if reach:
        return min(reach, key=lambda o: o.error)
    best = min(outcomes, key=lambda o: o.time, default=None)
    if best is not None:
        notes.append(f"measured {exact_time / best.time:.2f}x, short of the {job.target_speedup}x target (the "
                     f"knapsack's per-site times predicted it): the fastest selection is kept")
    return best


def reapply(program: Program, selection: Selection, example_inputs: tuple,
            training: bool = False) -> tuple[Program, list[str]]:
    """An earlier compilation's choices applied again (a recompilation for another dtype, device or mode): the same
    options, the same trainable factors, no new measurement — except an int8 site where int8 cannot run as it was
    chosen (:func:`tcomp.approx.apply.int8_refused`, or another dtype), which runs its dense op; the notes say
    which."""
    sites = program.sites if program.sites is not None else find_sites(program)
    missing = set(selection.sites) - set(sites)
    if missing:
        raise ValueError(f"the earlier selection names sites this program does not have: {sorted(missing)}")
    with_sites = program.copy()
    with_sites.sites = sites
    if selection.throughout is not None:
        with_sites = throughout(with_sites, selection.throughout.dtype, example_inputs)
        if with_sites is None:
            raise ValueError(f"the earlier selection ran the program {selection.throughout.name}; this one cannot "
                             f"run so")
    by_name = {op.out.name: op for op in program.ops}
    refused = int8_refused(example_inputs, training)
    dense = [name for name, o in selection.sites.items()
             if o.kind == "int8" and (refused or int8_bias(by_name[name], sites[name]) is False)]
    chosen = {name: o for name, o in selection.sites.items() if name not in dense}
    new = apply_options(with_sites, chosen, example_inputs).copy()
    new.sites = None
    why = refused or "not the float32 shape an int8 layer needs"
    notes = [f"int8 site(s) {', '.join(dense)} run dense here: {why}"] if dense else []
    return new, notes


def _row(name: str, dense_t: float, rows: list[Measured], chosen: Measured | None, unchanged: str) -> dict:
    """A site's line in the report; ``unchanged``: what a site without a choice runs as (its dense op, or the base
    it runs in)."""
    return {"site": name, "dense_ms": dense_t * 1e3, "chosen": chosen.option.name if chosen else unchanged,
            "params": chosen.option.num_params if chosen else None,
            "local_error": chosen.option.local_error if chosen else 0.0,
            "sensitivity": chosen.sensitivity if chosen else 0.0, "time_ms": (chosen.time if chosen else dense_t) * 1e3,
            "options": [{"name": m.option.name, "time_ms": m.time * 1e3, "sensitivity": m.sensitivity,
                         "local_error": m.option.local_error} for m in rows]}
