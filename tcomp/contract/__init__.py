"""Contraction planning as a library: a Network's contraction tree lowered to GEMMs with chosen layouts
(:mod:`.plan`), the search for the best tree (:mod:`.search`, opt_einsum's searches and tcomp's own large-network
path search :mod:`.pathsearch`, usable from opt_einsum as ``optimize="tcomp"``), merging two Networks
(:mod:`.merge`), and the cost of any op (:mod:`.costs`)."""
from .costs import op_cost, program_flops
from .plan import ContractionPlan, plan_network
from .search import best_plan, plan_program

__all__ = ["ContractionPlan", "best_plan", "op_cost", "plan_network", "plan_program", "program_flops"]
