"""The generated Triton source that runs for a contraction — what ``tcomp inspect --kernels`` and ``.code`` show."""
from __future__ import annotations

from collections.abc import Sequence

from tcomp.codegen.kernels.contraction import contraction_source
from tcomp.codegen.kernels.epilogue import Epilogue
from tcomp.codegen.kernels.monarch import BTT_EQUATION, MONARCH_EQUATION, btt_source


def kernel_source(equation: str, *, epilogue: Epilogue | Sequence[str] | None = None) -> str:
    """The source of the kernel run for ``equation`` with an epilogue of this signature.

    ``equation`` is a pairwise einsum (the kernel of :func:`contract_pair`) or :data:`MONARCH_EQUATION` /
    :data:`BTT_EQUATION` (the fused kernel of :func:`monarch_multiply` / :func:`btt_multiply`, one kernel for both).
    ``epilogue`` is an :class:`Epilogue` or its step kinds, e.g. ``("bias", "gelu")``; the source depends only on
    the kinds. Raises ValueError for an equation neither kind of kernel computes.
    """
    if isinstance(equation, str) and "".join(equation.split()) in (MONARCH_EQUATION, BTT_EQUATION):
        return btt_source(epilogue)
    return contraction_source(equation, epilogue)
