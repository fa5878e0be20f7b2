"""The compile report: what capture found, what each pass changed, costs before and after, and timings.

``report.to_dict()`` is JSON-serialisable; ``report.explain()`` is the human-readable summary that
``CompiledModule.explain()`` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tcomp.passmanager import PassReport, jsonable
from tcomp.ir.symbolic import Size, evaluate


@dataclass
class CompileReport:
    model: str
    status: str = "compiled"            # "compiled" or "eager fallback"
    capture: str = ""                   # "fx" or "export"
    batch_symbolic: bool = False
    example_batch: int | None = None
    notes: list[str] = field(default_factory=list)
    passes: list[PassReport] = field(default_factory=list)
    snapshots: list[tuple[str, str]] = field(default_factory=list)
    flops_before: Size = 0
    flops_after: Size = 0
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "eager"
    fallback_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def compile_time_s(self) -> float:
        return sum(self.timings.values())

    def flops_at(self, which: str, batch: int | None = None) -> int | None:
        x = self.flops_before if which == "before" else self.flops_after
        b = batch or self.example_batch or 1
        return x if isinstance(x, int) else evaluate(x, b)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "status": self.status, "capture": self.capture,
            "batch_symbolic": self.batch_symbolic, "example_batch": self.example_batch, "notes": list(self.notes),
            "flops_before": str(self.flops_before), "flops_after": str(self.flops_after),
            "flops_before_at_example": self.flops_at("before"), "flops_after_at_example": self.flops_at("after"),
            "compile_time_s": round(self.compile_time_s, 4),
            "timings": {k: round(v, 4) for k, v in self.timings.items()}, "backend": self.backend,
            "fallback_reason": self.fallback_reason, "passes": [p.to_dict() for p in self.passes],
            "extra": jsonable(self.extra),
        }

    def explain(self) -> str:
        lines = [f"tcomp: {self.model} — {self.status}"]
        if self.fallback_reason:
            lines.append(f"  reason: {self.fallback_reason}")
            return "\n".join(lines)
        batch = "symbolic batch B" if self.batch_symbolic else "specialised to the example shapes"
        lines.append(f"  captured with {self.capture}, {batch}; backend {self.backend}; "
                     f"compile time {self.compile_time_s:.2f} s")
        for n in self.notes:
            lines.append(f"  note: {n}")
        memory = self.extra.get("memory")
        if memory:
            lines.append(f"  memory: training step peak {_mib(memory['eager_peak'])} eager -> "
                         f"{_mib(memory['measured_peak'])} measured (budget {_mib(memory['budget'])}); "
                         f"{memory['recomputed']} recomputation(s), +{100 * memory['tdi']:.1f}% compute (TDI), "
                         f"solver {memory['solver_status']} in {memory['solver_time']:.2f} s")
        fb, fa = self.flops_at("before"), self.flops_at("after")
        lines.append(f"  FLOPs per call at the example batch: {fb:,} -> {fa:,}" if fb is not None else "")
        for p in self.passes:
            mark = "changed" if p.changed else "no change"
            lines.append(f"  [{p.name}] {mark} ({p.time_s:.2f} s)")
            for note in p.notes:
                lines.append(f"      {note}")
        if self.snapshots:
            lines.append("")
            lines.append(self.snapshots[-1][1])
        return "\n".join(line for line in lines if line is not None)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
