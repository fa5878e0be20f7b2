"""The cost of any op: a Network's is its contraction plan's (or, unplanned, that of opt_einsum's default path,
what ``torch.einsum`` would run); a Pointwise op's or a Call's comes from its shapes (:mod:`tcomp.cost.model`)."""
from __future__ import annotations

from tcomp.cost.model import Cost, call_cost, pointwise_cost
from tcomp.ir import Network, Op, Pointwise, Program
from tcomp.ir.symbolic import Size, as_size

from .plan import network_cost


def op_cost(op: Op) -> Cost:
    if isinstance(op, Network):
        return network_cost(op)
    if isinstance(op, Pointwise):
        return pointwise_cost(op)
    return call_cost(op)


def program_flops(program: Program) -> Size:
    """FLOPs per call of the whole program."""
    return as_size(sum((op_cost(op).flops for op in program.ops), 0))


def flops_note(op: Op) -> str:
    """A Network's FLOPs as the printed program shows them (:meth:`Program.format`'s ``annotate``)."""
    return f"   {op_cost(op).flops_str()} flop" if isinstance(op, Network) else ""
