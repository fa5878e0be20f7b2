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
from dataclasses import dataclass

import torch
from ortools.sat.python import cp_model

from tcomp.calibration import Calibration, ProgramRunner, remembered
from tcomp.candidates import (Option, Site, apply_conv, apply_structure, conv_factor_values, factor_values,
                              propagate_dtypes, with_dtype)
from tcomp.emit import emit
from tcomp.ir import Call, Network, Program
from tcomp.layertime import median_time, time_ops
from tcomp.passmanager import Pass, PassContext, PassReport

from . import contraction_order

NAME = "select"
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
    """Dense time per site and the measured options (time, sensitivity) per site."""
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
        dense[name] = time_ops([op], batch, training=ctx.training)
        rows = []
        for option in site.options:
            def time_and_error(op=op, site=site, option=option, name=name):
                try:
                    ops, _ = site_replacement(op, site, option)
                    t = time_ops(ops, batch, training=ctx.training)
                except ValueError:
                    return None
                if t >= dense[name] * 0.97:
                    return None  # not faster here: never worth its error
                fn, names = _isolated_module(ops, batch, op.out.dtype)
                runner.replace = {gm.tcomp_nodes[name]: (fn, [gm.tcomp_nodes[n] for n in names])}
                return t, cal.error(runner, limit=limit)

            found = remembered(ctx, NAME, name, option.name, batch, ctx.training, compute=time_and_error,
                               persist=True)
            if found is not None:
                rows.append(Measured(option, found[0], found[1], cal.metric.additive(found[1])))
        runner.replace = {}
        measured[name] = rows
    return dense, measured


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
    chosen: dict[str, Measured] = {}
    final, final_err, rounds, healed_curve = program, 0.0, [], []
    for _ in range(MAX_ROUNDS):
        chosen = solve(dense, measured, budget, required)
        if not chosen:
            break
        candidate = apply_selection(program, chosen, ctx.example_inputs)
        planned = _planned(candidate, ctx)
        gm = emit(planned, _modules(planned))
        if heal_config is not None:
            from tcomp.heal import heal

            params = [v.data for n, v in planned.constants.items() if n.startswith("tcomp.")]
            healed_curve = heal(gm, params, cal, base_gm, list(chosen), heal_config)
        err = cal.error(gm, held_out=True)
        predicted = sum(m.additive for m in chosen.values())
        rounds.append({"budget": budget, "required_saving_s": required, "chosen": len(chosen),
                       "predicted": predicted, "measured": cal.metric.additive(err)})
        if tolerance is None or err <= tolerance:
            final, final_err = candidate, err
            break
        measured_add = cal.metric.additive(err)
        if budget is not None:
            budget *= min(0.7, 0.9 * cal.metric.budget(tolerance) / max(measured_add, 1e-30))
        else:
            break
    else:
        chosen = {}
    if final is program:
        chosen = {}
        report.notes.append("no selection within the tolerance: the program is unchanged")
    new = final.copy()
    new.sites = {}
    ctx.cache["selection"] = {n: m.option for n, m in chosen.items()}
    report.changed = bool(chosen)
    saved = sum(dense[n] - m.time for n, m in chosen.items())
    report.notes.append(
        f"{len(chosen)} of {len(sites)} site(s) approximated; held-out {cal.metric.name} error {final_err:.4g} "
        f"(tolerance {tolerance}); predicted time saved {saved * 1e3:.2f} ms of {base_time * 1e3:.2f} ms")
    report.details.update({
        "metric": cal.metric.name, "tolerance": tolerance, "target_speedup": target,
        "held_out_error": final_err, "base_time_s": base_time, "predicted_saving_s": saved, "rounds": rounds,
        "heal_loss": healed_curve[-1:] if healed_curve else None,
        "layers": [_row(n, dense[n], measured[n], chosen.get(n)) for n in measured]})
    return new, report


def _apply_fixed(program: Program, ctx: PassContext, fixed: dict[str, Option], report: PassReport):
    """Re-apply an earlier compilation's choices (a recompilation for another dtype, device or mode): the same
    options, the same trainable factors, no new measurement."""
    from tcomp.candidates import find_sites

    sites = program.sites or find_sites(program)
    missing = set(fixed) - set(sites)
    if missing:
        raise ValueError(f"the earlier selection names sites this program does not have: {sorted(missing)}")
    with_sites = program.copy()
    with_sites.sites = sites
    chosen = {n: Measured(o, 0.0, 0.0, 0.0) for n, o in fixed.items()}
    new = apply_selection(with_sites, chosen, ctx.example_inputs).copy()
    new.sites = {}
    ctx.cache["selection"] = dict(fixed)
    report.changed = bool(fixed)
    report.notes.append(f"re-applied the earlier selection to {len(fixed)} site(s) (no new measurement)")
    return new, report


def _row(name: str, dense_t: float, rows: list[Measured], chosen: Measured | None) -> dict:
    return {"site": name, "dense_ms": dense_t * 1e3, "chosen": chosen.option.name if chosen else "dense",
            "params": chosen.option.num_params if chosen else None,
            "local_error": chosen.option.local_error if chosen else 0.0,
            "sensitivity": chosen.sensitivity if chosen else 0.0, "time_ms": (chosen.time if chosen else dense_t) * 1e3,
            "options": [{"name": m.option.name, "time_ms": m.time * 1e3, "sensitivity": m.sensitivity,
                         "local_error": m.option.local_error} for m in rows]}


PASS = Pass(NAME, run, exact=False, doc=__doc__.splitlines()[0])
