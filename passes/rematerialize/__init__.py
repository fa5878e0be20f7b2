"""rematerialize: a model's training step under a memory budget.

The one pass that works on the emitted module's training step rather than on the Program: AOTAutograd's joint
forward+backward graph is made lean (in-place backward kernels), coarsened to layer-level groups, scheduled by
:func:`tcomp.remat.schedule` (Moccasin on CP-SAT) and partitioned into forward and backward graphs that keep or
recompute what the schedule says. :func:`tcomp.remat.measure_peak_memory` measures a step's peak. See
docs/passes/rematerialize.md.
"""
from .training import RematerializedModule, RematReport, rematerialize_module

__all__ = ["RematReport", "RematerializedModule", "rematerialize_module"]
