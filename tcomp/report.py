"""The compile report: what capture found, what each pass changed, costs before and after, and timings.

``report.to_dict()`` is JSON-serialisable; ``report.explain()`` is the human-readable summary that
``CompiledModule.explain()`` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tcomp.passmanager import PassReport, jsonable
from tcomp.ir.symbolic import Point, Size, complete, evaluate, point


@dataclass
class CompileReport:
    model: str
    status: str = "compiled"            # "compiled", "compiled in pieces" or "eager fallback"
    capture: str = ""                   # "fx", "export" or "dynamo" (in pieces)
    example: Point = field(default_factory=dict)  # the example's value of each symbol the program's sizes are in
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # per symbol, the sizes served (none: fixed)
    notes: list[str] = field(default_factory=list)
    passes: list[PassReport] = field(default_factory=list)
    snapshots: list[tuple[str, str]] = field(default_factory=list)
    flops_before: Size = 0
    flops_after: Size = 0
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "eager"
    fallback_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pieces: list = field(default_factory=list)  # in pieces: the compiled module of each graph (Dynamo adds to it)

    @property
    def compile_time_s(self) -> float:
        return sum(self.timings.values())

    @property
    def batch_symbolic(self) -> bool:
        return "B" in self.ranges

    @property
    def symbolic(self) -> dict[str, int]:
        """The symbolic sizes of the compiled program and their example values: ``{"B": 8, "S": 128}``."""
        return {sym.name: v for sym, v in self.example.items() if sym.name in self.ranges}

    def flops_at(self, which: str, at: Point | int | None = None) -> int:
        """FLOPs per call at ``at`` (a batch size or a value per symbol), by default the example's."""
        x = self.flops_before if which == "before" else self.flops_after
        return evaluate(x, complete({**self.example, **point(at)}))

    def to_dict(self) -> dict:
        return {
            "model": self.model, "status": self.status, "capture": self.capture,
            "symbolic": self.symbolic, "symbolic_ranges": {k: list(v) for k, v in self.ranges.items()},
            "notes": list(self.notes),
            "flops_before": str(self.flops_before), "flops_after": str(self.flops_after),
            "flops_before_at_example": self.flops_at("before"), "flops_after_at_example": self.flops_at("after"),
            "compile_time_s": round(self.compile_time_s, 4),
            "timings": {k: round(v, 4) for k, v in self.timings.items()}, "backend": self.backend,
            "fallback_reason": self.fallback_reason, "passes": [p.to_dict() for p in self.passes],
            "extra": jsonable(self.extra), "pieces": [m.report.to_dict() for m in self.pieces],
        }

    def explain(self) -> str:
        lines = [f"tcomp: {self.model} — {self.status}"]
        if self.fallback_reason:
            lines.append(f"  reason: {self.fallback_reason}")
            return "\n".join(lines)
        if self.pieces:
            statuses = [m.report.status for m in self.pieces]
            counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
            lines.append(f"  {len(self.pieces)} graph(s) captured by TorchDynamo ({counts}); compile time "
                         f"{self.compile_time_s:.2f} s")
            lines += [f"  note: {n}" for n in self.notes]
            for k, m in enumerate(self.pieces):
                lines.append(f"\n  piece {k + 1}:")
                lines += ["    " + line for line in m.report.explain().splitlines()]
            return "\n".join(lines)
        lines.append(f"  captured with {self.capture}, {self._shapes()}; backend {self.backend}; "
                     f"compile time {self.compile_time_s:.2f} s")
        for n in self.notes:
            lines.append(f"  note: {n}")
        memory = self.extra.get("memory")
        if memory:
            lines.append(f"  memory: training step peak {_mib(memory['eager_peak'])} eager -> "
                         f"{_mib(memory['measured_peak'])} measured (budget {_mib(memory['budget'])}); "
                         f"{memory['recomputed']} recomputation(s), +{100 * memory['tdi']:.1f}% compute (TDI), "
                         f"solver {memory['solver_status']} in {memory['solver_time']:.2f} s")
        lines.append(f"  FLOPs per call at the example: {self.flops_at('before'):,} -> {self.flops_at('after'):,}")
        for p in self.passes:
            mark = "changed" if p.changed else "no change"
            lines.append(f"  [{p.name}] {mark} ({p.time_s:.2f} s)")
            for note in p.notes:
                lines.append(f"      {note}")
        if self.snapshots:
            lines.append("")
            lines.append(self.snapshots[-1][1])
        return "\n".join(lines)

    def _shapes(self) -> str:
        names = {"B": "batch B", "S": "sequence length S"}
        if not self.ranges:
            return "specialised to the example shapes"
        return "symbolic " + " and ".join(f"{names[s]} (example {v}, serves {'..'.join(map(str, self.ranges[s]))})"
                                          for s, v in self.symbolic.items())


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
