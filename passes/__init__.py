"""tcomp.passes: one module per pass, run by :mod:`tcomp.passmanager` in the order of :data:`PIPELINE`.

Each pass module defines ``PASS`` (a :class:`tcomp.passmanager.Pass`): its name, its ``run(program, ctx)``
function and whether it is exact (exact passes run by default; approximate ones only when the user asks for them).
See docs/passes/ for each pass's algorithm, options, limits and measured figures.
"""
from __future__ import annotations

from tcomp.passmanager import Pass

from . import contraction_order, fuse_networks, precision, select, structured, triton_codegen, tucker


def pipeline() -> list[Pass]:
    """All passes, in the order they run."""
    return [fuse_networks.PASS, structured.PASS, precision.PASS, tucker.PASS, select.PASS, contraction_order.PASS,
            triton_codegen.PASS]
