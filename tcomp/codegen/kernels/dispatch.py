"""What the emitted code calls for a Network that the triton_codegen pass assigned to Triton kernels.

:func:`contract` runs one pairwise contraction step with :func:`tcomp.codegen.kernels.contract_pair`, its epilogue given
as a spec of plain values (so that it prints in the emitted code) with the epilogue's tensors as arguments. The
kernels have no backward: when gradients are needed the same step runs as ``torch.einsum`` followed by the same
epilogue in torch, so the compiled module still trains.
"""
from __future__ import annotations

import torch

from .contraction import contract_pair
from .epilogue import Epilogue


def epilogue_from_spec(spec: tuple, tensors: tuple) -> Epilogue | None:
    """``spec``: steps ``("bias", k)``, ``("residual", k)`` (k indexes ``tensors``), ``("scale", f)``,
    ``("act", name)``."""
    if not spec:
        return None
    epi = Epilogue()
    for kind, arg in spec:
        if kind == "bias":
            epi = epi.bias(tensors[arg])
        elif kind == "residual":
            epi = epi.residual(tensors[arg])
        elif kind == "scale":
            epi = epi.scale(arg)
        else:
            epi = epi.activation(arg)
    return epi


def contract(equation: str, a: torch.Tensor, b: torch.Tensor, spec: tuple = (), *tensors: torch.Tensor,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    epi = epilogue_from_spec(spec, tensors)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, *tensors))
    if needs_grad:
        out = torch.einsum(equation, a, b)
        out = epi.apply(out) if epi is not None else out
        return out.to(out_dtype) if out_dtype is not None else out
    return contract_pair(equation, a, b, epilogue=epi, out_dtype=out_dtype)
