"""The pass manager: runs the passes in their fixed order, each ``Program -> (Program, PassReport)``.

Passes are registered in :mod:`tcomp.passes` (one module each). ``passes=`` selects them by name: a list of names
to run (in pipeline order), or a dict ``{"name": False}`` to disable some. With ``verify=True`` every pass's result
is emitted and run on the example inputs and compared with the model's eager output; the first pass that breaks
equality is named in a :class:`VerificationError`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tcomp.ir.program import Program
from tcomp.ir.symbolic import Size


@dataclass
class PassReport:
    name: str
    changed: bool = False
    flops_before: Size = 0
    flops_after: Size = 0
    time_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "changed": self.changed, "flops_before": _num(self.flops_before),
                "flops_after": _num(self.flops_after), "time_s": round(self.time_s, 4), "notes": list(self.notes),
                "details": _jsonable(self.details)}


def _num(x: Any) -> Any:
    return x if isinstance(x, (int, float)) else str(x)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


@dataclass
class PassContext:
    """What passes may read: the model's mode, the example inputs, the user's options."""

    example_inputs: tuple
    training: bool
    options: dict = field(default_factory=dict)
    model: torch.nn.Module | None = None
    cache: dict = field(default_factory=dict)   # results passes share within one compilation (e.g. statistics)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Program, PassContext], tuple[Program, PassReport]]
    exact: bool = True
    doc: str = ""


class VerificationError(RuntimeError):
    """A pass changed the program's results (``verify=True``)."""


@dataclass
class PipelineResult:
    program: Program
    reports: list[PassReport]
    snapshots: list[tuple[str, str]]  # (after which pass, printed program)


def select_passes(all_passes: list[Pass], selection: Any, approximate: bool = False) -> list[Pass]:
    """The passes to run: ``selection`` None means every exact pass (and, when approximating, every pass)."""
    names = [p.name for p in all_passes]
    if selection is None:
        return [p for p in all_passes if p.exact or approximate]
    if isinstance(selection, dict):
        unknown = set(selection) - set(names)
        if unknown:
            raise ValueError(f"unknown pass(es) {sorted(unknown)}; passes are {names}")
        return [p for p in all_passes if selection.get(p.name, p.exact or approximate)]
    selection = list(selection)
    unknown = set(selection) - set(names)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; passes are {names}")
    return [p for p in all_passes if p.name in selection]


def run_pipeline(program: Program, passes: list[Pass], ctx: PassContext,
                 check: Callable[[Program], str | None] | None = None,
                 progress: Callable[[str], None] | None = None) -> PipelineResult:
    """Run ``passes`` in order. ``check(program)`` returns None when the program is still correct, else a
    description of the mismatch (used by ``verify=True``)."""
    from tcomp.cost.model import op_cost

    reports: list[PassReport] = []
    snapshots = [("lowered", program.format())]
    for p in passes:
        if progress:
            progress(p.name)
        before = _total_flops(program, op_cost)
        t0 = time.perf_counter()
        new_program, report = p.run(program, ctx)
        report.time_s = time.perf_counter() - t0
        new_program.check()
        report.flops_before = before
        report.flops_after = _total_flops(new_program, op_cost)
        reports.append(report)
        snapshots.append((p.name, new_program.format()))
        if check is not None:
            problem = check(new_program)
            if problem is not None:
                raise VerificationError(f"pass {p.name!r} broke equality with the original model: {problem}")
        program = new_program
    return PipelineResult(program, reports, snapshots)


def _total_flops(program: Program, op_cost) -> Size:
    total: Size = 0
    for op in program.ops:
        total = total + op_cost(op).flops
    from tcomp.ir.symbolic import as_size

    return as_size(total)
