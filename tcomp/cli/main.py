"""The ``tcomp`` command line: ``zoo``, ``inspect`` and ``bench``.

    tcomp zoo                                   # the built-in models
    tcomp inspect zoo:mlp                       # the IR before/after each pass, costs, trees, emitted code
    tcomp inspect model.py:make --input 8x3x224x224 --format json
    tcomp inspect zoo:resnet18 --batch 32 --memory-budget 0.7 --format html > resnet18.html
    tcomp bench                                 # the default zoo subset: eager vs torch.compile vs tcomp
    tcomp bench zoo:resnet18 zoo:peps --batch 16

Bad input exits with status 2 and one line on stderr that starts with ``tcomp: ``, never a traceback: bad options
(checked before any model is built) raise SystemExit as argparse does; a target that cannot be resolved, or whose
code raises or rejects its inputs, makes the command return 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

import torch

import tcomp
from tcomp.passes import pipeline
from tcomp.options import check_budget
from tcomp.passmanager import select_passes
from tcomp.remat import BudgetInfeasibleError
from tcomp.zoo import entries

from .bench import bench_target, format_table
from .html import memory_text, page
from .targets import TargetError, describe_inputs, resolve


def _add_target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", metavar="SHAPE[:DTYPE]",
                   help="an example input, e.g. 8x3x224x224 or 32x128:int64 (repeat for several inputs)")
    p.add_argument("--batch", type=int, help="batch size (first dimension of the inputs)")
    p.add_argument("--passes", help="comma-separated passes to run (default: all exact passes)")
    p.add_argument("--disable", help="comma-separated passes to skip")


def _fail(message: str) -> NoReturn:
    """Exit with status 2 (bad input, as argparse does) after one line on stderr."""
    print(f"tcomp: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_counts(args) -> None:
    """``--batch`` and ``--rounds``, where the command has them, are positive."""
    for option in ("batch", "rounds"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            _fail(f"--{option} must be a positive integer, got {value}")


def _check_writable(path: str | None) -> None:
    """A ``--json`` path that can be written, checked before a benchmark that takes minutes."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder) or not os.access(folder, os.W_OK) \
            or (os.path.exists(path) and not os.access(path, os.W_OK)):
        _fail(f"--json {path}: cannot write there (a missing or read-only folder, or a folder's name)")


def _pass_selection(args) -> object:
    if args.passes and args.disable:
        _fail("use --passes or --disable, not both")
    if args.passes:
        selection = [p.strip() for p in args.passes.split(",") if p.strip()]
    elif args.disable:
        selection = {p.strip(): False for p in args.disable.split(",") if p.strip()}
    else:
        return None
    try:
        select_passes(pipeline(), selection)
    except ValueError as e:  # a misspelt pass: say so, not a traceback
        _fail(str(e))
    return selection


def cmd_zoo(args) -> int:
    rows = [("name", "tags", "batch", "inputs", "params", "default bench", "description")]
    for e in entries():
        inputs = e.example_inputs(batch=1)
        shapes = " ".join("×".join(str(s) for s in ("B", *t.shape[1:])) for t in inputs)
        params = sum(p.numel() for p in e.build().parameters()) if args.params else None
        rows.append((e.name, ",".join(sorted(e.tags)), str(e.default_batch), shapes,
                     f"{params / 1e6:.2f}M" if params is not None else "-", "yes" if e.default_bench else "",
                     e.description))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def cmd_inspect(args) -> int:
    try:
        target = resolve(args.target, args.input, args.batch)
    except TargetError as e:
        print(f"tcomp: {e}", file=sys.stderr)
        return 2
    options = {}
    if args.memory_budget is not None:
        try:
            options["memory_budget"] = parse_budget(args.memory_budget)
        except ValueError as e:
            print(f"tcomp: {e}", file=sys.stderr)
            return 2
        target.model.train()
    try:
        compiled = tcomp.compile(target.model, target.inputs, passes=_pass_selection(args), strict=True,
                                 kernels="triton" if args.kernels else "auto", backend="eager", **options)
    except BudgetInfeasibleError as e:
        print(f"tcomp: {e}", file=sys.stderr)
        return 2
    report = compiled.report
    code = compiled.code
    memory = report.extra.get("memory")
    if args.format == "json":
        out = {"target": args.target,
               "inputs": [list(t.shape) for t in target.inputs if isinstance(t, torch.Tensor)],
               "snapshots": [{"after": name, "program": text} for name, text in report.snapshots],
               "report": report.to_dict(), "code": code}
        print(json.dumps(out, indent=2))
        return 0
    summary = report.explain().split("\n\n")[0]
    if args.format == "html":
        print(page(f"tcomp inspect {args.target}", summary, report.snapshots, code, memory))
        return 0
    print(f"== tcomp inspect {args.target} (inputs: {describe_inputs(target.inputs)}) ==")
    for name, text in report.snapshots:
        title = "lowered" if name == "lowered" else f"after {name}"
        print(f"\n-- {title} --")
        for p in report.passes:
            if p.name == name:
                for note in p.notes:
                    print(f"# {note}")
        print(text)
    print("\n-- emitted code --")
    print(code.strip("\n"))
    if memory:
        print("\n-- memory (training step) --")
        print(memory_text(memory))
    print("\n-- report --")
    print(summary)
    return 0


