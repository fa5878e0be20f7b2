"""The pass manager: the passes run in their fixed order, each ``Program -> (Program, PassReport)``, with what each
requires and ensures checked.

A :class:`Pass` declares the properties of the program it *requires* before it runs and those it *ensures* after
(as torch.fx's ``PassBase.requires``/``ensures`` do), named from :data:`PROPERTIES`, each a predicate on the
Program:

- ``sites``: the approximation sites have been looked for (``Program.sites`` is not None) — ensured by the
  structured, precision and tucker passes, required by select;
- ``planned``: every Network carries a contraction plan — ensured by contraction_order (triton_codegen turns the
  GEMM steps of planned Networks into kernels, and leaves an unplanned Network, which runs as one einsum, alone).

``passes=`` selects passes by name: a list of names to run (in pipeline order), one name, or a dict
``{"name": False}`` to disable some. :func:`select_passes` refuses a selection in which a pass requires what no
pass before it ensures, and names the passes that would; :func:`run_passes` checks the properties on the program
itself, a required one before its pass runs and an ensured one after. With ``verify=True`` every pass's result is
emitted and run on the example inputs and compared with the model's eager output; the first pass that breaks
equality is named in a :class:`VerificationError`.

The pass modules themselves are in :mod:`tcomp.passes`; see docs/architecture.md for how to write one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tcomp.approx.calibration import Calibration
from tcomp.approx.measurements import Measurements
from tcomp.approx.selection import Selection
from tcomp.contract.costs import flops_note, program_flops
from tcomp.cost import MachineModel, machine_model
from tcomp.ir import Network, Program
from tcomp.ir.symbolic import Size
from tcomp.options import Options

PROPERTIES: dict[str, Callable[[Program], bool]] = {
    "sites": lambda p: p.sites is not None,
    "planned": lambda p: all(op.plan is not None for op in p.ops if isinstance(op, Network)),
}


@dataclass
class PassReport:
    """What a pass did: whether it changed the program, FLOPs per call before and after, its time, notes and
    details for the report. ``selection``: the select pass's choices (re-applied when the model recompiles)."""

    name: str
    changed: bool = False
    flops_before: Size = 0
    flops_after: Size = 0
    time_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    selection: Selection | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "changed": self.changed, "flops_before": _num(self.flops_before),
                "flops_after": _num(self.flops_after), "time_s": round(self.time_s, 4), "notes": list(self.notes),
                "details": jsonable(self.details)}


def _num(x: Any) -> Any:
    return x if isinstance(x, (int, float)) else str(x)


def jsonable(x: Any) -> Any:
    """``x`` with every value JSON can not hold written as its ``str``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (int, float, str, bool)) or x is None:
        return x
    return str(x)


@dataclass
class PassContext:
    """Everything a pass may read besides the Program, created once per compilation by the pipeline: the example
    inputs and mode, the user's options, this machine's cost constants, and for approximate compilation the
    calibration data (with the model's reference outputs), the measurements remembered for them, and the choices of
    an earlier compilation to re-apply instead of measuring again."""

    example_inputs: tuple
    training: bool
    options: Options = field(default_factory=Options)
    machine: MachineModel = field(default_factory=machine_model)
    calibration: Calibration | None = None
    measurements: Measurements = field(default_factory=Measurements)
    earlier_selection: Selection | None = None


@dataclass(frozen=True)
class Pass:
    """A pass: its name, ``run(program, ctx) -> (program, report)``, whether it keeps results exact (exact passes
    run by default, approximate ones when the user asks), the properties it requires and ensures."""

    name: str
    run: Callable[[Program, PassContext], tuple[Program, PassReport]]
    exact: bool = True
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self):
        unknown = set(self.requires + self.ensures) - set(PROPERTIES)
        if unknown:
            raise ValueError(f"pass {self.name!r}: unknown properties {sorted(unknown)}; known: {sorted(PROPERTIES)}")


class VerificationError(RuntimeError):
    """A pass changed the program's results (``verify=True``)."""


@dataclass
class PipelineResult:
    program: Program
    reports: list[PassReport]
    snapshots: list[tuple[str, str]]  # (after which pass, printed program)

    @property
    def selection(self) -> Selection | None:
        return next((r.selection for r in self.reports if r.selection is not None), None)


def select_passes(all_passes: list[Pass], selection: Any, approximate: bool = False) -> list[Pass]:
    """The passes to run, in pipeline order: ``selection`` None means every exact pass (every pass when
    approximating), a name or a list of names those passes, a dict ``{name: bool}`` the defaults with some turned
    off (or on). Raises ValueError for an unknown name or an order in which a requirement is not met."""
    names = [p.name for p in all_passes]
    if isinstance(selection, str):
        selection = [selection]
    wanted = set(selection) if selection is not None else set()
    unknown = wanted - set(names)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; passes are {names}")
    if selection is None:
        chosen = [p for p in all_passes if p.exact or approximate]
    elif isinstance(selection, dict):
        chosen = [p for p in all_passes if selection.get(p.name, p.exact or approximate)]
    else:
        chosen = [p for p in all_passes if p.name in wanted]
    _check_order(chosen, all_passes)
    return chosen


def _check_order(chosen: list[Pass], all_passes: list[Pass]) -> None:
    ensured: set[str] = set()
    for p in chosen:
        for prop in p.requires:
            if prop not in ensured:
                providers = [q.name for q in all_passes if prop in q.ensures]
                raise ValueError(f"pass {p.name!r} requires {prop!r}, which no pass selected before it ensures; "
                                 f"select one of {providers} too, or leave {p.name!r} out")
        ensured |= set(p.ensures)


def run_passes(program: Program, passes: list[Pass], ctx: PassContext,
               check: Callable[[Program], str | None] | None = None,
               progress: Callable[[str], None] | None = None) -> PipelineResult:
    """Run ``passes`` in order. ``check(program)`` returns None when the program is still correct, else a
    description of the mismatch (used by ``verify=True``)."""
    reports: list[PassReport] = []
    snapshots = [("lowered", program.format(flops_note))]
    for p in passes:
        if progress:
            progress(p.name)
        _check_properties(p, p.requires, program, "requires")
        before = program_flops(program)
        t0 = time.perf_counter()
        new_program, report = p.run(program, ctx)
        report.time_s = time.perf_counter() - t0
        new_program.check()
        _check_properties(p, p.ensures, new_program, "ensures")
        report.flops_before = before
        report.flops_after = program_flops(new_program)
        reports.append(report)
        snapshots.append((p.name, new_program.format(flops_note)))
        if check is not None:
            problem = check(new_program)
            if problem is not None:
                raise VerificationError(f"pass {p.name!r} broke equality with the original model: {problem}")
        program = new_program
    return PipelineResult(program, reports, snapshots)


def _check_properties(p: Pass, props: tuple[str, ...], program: Program, verb: str) -> None:
    failed = [prop for prop in props if not PROPERTIES[prop](program)]
    if failed:
        raise RuntimeError(f"pass {p.name!r} {verb} {failed}, which the program "
                           f"{'does not have' if verb == 'requires' else 'lacks after it ran'}")
