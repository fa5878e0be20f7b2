"""tcomp.passes: one module per pass, run by :mod:`tcomp.passmanager` in the order of :data:`PIPELINE`.

Each pass module defines ``PASS`` (a :class:`tcomp.passmanager.Pass`): its name, its ``run(program, ctx)``
function and whether it is exact (exact passes run by default; approximate ones only when the user asks for them).
See docs/passes/ for each pass's algorithm, options, limits and measured figures.
"""
from __future__ import annotations

from tcomp.passmanager import Pass

from . import (algebraic, batch_siblings, contraction_order, conv_calls, cse, epilogue, fold_bn, fuse_networks,
               layout, precision, select, select_through, structured, triton_codegen, tucker)


def pipeline() -> list[Pass]:
    """All passes, in the order they run: simplifications, fusion, the approximate passes (which need the model's
    own convolutions and weights, before batch-norm folding and layout rewrite them), the remaining exact
    rewrites, then planning and code generation."""
    return [cse.PASS, algebraic.PASS, select_through.PASS, fuse_networks.PASS,
            structured.PASS, precision.PASS, tucker.PASS, select.PASS,
            fold_bn.PASS, conv_calls.PASS, epilogue.PASS, batch_siblings.PASS, layout.PASS, contraction_order.PASS,
            triton_codegen.PASS]