def parse_budget(text: str) -> float | int:
    """``0.6`` (a fraction of eager's peak), ``500000000`` or ``512MiB`` / ``2GB`` (bytes); ValueError otherwise."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    t = text.strip().lower()
    unit = next((u for u in units if t.endswith(u)), None)
    try:
        value = float(t[:-len(unit)] if unit else t)
        if unit:
            budget: float | int = int(value * units[unit])
        elif value <= 1:
            budget = value
        elif value.is_integer():
            budget = int(value)
        else:
            raise ValueError
        check_budget(budget)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"--memory-budget {text!r}: give a fraction in (0, 1] such as 0.6, or a positive number "
                         f"of bytes such as 512MiB") from None
    return budget


def cmd_bench(args) -> int:
    targets = args.targets or [f"zoo:{e.name}" for e in entries() if e.default_bench]
    _check_writable(args.json)
    opts = {"passes": _pass_selection(args)} if (args.passes or args.disable) else {}
    try:  # every target, before any is timed
        resolved = [resolve(t, args.input, args.batch) for t in targets]
    except TargetError as e:
        print(f"tcomp: {e}", file=sys.stderr)
        return 2
    results = []
    for k, (t, target) in enumerate(zip(targets, resolved), 1):
        print(f"[{k}/{len(targets)}] {t}", file=sys.stderr, flush=True)
        results.append(bench_target(target, torch_compile=not args.no_torch_compile,
                                    inductor=not args.no_inductor, tcomp_options=opts, rounds=args.rounds))
    print(format_table(results))
    print(f"\n(torch {torch.__version__}, {torch.get_num_threads()} threads; median latency per call, "
          f"ratio = eager time / variant time)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_dict() for r in results], f, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcomp", description="tcomp: a tensor-network compiler for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("zoo", help="list the built-in models")
    p.add_argument("--params", action="store_true", help="also count parameters (builds every model)")
    p.set_defaults(func=cmd_zoo)
    p = sub.add_parser("inspect", help="show the IR before and after each pass, and the emitted code")
    p.add_argument("target", help="zoo:NAME, path/to/file.py:factory or package.module:factory")
    _add_target_options(p)
    p.add_argument("--format", choices=("text", "json", "html"), default="text",
                   help="html: a self-contained page (IR per pass, code, the memory plot under --memory-budget)")
    p.add_argument("--memory-budget", metavar="BUDGET",
                   help="rematerialize the training step: a fraction of eager's peak (0.6) or bytes (512MiB)")
    p.add_argument("--kernels", action="store_true",
                   help="compile with kernels='triton' and show the generated kernel sources (on CPU this needs "
                        "TRITON_INTERPRET=1)")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("bench", help="eager vs torch.compile vs tcomp: latency, error, compile time")
    p.add_argument("targets", nargs="*", help="targets (default: the zoo's default subset)")
    _add_target_options(p)
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (it compiles slowly)")
    p.add_argument("--no-inductor", action="store_true", help="skip tcomp with the inductor backend")
    p.add_argument("--rounds", type=int, default=7, help="timing rounds (each variant runs 3 calls a round)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.set_defaults(func=cmd_bench)
    args = parser.parse_args(argv)
    _check_counts(args)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # the reader went away (`tcomp inspect ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (flushing at exit would fail again)
        return 141

