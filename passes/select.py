"""select (approximate): one option per site under a global error budget — a multiple-choice knapsack.

Every site (a linear layer, a convolution, any network for precision) has options proposed by the structured,
precision and tucker passes, plus its dense original. For each option the pass measures

- its **time**: the option's ops planned and run on inputs of the site's shape in turns with the dense site, as a
  ratio (:func:`tcomp.layertime.time_against`, cached) times the site's fastest dense time; an option that is not
  faster than the dense site is dropped (FLOPs mislead);
- its **sensitivity**: the end-to-end error of the model when that site alone takes that option, on the fit
  calibration batches (:class:`tcomp.calibration.ProgramRunner` replaces the site's result), plus, for a reduced
  dtype, what the ops after the site add by running in it too (:func:`_propagated_dtype_cost`).

With ``tolerance`` it maximises the time saved subject to the summed sensitivities (in the metric's additive
units: squared relative error, or cosine loss) staying within the budget; with ``target_speedup`` it minimises
the summed sensitivity subject to saving enough time. Both are multiple-choice knapsacks, solved exactly with
OR-Tools CP-SAT. The chosen options are applied, the whole program is verified on the held-out batches, and when
the measured error is over the tolerance the budget is tightened (by the ratio of the two) and the knapsack
solved again. With ``heal``, the selection starts from a looser budget, the factors are distilled against the
original model (:mod:`tcomp.heal`) and the *healed* error is what is verified (the healed factors are kept
only where they lower the held-out error).

The knapsack runs on two bases where it can: the float32 program, and the program in bf16 throughout
(:func:`passes.precision.throughout`; per-Network bf16 leaves float32 islands — casts, norms and adds — that this
avoids) with the structured bf16 options on top. Both outcomes are verified and timed in turns; the faster (with
``target_speedup``: the more accurate) is kept. With ``heal``, whose training is most of a round's cost, the bases
are tried in the order of what their first knapsack predicts (time; with ``target_speedup``: error), and the next
is tried only when no outcome so far measured faster than the exact program (with a target: reached it).

The report lists every site's choice with its parameters, local error, sensitivity and times, the base kept, and
the end-to-end error on the held-out batches (predicted and measured, every round).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from ortools.sat.python import cp_model

from tcomp.approx.calibration import Calibration, ProgramRunner, remembered
from tcomp.approx.sites import (Option, Site, apply_conv, apply_structure, conv_factor_values, factor_values,
                              propagate_dtypes, with_dtype)
from tcomp.codegen.emit import emit
from tcomp.ir.program import Call, Network, Program
from tcomp.approx.option_time import time_against, time_ops
from tcomp.timing import in_turns, median_time, sync_for
from tcomp.passmanager import Pass, PassContext, PassReport

from . import contraction_order

NAME = "select"
PROGRAM = "<program>"     # the selection's key for a program-level option (a precision throughout)
MAX_ROUNDS = 6


@dataclass
class Measured:
    option: Option
    time: float
    sensitivity: float       # the metric's error with this option alone
    additive: float          # its contribution to the budget


def _modules(program: Program) -> dict:
    return {op.target: op.module for op in program.ops if isinstance(op, Call) and op.kind == "module"}


def _planned(program: Program, ctx: PassContext) -> Program:
    planned, _ = contraction_order.run(program, ctx)
    return planned


def site_replacement(op, site: Site, option: Option) -> tuple[list, list]:
    """The ops that run ``site`` with ``option`` (the last one produces the site's value) and the new trainable
    constants they read (factors, and the bias AFM moves the output mean into). The constants are created once
    per option and kept on it, so every program built with the option — recompilations for another dtype or mode
    included — trains the same parameters."""
    if site.kind == "conv":
        if option.values is None:
            option.values = conv_factor_values(op, option.factors)
        return apply_conv(op, option.factors, option.values), option.values
    net = op
    if option.factors is not None:
        if option.values is None:
            option.values = factor_values(site.weight, option.factors)
        values = option.values[:len(option.factors.factors)]
        net = apply_structure(net, site, option.factors, values)
        bias = option.params.get("bias")
        if bias is not None:
            if len(option.values) == len(values):
                option.values = option.values + [_bias_value(site, bias)]
            net = _with_bias(net, option.values[-1])
    if option.dtype is not None:
        net = with_dtype(net, option.dtype)
    return [net], list(option.values or [])


def _isolated_module(ops: list, batch: int | None, out_dtype: torch.dtype):
    """The ops as a callable over the values they read (names), returning the site's value in its dtype."""
    from tcomp.approx.option_time import subprogram

    prog = subprogram(ops, batch)
    prog = _planned(prog, PassContext((), False))
    gm = emit(prog, _modules(prog))
    names = [v.name for v in prog.inputs]

    def run(*args):
        out = gm(*args)
        return out.to(out_dtype) if out.dtype != out_dtype else out

    return run, names


def measure(program: Program, ctx: PassContext, cal: Calibration) -> tuple[dict[str, float], dict[str, list]]:
    """Dense time per site and the measured options (time, sensitivity) per site. An option's time is its measured
    fraction of the dense site's (:func:`tcomp.layertime.time_against`) times the site's fastest dense time."""
    batch = program.example_batch
    by_name = {op.out.name: op for op in program.ops}
    base = _planned(program, ctx)
    gm = emit(base, _modules(base))
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
                    ratio = time_against(ops, [op], batch, training=ctx.training)
                except ValueError:
                    return None
                if ratio >= 0.97:
                    return None  # not faster here: never worth its error
                fn, names = _isolated_module(ops, batch, op.out.dtype)
                runner.replace = {gm.tcomp_nodes[name]: (fn, [gm.tcomp_nodes[n] for n in names])}
                return ratio, cal.sensitivity_error(runner)

            found = remembered(ctx, "option", name, option.name, batch, ctx.training, compute=ratio_and_error,
                               persist=True)
            if found is not None:
                found_rows.append((option, *found))
        runner.replace = {}
        dense[name] = time_ops([op], batch, training=ctx.training)
        after = _propagated_dtype_cost(program, ctx, cal, site, found_rows)
        measured[name] = [Measured(o, ratio * dense[name], cal.metric.from_additive(add), add)
                          for (o, ratio, err) in found_rows if after.get(o.dtype, 0.0) is not None
                          for add in [cal.metric.additive(err) + after.get(o.dtype, 0.0)]]
    return dense, measured


def _propagated_dtype_cost(program: Program, ctx: PassContext, cal: Calibration, site: Site,
                           rows: list[tuple[Option, float, float]]) -> dict[torch.dtype, float | None]:
    """Per reduced dtype of ``site``'s measured options (``rows``: option, time ratio, cast-back error): the error,
    in additive units, that the ops after the site add by running in that dtype too; None when the program cannot
    run with the site in that dtype (an op that refuses the mixture), and then the site's
    options of that dtype are dropped.

    A sensitivity is measured with the site's result cast back to its dtype, but once applied the dtype flows on: a
    bf16 projection makes the attention call, the norm and the activation after it bf16 until a promotion (seen on
    ViT-tiny: seven bf16 sites with summed sensitivities of 5e-8 measured 0.018 together). So the site's plain dtype
    option is applied alone to the whole program, dtypes propagated, and run (whether or not it was measured
    faster); what it measures above its cast-back error is charged to every option of that dtype at the site."""
    extra: dict[torch.dtype, float] = {}
    cast_back = {o.dtype: err for o, _, err in rows if o.dtype is not None and o.factors is None}
    for dtype in {o.dtype for o, _, _ in rows if o.dtype is not None}:
        plain = next((o for o in site.options if o.dtype == dtype and o.factors is None), None)
        if plain is None:
            continue

        def propagated(plain=plain):
            try:
                alone = apply_selection(program, {site.name: Measured(plain, 0.0, 0.0, 0.0)}, ctx.example_inputs)
                planned = _planned(alone, ctx)
                return cal.sensitivity_error(emit(planned, _modules(planned)))
            except (RuntimeError, TypeError, ValueError):
                return None

        whole = remembered(ctx, "option-propagated", site.name, plain.name, program.example_batch, ctx.training,
                           compute=propagated, persist=True)
        extra[dtype] = None if whole is None else \
            max(0.0, cal.metric.additive(whole) - cal.metric.additive(cast_back.get(dtype, 0.0)))
    return extra


def solve(dense: dict[str, float], measured: dict[str, list[Measured]], budget: float | None,
          required_saving: float | None, time_limit: float = 10.0) -> dict[str, Measured]:
    """The multiple-choice knapsack on CP-SAT. Times in microseconds and budgets in millionths of the budget's
    scale are rounded to integers."""
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


def apply_selection(program: Program, chosen: dict[str, Measured], example: tuple) -> Program:
    """The program with the chosen options in place (factors as new trainable constants), dtypes propagated."""
    new = program.copy()
    for op in list(new.ops):
        m = chosen.get(op.out.name)
        if m is None:
            continue
        replacement, values = site_replacement(op, program.sites[op.out.name], m.option)
        for v in values:
            new.constants[v.name] = v
        at = new.ops.index(op)
        new.ops[at:at + 1] = replacement
    new.check()
    if any(m.option.dtype is not None for m in chosen.values()):
        new = propagate_dtypes(new, example)
    return new


def _bias_value(site: Site, bias: torch.Tensor):
    from tcomp.ir.program import Value

    p = torch.nn.Parameter(bias.detach().to(site.weight.dtype).clone())
    return Value(f"tcomp.{site.weight.name.replace('.', '_')}_bias", tuple(p.shape), p.dtype, kind="const", data=p,
                 trainable=True)


def _with_bias(net: Network, bias):
    """The network with its bias replaced (or added) by the value ``bias`` (AFM folds the output mean into it)."""
    from tcomp.ir.program import ACC, EpilogueOp

    rest = net.epilogue[1:] if net.epilogue and net.epilogue[0].fn == "add" else net.epilogue
    return net.replace(epilogue=(EpilogueOp("add", torch.add, (ACC, bias)),) + tuple(rest))


@dataclass
class _Base:
    """What the knapsack's choices apply to: the float32 program as traced, or the program in a reduced precision
    throughout (:func:`passes.precision.throughout`). ``dense``/``measured``: each site's time as it runs in the
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
    exact_time, *times = _times_in_turns([exact_gm] + [o.gm for o in outcomes], args)
    for o, t in zip(outcomes, times):
        o.time = t
    return exact_time


def _times_in_turns(gms: list, args: tuple) -> list[float]:
    """Median seconds per call of each program, run in turns (so a load change on the machine hits them alike)."""
    with torch.no_grad():
        t = in_turns({str(k): (lambda gm=gm: gm(*args)) for k, gm in enumerate(gms)}, rounds=5, sync=sync_for(args))
    return [t[str(k)] for k in range(len(gms))]


def _precision_base(program: Program, ctx: PassContext, cal: Calibration, dense: dict[str, float],
                    measured: dict[str, list[Measured]], dtype: torch.dtype, fp32_gm,
                    fp32_time: float) -> tuple[_Base | None, str]:
    """The program in ``dtype`` throughout as a base, or None (and why) when it cannot run so or is not faster (its
    time: ``fp32_time`` × the ratio of the two programs timed in turns). Each site's plain ``dtype`` option is its
    dense there (a site whose plain option was not measured faster keeps its float32 time); its structured ``dtype``
    options go on top, charged what they add to the plain one."""
    from .precision import short_name, throughout

    label = f"{short_name(dtype)} throughout"
    whole = throughout(program, dtype, ctx.example_inputs)
    if whole is None:
        return None, f"{label}: not possible (the program does not run in {dtype} throughout)"
    try:
        planned = _planned(whole, ctx)
        gm = emit(planned, _modules(planned))
        t32, t = _times_in_turns([fp32_gm, gm], ctx.example_inputs)
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


def _rounds(base: _Base, ctx: PassContext, cal: Calibration, budget: float | None, required: float | None,
            fp32_time: float, base_gm, factors: _Factors) -> tuple[_Outcome | None, list[dict]]:
    """Solve the knapsack on ``base``, apply, verify on the held-out batches, tighten and solve again until within
    the tolerance (at most MAX_ROUNDS): the outcome (None when no round is) and every round's figures."""
    tolerance = ctx.options.get("tolerance")
    heal_config = ctx.options.get("heal")
    budget, required = base.room(budget, required, fp32_time)
    rounds = []
    if budget is not None and budget < 0:
        return None, rounds  # the base alone spends more than the budget
    for _ in range(MAX_ROUNDS):
        factors.reset()  # every round heals from the projections
        chosen = base.choose(budget, required)
        if not chosen and (base.marker is None or (required is not None and required > 0)):
            return None, rounds  # nothing fits (or, for a target, the base alone does not reach it)
        candidate = apply_selection(base.program, chosen, ctx.example_inputs)
        planned = _planned(candidate, ctx)
        gm = emit(planned, _modules(planned))
        healed_curve, healed, unhealed = [], [], None
        err = cal.error(gm, held_out=True)
        if heal_config is not None and chosen:
            from tcomp.approx.heal import heal

            params = [v.data for n, v in planned.constants.items() if n.startswith("tcomp.")]
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


def run(program: Program, ctx: PassContext) -> tuple[Program, PassReport]:
    report = PassReport(NAME)
    cal: Calibration | None = ctx.options.get("calibration_data")
    tolerance = ctx.options.get("tolerance")
    target = ctx.options.get("target_speedup")
    heal_config = ctx.options.get("heal")
    fixed = ctx.options.get("selection")
    if fixed is not None:
        return _apply_fixed(program, ctx, fixed, report)
    sites = {n: s for n, s in program.sites.items() if s.options}
    if cal is None or not sites or (tolerance is None and target is None):
        report.notes.append("no approximation requested or nothing to approximate: program unchanged")
        return program, report
    t0 = time.perf_counter()
    dense, measured = measure(program, ctx, cal)
    report.details["measure_s"] = time.perf_counter() - t0
    base = _planned(program, ctx)
    base_gm = emit(base, _modules(base))
    base_time = median_time(base_gm, ctx.example_inputs)
    budget = cal.metric.budget(tolerance) if tolerance is not None else None
    if heal_config is not None and budget is not None:
        budget *= heal_config.budget_factor
    required = base_time * (1 - 1 / target) if target is not None else None
    bases = [_Base("float32", program, base_time, dense, measured)]
    for dtype in sorted({m.option.dtype for rows in measured.values() for m in rows if m.option.dtype is not None},
                        key=str):
        alt, note = _precision_base(program, ctx, cal, dense, measured, dtype, base_gm, base_time)
        report.notes.append(note)
        if alt is not None:
            bases.append(alt)
    if heal_config is not None:  # healing is most of a round's cost: the base predicted best is healed first
        bases.sort(key=lambda b: b.first_prediction(budget, required, base_time)[0 if tolerance is not None else 1])
    factors = _Factors()
    outcomes, rounds = [], []
    exact_time = base_time

    def kept(o: _Outcome) -> bool:  # measured faster than exact (with a target: reaching it, 5% for noise)
        return o.time < exact_time if tolerance is not None else o.time * target <= exact_time * 1.05

    for b in bases:
        if heal_config is not None and any(kept(o) for o in outcomes):
            report.notes.append(f"{b.label}: not tried, a base predicted better found a selection that measured "
                                + ("faster than exact" if tolerance is not None else "at the target"))
            continue
        outcome, tried = _rounds(b, ctx, cal, budget, required, base_time, base_gm, factors)
        rounds += tried
        if outcome is not None:
            outcomes.append(outcome)
            if heal_config is not None:  # measured now: whether the next base is worth its healing
                exact_time = _time_outcomes(base_gm, outcomes, ctx.example_inputs)
    if outcomes and heal_config is None:
        exact_time = _time_outcomes(base_gm, outcomes, ctx.example_inputs)
    if tolerance is not None:
        best = min(filter(kept, outcomes), key=lambda o: o.time, default=None)
    else:  # the most accurate that reaches the target as measured, else the fastest, said so
        reach = list(filter(kept, outcomes))
        best = min(reach, key=lambda o: o.error) if reach else min(outcomes, key=lambda o: o.time, default=None)
        if best is not None and not reach:
            report.notes.append(f"measured {exact_time / best.time:.2f}x, short of the {target}x target (the "
                                f"knapsack's per-site times predicted it): the fastest selection is kept")
    factors.reset()
    if best is None:
        why = "no selection within the tolerance" if tolerance is not None else f"no selection reaches {target}x"
        if outcomes:
            why += f" is faster than the exact program measured in turns ({exact_time * 1e3:.2f} ms: " + ", ".join(
                f"{o.base.label} {o.time * 1e3:.2f} ms" for o in outcomes) + ")"
        report.notes.append(why + ": the program is unchanged")
        new, chosen, on = program.copy(), {}, next(b for b in bases if b.marker is None)
    else:
        _Factors.restore(best.healed)
        new, chosen, on = best.program.copy(), best.chosen, best.base
        if len(bases) > 1:
            report.notes.append("bases measured in turns: " + "; ".join(
                f"{o.base.label} {o.time * 1e3:.2f} ms, error {o.error:.4g}" for o in outcomes)
                + f" against float32 exact {exact_time * 1e3:.2f} ms — kept {best.base.label}")
    new.sites = {}
    selection = {n: m.option for n, m in best.on_top.items()} if best is not None else {}
    if best is not None and best.base.marker is not None:
        selection[PROGRAM] = best.base.marker
    ctx.cache["selection"] = selection
    report.changed = bool(selection)
    final_time = best.time if best is not None else exact_time
    what = (f"{len(chosen)} of {len(sites)} site(s) approximated" if on.marker is None else
            f"the program in {on.label}, {len(best.on_top)} of {len(sites)} site(s) structured on top")
    report.notes.append(
        f"{what}; held-out {cal.metric.name} error {best.error if best else 0.0:.4g} (tolerance {tolerance}); "
        f"measured time in turns {exact_time * 1e3:.2f} ms -> {final_time * 1e3:.2f} ms")
    report.details.update({
        "metric": cal.metric.name, "tolerance": tolerance, "target_speedup": target, "base": on.label,
        "held_out_error": best.error if best else 0.0, "base_time_s": base_time, "exact_time_s": exact_time,
        "time_s": final_time,
        "predicted_saving_s": best.predicted_saving(base_time) if best is not None else 0.0,
        "rounds": rounds, "heal_loss": [best.healed_curve[0], best.healed_curve[-1]] if best is not None and best.healed
        else None,  # (first step, last step) of the kept outcome's distillation, None when not kept
        "layers": [_row(n, on.dense.get(n, dense[n]), on.measured.get(n, measured[n]), chosen.get(n),
                        "dense" if on.marker is None else on.label) for n in measured]})
    return new, report


def _apply_fixed(program: Program, ctx: PassContext, fixed: dict[str, Option], report: PassReport):
    """Re-apply an earlier compilation's choices (a recompilation for another dtype, device or mode): the same
    options, the same trainable factors, no new measurement."""
    from tcomp.approx.sites import find_sites

    from .precision import throughout

    sites = program.sites or find_sites(program)
    marker = fixed.get(PROGRAM)
    per_site = {n: o for n, o in fixed.items() if n != PROGRAM}
    missing = set(per_site) - set(sites)
    if missing:
        raise ValueError(f"the earlier selection names sites this program does not have: {sorted(missing)}")
    with_sites = program.copy()
    with_sites.sites = sites
    if marker is not None:
        with_sites = throughout(with_sites, marker.dtype, ctx.example_inputs)
        if with_sites is None:
            raise ValueError(f"the earlier selection ran the program {marker.name}; this one cannot run so")
    chosen = {n: Measured(o, 0.0, 0.0, 0.0) for n, o in per_site.items()}
    new = apply_selection(with_sites, chosen, ctx.example_inputs).copy()
    new.sites = {}
    ctx.cache["selection"] = dict(fixed)
    report.changed = bool(fixed)
    report.notes.append(f"re-applied the earlier selection to {len(per_site)} site(s)"
                        f"{f' ({marker.name})' if marker is not None else ''} (no new measurement)")
    return new, report


def _row(name: str, dense_t: float, rows: list[Measured], chosen: Measured | None, unchanged: str) -> dict:
    """A site's line in the report; ``unchanged``: what a site without a choice runs as (its dense op, or the base
    it runs in)."""
    return {"site": name, "dense_ms": dense_t * 1e3, "chosen": chosen.option.name if chosen else unchanged,
            "params": chosen.option.num_params if chosen else None,
            "local_error": chosen.option.local_error if chosen else 0.0,
            "sensitivity": chosen.sensitivity if chosen else 0.0, "time_ms": (chosen.time if chosen else dense_t) * 1e3,
            "options": [{"name": m.option.name, "time_ms": m.time * 1e3, "sensitivity": m.sensitivity,
                         "local_error": m.option.local_error} for m in rows]}


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
