"""The generated Triton source that runs for a contraction — what ``tcomp inspect --kernels`` and ``.code`` show."""
from __future__ import annotations

from collections.abc import Sequence

from .contraction import contraction_source
from .epilogue import Epilogue
from .monarch import BTT_EQUATION, MONARCH_EQUATION, btt_source


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


def kernel_sources(gm) -> str:
    """The generated Triton kernels an emitted GraphModule calls (``gm.tcomp_kernels``), as a commented appendix
    to its code."""
    kernels = getattr(gm, "tcomp_kernels", [])
    if not kernels:
        return ""
    parts = ["\n# ---- generated Triton kernels ----"]
    for eq, signature in kernels:
        parts.append(f"# contract_pair({eq!r}, epilogue={signature})")
        parts.append(kernel_source(eq, epilogue=signature))
    return "\n".join(parts) + "\n"
