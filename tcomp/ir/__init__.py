"""The tensor-network IR: a :class:`Program` of :class:`Network`, :class:`Pointwise` and :class:`Call` ops in SSA
form, its printed form, and the pieces it is built from.

- :mod:`.symbolic` — sizes: an ``int`` or a sympy expression in the batch symbol ``B``;
- :mod:`.indices` — index names and the common refinement of two reshapes of one dimension;
- :mod:`.ops` — :class:`Value` and the three op kinds;
- :mod:`.printer` — one op a line, what ``tcomp inspect`` shows;
- :mod:`.program` — :class:`Program`, dead-code elimination, sub-programs;
- :mod:`.analysis`, :mod:`.names`, :mod:`.sites` — what ops write in place, fresh names, approximation sites.

The IR depends on nothing else in tcomp; every other stage depends on it.
"""
from .ops import ACC, Call, Dims, EpilogueOp, Network, Op, Pointwise, Value, is_pure, substitute_inputs
from .printer import format_op
from .program import Program, subprogram

__all__ = ["ACC", "Call", "Dims", "EpilogueOp", "Network", "Op", "Pointwise", "Program", "Value", "format_op",
           "is_pure", "subprogram", "substitute_inputs"]
