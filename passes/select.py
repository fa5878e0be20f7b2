"""select (approximate): one option per site under a global error budget — a multiple-choice knapsack.

Every site (a linear layer, a convolution, any network for precision) has options proposed by the structured,
precision and tucker passes, plus its dense original. For each option the pass measures

- its **time**: the option's ops planned and run alone on inputs of the site's shape (:mod:`tcomp.layertime`,
  cached); an option that is not faster than the dense site is dropped (FLOPs mislead);
- its **sensitivity**: the end-to-end error of the model when that site alone takes that option, on the fit
  calibration batches (:class:`tcomp.calibration.ProgramRunner` replaces the site's result).

With ``tolerance`` it maximises the time saved subject to the summed sensitivities (in the metric's additive
units: squared relative error, or cosine loss) staying within the budget; with ``target_speedup`` it minimises
the summed sensitivity subject to saving enough time. Both are multiple-choice knapsacks, solved exactly with
OR-Tools CP-SAT. The chosen options are applied, the whole program is verified on the held-out batches, and when
the measured error is over the tolerance the budget is tightened (by the ratio of the two) and the knapsack
solved again. With ``heal``, the selection starts from a looser budget, the factors are distilled against the
original model (:mod:`tcomp.heal`) and the *healed* error is what is verified.

The report lists every site's choice with its parameters, local error, sensitivity and times, and the end-to-end
error on the held-out batches (predicted and measured).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from ortools.sat.python import cp_model

from tcomp.calibration import Calibration, ProgramRunner, remembered
from tcomp.candidates import (Option, Site, apply_conv, apply_structure, conv_factor_values, factor_values,
                              propagate_dtypes, with_dtype)
from tcomp.emit import emit
from tcomp.ir import Call, Network, Program
from tcomp.layertime import median_time, time_against, time_ops
from tcomp.passmanager import Pass, PassContext, PassReport

from . import contraction_order

NAME = "select"
PROGRAM = "<program>"     # the selection's key for a program-level option (a precision throughout)
MAX_ROUNDS = 6
SENSITIVITY_BATCHES = 2


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
    from tcomp.layertime import subprogram

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
    limit = min(SENSITIVITY_BATCHES, len(cal.fit))
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
                return ratio, cal.error(runner, limit=limit)

            found = remembered(ctx, "option", name, option.name, batch, ctx.training, compute=ratio_and_error,
                               persist=True)
            if found is not None:
                found_rows.append((option, *found))
        runner.replace = {}
        dense[name] = time_ops([op], batch, training=ctx.training)
        after = _downstream(program, ctx, cal, name, found_rows)
        measured[name] = [Measured(o, ratio * dense[name], cal.metric.from_additive(add), add)
                          for (o, ratio, err) in found_rows
                          for add in [cal.metric.additive(err) + after.get(o.dtype, 0.0)]]
    return dense, measured


def _downstream(program: Program, ctx: PassContext, cal: Calibration, name: str,
                rows: list[tuple[Option, float, float]]) -> dict[torch.dtype, float]:
    """Per reduced dtype taken at site ``name`` (``rows``: its measured options, ratio, cast-back error): the error (additive units) that the ops after the site add by
    running in that dtype too. A sensitivity is measured with the site's result cast back to its dtype, but once
    applied the dtype flows on — a bf16 projection makes the attention call, the norm and the activation after it
    bf16 until a promotion (measured on ViT-tiny: seven bf16 sites with summed sensitivities of 5e-8 measured 0.018
    together). So the site's plain dtype option is applied to the whole program, dtypes propagated, and run; what
    it measures above the cast-back sensitivity is added to every option of that dtype at the site."""
    extra: dict[torch.dtype, float] = {}
    limit = min(SENSITIVITY_BATCHES, len(cal.fit))
    for option, _, err in rows:
        if option.dtype is None or option.factors is not None or option.dtype in extra:
            continue

        def propagated(option=option):
            alone = apply_selection(program, {name: Measured(option, 0.0, 0.0, 0.0)}, ctx.example_inputs)
            planned = _planned(alone, ctx)
            return cal.error(emit(planned, _modules(planned)), limit=limit)

        whole = remembered(ctx, "option-propagated", name, option.name, program.example_batch, ctx.training,
                           compute=propagated, persist=True)
        extra[option.dtype] = max(0.0, cal.metric.additive(whole) - cal.metric.additive(err))
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
    from tcomp.ir import Value

    p = torch.nn.Parameter(bias.detach().to(site.weight.dtype).clone())
    return Value(f"tcomp.{site.weight.name.replace('.', '_')}_bias", tuple(p.shape), p.dtype, kind="const", data=p,
                 trainable=True)


def _with_bias(net: Network, bias):
    """The network with its bias replaced (or added) by the value ``bias`` (AFM folds the output mean into it)."""
    from tcomp.ir import ACC, EpilogueOp

    rest = net.epilogue[1:] if net.epilogue and net.epilogue[0].fn == "add" else net.epilogue
    return net.replace(epilogue=(EpilogueOp("add", torch.add, (ACC, bias)),) + tuple(rest))


@dataclass
class _Base:
    """What the knapsack's choices apply to: the float32 program as traced, or the program in a reduced precision
    throughout (:func:`passes.precision.throughout`) with ``fixed`` (every site's plain precision option) applied.
    ``dense``/``measured``: each site's time as it runs in the base and the options it may take on top;
    ``additive``: the base's own error in budget units; ``marker``: the program-level option, None for float32."""

    label: str
    program: Program
    time: float
    dense: dict[str, float]
    measured: dict[str, list[Measured]]
    additive: float = 0.0
    fixed: dict[str, Measured] = field(default_factory=dict)
    marker: Option | None = None


@dataclass
class _Outcome:
    base: _Base
    program: Program
    chosen: dict[str, Measured]      # every site's option: the base's fixed ones and the knapsack's on top
    on_top: dict[str, Measured]      # the knapsack's
    error: float
    rounds: list
    healed_curve: list
    gm: object
    time: float = 0.0                # measured, end to end

    def predicted_saving(self, fp32_time: float) -> float:
        return fp32_time - self.base.time + sum(self.base.dense[n] - m.time for n, m in self.on_top.items())


def _precision_base(program: Program, ctx: PassContext, cal: Calibration, dense: dict[str, float],
                    measured: dict[str, list[Measured]], dtype: torch.dtype, fp32_time: float) -> tuple[_Base | None, str]:
    """The program in ``dtype`` throughout as a base, or None (and why) when it cannot run so or is not faster."""
    from .precision import throughout

    label = f"{_short(dtype)} throughout"
    fixed = {n: m for n, rows in measured.items() for m in rows
             if m.option.dtype == dtype and m.option.kind == "precision" and m.option.factors is None}
    whole = throughout(program, dtype, ctx.example_inputs)
    if whole is None:
        return None, f"{label}: not possible (an op refuses {dtype} inputs with float32 weights)"
    try:
        whole = apply_selection(whole, fixed, ctx.example_inputs)
        planned = _planned(whole, ctx)
        gm = emit(planned, _modules(planned))
        t = median_time(gm, ctx.example_inputs)
        err = cal.error(gm, limit=min(SENSITIVITY_BATCHES, len(cal.fit)))
    except (RuntimeError, TypeError, ValueError) as e:
        return None, f"{label}: not possible ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    note = f"{label}: {t * 1e3:.2f} ms against {fp32_time * 1e3:.2f} ms float32, {cal.metric.name} error {err:.3g}"
    if t >= fp32_time * 0.97:
        return None, note + ": not faster, not a base"
    on_top = {n: [m for m in measured[n] if m.option.dtype == dtype and m.option.factors is not None]
              for n in fixed}
    base = _Base(label, whole, t, {n: m.time for n, m in fixed.items()}, on_top, cal.metric.additive(err), fixed,
                 Option(PROGRAM, "precision", label, dtype=dtype))
    return base, note + ": a base for the selection"


def _short(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def _rounds(base: _Base, ctx: PassContext, cal: Calibration, budget: float | None, required: float | None,
            fp32_time: float, base_gm) -> _Outcome | None:
    """Solve the knapsack on ``base``, apply, verify on the held-out batches, tighten and solve again until within
    the tolerance (at most MAX_ROUNDS); None when no round is."""
    tolerance = ctx.options.get("tolerance")
    heal_config = ctx.options.get("heal")
    if budget is not None:
        budget -= base.additive
    if required is not None:
        required -= fp32_time - base.time
    rounds = []
    for _ in range(MAX_ROUNDS):
        room = (budget is not None and budget > 0) or (required is not None and required > 0)
        chosen = solve(base.dense, base.measured, budget, required) if room else {}
        if not chosen and base.marker is None:
            return None
        everything = {**base.fixed, **chosen}
        candidate = apply_selection(base.program, everything, ctx.example_inputs)
        planned = _planned(candidate, ctx)
        gm = emit(planned, _modules(planned))
        healed_curve = []
        if heal_config is not None and chosen:
            from tcomp.heal import heal

            params = [v.data for n, v in planned.constants.items() if n.startswith("tcomp.")]
            healed_curve = heal(gm, params, cal, base_gm, list(chosen), heal_config)
        err = cal.error(gm, held_out=True)
        predicted = base.additive + sum(m.additive for m in chosen.values())
        rounds.append({"base": base.label, "budget": budget, "required_saving_s": required, "chosen": len(chosen),
                       "predicted": predicted, "measured": cal.metric.additive(err)})
        if tolerance is None or err <= tolerance:
            return _Outcome(base, candidate, everything, chosen, err, rounds, healed_curve, gm)
        if budget is None or not chosen:
            return None
        budget *= min(0.7, 0.9 * cal.metric.budget(tolerance) / max(cal.metric.additive(err), 1e-30))
    return None


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
        alt, note = _precision_base(program, ctx, cal, dense, measured, dtype, base_time)
        report.notes.append(note)
        if alt is not None:
            bases.append(alt)
    outcomes = [o for o in (_rounds(b, ctx, cal, budget, required, base_time, base_gm) for b in bases)
                if o is not None]
    for o in outcomes:
        o.time = median_time(o.gm, ctx.example_inputs)
    best = min(outcomes, key=(lambda o: o.time) if tolerance is not None else (lambda o: o.error), default=None)
    if best is None:
        report.notes.append("no selection within the tolerance: the program is unchanged")
        final, final_err, chosen = program, 0.0, {}
    else:
        final, final_err, chosen = best.program, best.error, best.chosen
        if len(bases) > 1:
            report.notes.append("bases measured: " + "; ".join(
                f"{o.base.label} {o.time * 1e3:.2f} ms, error {o.error:.4g}" for o in outcomes)
                + f" — kept {best.base.label}")
    new = final.copy()
    new.sites = {}
    selection = {n: m.option for n, m in chosen.items()}
    if best is not None and best.base.marker is not None:
        selection[PROGRAM] = best.base.marker
    ctx.cache["selection"] = selection
    report.changed = bool(selection)
    on = best.base if best is not None else bases[0]
    saved = base_time - (best.time if best is not None else base_time)
    report.notes.append(
        f"{len(chosen)} of {len(sites)} site(s) approximated"
        f"{f' ({on.label} base)' if on.marker is not None else ''}; held-out {cal.metric.name} error "
        f"{final_err:.4g} (tolerance {tolerance}); measured time {base_time * 1e3:.2f} ms -> "
        f"{(base_time - saved) * 1e3:.2f} ms")
    report.details.update({
        "metric": cal.metric.name, "tolerance": tolerance, "target_speedup": target, "base": on.label,
        "held_out_error": final_err, "base_time_s": base_time, "time_s": base_time - saved,
        "predicted_saving_s": best.predicted_saving(base_time) if best is not None else 0.0,
        "rounds": [r for o in outcomes for r in o.rounds],
        "heal_loss": best.healed_curve[-1:] if best is not None and best.healed_curve else None,
        "layers": [_row(n, on.dense.get(n, dense[n]), on.measured.get(n, measured[n]), chosen.get(n))
                   for n in measured]})
    return new, report


def _apply_fixed(program: Program, ctx: PassContext, fixed: dict[str, Option], report: PassReport):
    """Re-apply an earlier compilation's choices (a recompilation for another dtype, device or mode): the same
    options, the same trainable factors, no new measurement."""
    from tcomp.candidates import find_sites

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


def _row(name: str, dense_t: float, rows: list[Measured], chosen: Measured | None) -> dict:
    return {"site": name, "dense_ms": dense_t * 1e3, "chosen": chosen.option.name if chosen else "dense",
            "params": chosen.option.num_params if chosen else None,
            "local_error": chosen.option.local_error if chosen else 0.0,
            "sensitivity": chosen.sensitivity if chosen else 0.0, "time_ms": (chosen.time if chosen else dense_t) * 1e3,
            "options": [{"name": m.option.name, "time_ms": m.time * 1e3, "sensitivity": m.sensitivity,
                         "local_error": m.option.local_error} for m in rows]}


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
