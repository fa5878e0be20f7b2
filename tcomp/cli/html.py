"""Renderings of `tcomp inspect` beyond plain text: memory timelines as a text sparkline and as an SVG plot, and a
self-contained HTML page (`--format html`) with the IR after each pass, the emitted code and, under a memory
budget, the plot of the training step's memory before and after rematerialization."""
from __future__ import annotations

import html

BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[int], top: int, width: int = 72) -> str:
    """`values` resampled to `width` columns (the maximum of each column's span), scaled so that `top` is a full
    block."""
    if not values:
        return ""
    columns = min(width, len(values))
    out = []
    for c in range(columns):
        span = values[c * len(values) // columns:max((c + 1) * len(values) // columns, c * len(values) // columns + 1)]
        level = max(span) / top if top > 0 else 0
        out.append(BLOCKS[min(len(BLOCKS) - 1, max(0, round(level * (len(BLOCKS) - 1))))])
    return "".join(out)


def memory_text(memory: dict) -> str:
    """The memory section of `tcomp inspect --memory-budget` (text)."""
    before, after = memory["timeline_before"], memory["timeline_after"]
    top = max(max(before), max(after), memory["budget"])
    mib = lambda b: f"{b / 2**20:8.1f} MiB"  # noqa: E731
    return "\n".join([
        f"eager peak (measured)   {mib(memory['eager_peak'])}",
        f"budget                  {mib(memory['budget'])}",
        f"predicted peak          {mib(memory['predicted_peak'])}",
        f"rematerialized (meas.)  {mib(memory['measured_peak'])}",
        f"recomputations {memory['recomputed']}, compute +{100 * memory['tdi']:.2f}% (TDI), "
        f"{memory['groups']} groups from {memory['operations']} operations, solver {memory['solver_status']}",
        "",
        f"memory at each step (predicted; full block = {top / 2**20:.1f} MiB):",
        f"  before |{sparkline(before, top)}| {len(before)} steps",
        f"  after  |{sparkline(after, top)}| {len(after)} steps",
    ])


def memory_svg(memory: dict, width: int = 720, height: int = 260) -> str:
    """Both timelines as polylines over a common 0..1 step axis, with the budget as a dashed line."""
    before, after, budget = memory["timeline_before"], memory["timeline_after"], memory["budget"]
    top = max(max(before), max(after), budget) * 1.05
    pad = 40

    def points(values: list[int]) -> str:
        n = max(len(values) - 1, 1)
        return " ".join(f"{pad + (width - 2 * pad) * k / n:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"
                        for k, v in enumerate(values))

    y_budget = height - pad - (height - 2 * pad) * budget / top
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="12">'
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>'
        f'<polyline points="{points(before)}" fill="none" stroke="#c44" stroke-width="1.5"/>'
        f'<polyline points="{points(after)}" fill="none" stroke="#36c" stroke-width="1.5"/>'
        f'<line x1="{pad}" x2="{width - pad}" y1="{y_budget:.1f}" y2="{y_budget:.1f}" stroke="#000" '
        f'stroke-dasharray="4 3"/>'
        f'<text x="{pad}" y="{pad - 8}">memory during the training step (MiB; x: fraction of the steps)</text>'
        f'<text x="{width - pad - 4}" y="{y_budget - 4:.1f}" text-anchor="end">budget {budget / 2**20:.1f}</text>'
        f'<text x="{pad + 4}" y="{height - pad + 16}" fill="#c44">before ({len(before)} steps, peak '
        f'{max(before) / 2**20:.1f})</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" fill="#36c" text-anchor="end">after ({len(after)} steps, '
        f'peak {max(after) / 2**20:.1f})</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{top / 2**20:.0f}</text>'
        f'<text x="{pad - 4}" y="{height - pad}" text-anchor="end">0</text>'
        f'</svg>'
    )


def page(title: str, summary: str, snapshots: list[tuple[str, str]], code: str, memory: dict | None) -> str:
    """The whole `tcomp inspect --format html` page."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<pre>{html.escape(summary)}</pre>"]
    if memory:
        parts += ["<h2>Memory</h2>", memory_svg(memory), f"<pre>{html.escape(memory_text(memory))}</pre>"]
    for name, text in snapshots:
        heading = "lowered" if name == "lowered" else f"after {name}"
        parts.append(f"<details><summary>{html.escape(heading)}</summary><pre>{html.escape(text)}</pre></details>")
    parts += ["<h2>Emitted code</h2>", f"<pre>{html.escape(code)}</pre>", "</body></html>"]
    return "\n".join(parts)
