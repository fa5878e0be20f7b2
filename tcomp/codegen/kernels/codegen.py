"""Source-text helpers shared by the kernel generators: strided tile offsets and flat-index decomposition.

A kernel names every tensor dimension it walks (``m0``, ``k1``, ``row`` ...). A tile's element offset into a tensor
``t`` is then ``Σ_dim index(dim) · t_stride_<dim>``, where each index is either a per-program scalar or a vector laid
along one axis of the tile. Writing every load and store this way is what folds permutations, slices and
broadcasts (stride 0) of the operands into the pointer arithmetic: no operand is ever copied into a layout.
"""
from __future__ import annotations

from collections.abc import Sequence


def stride(tensor: str, dim: str) -> str:
    """The name of the kernel parameter holding ``tensor``'s stride along ``dim``."""
    return f"{tensor}_stride_{dim}"


def size(dim: str) -> str:
    """The name of the kernel parameter holding the size of ``dim``."""
    return f"size_{dim}"


def broadcast(expr: str, axis: int, ndim: int) -> str:
    """``expr`` (a vector) placed along ``axis`` of an ``ndim``-dimensional tile, e.g. ``(x)[:, None]``."""
    if ndim == 1:
        return expr
    return f"({expr})[{', '.join(':' if a == axis else 'None' for a in range(ndim))}]"


def linear_offset(tensor: str, dims: Sequence[str]) -> str:
    """``Σ index(dim) · stride`` over ``dims`` for ``tensor`` (``0`` when ``dims`` is empty)."""
    return " + ".join(f"{d} * {stride(tensor, d)}" for d in dims) or "0"


def tile_offset(tensor: str, axes: Sequence[Sequence[str]], scalars: Sequence[str] = ()) -> str:
    """Element offsets of ``tensor`` over a tile: ``axes[p]`` lists the dims whose index vectors run along tile
    axis ``p``; ``scalars`` the dims whose index is fixed per program."""
    parts = [linear_offset(tensor, scalars)] if scalars else []
    parts += [broadcast(linear_offset(tensor, dims), axis, len(axes)) for axis, dims in enumerate(axes) if dims]
    return " + ".join(parts)


def unflatten(flat: str, dims: Sequence[str]) -> list[str]:
    """Source lines that split the flat row-major index ``flat`` into one index per dim (the last dim fastest);
    each index gets the dim's name. Sizes come from the ``size_<dim>`` parameters."""
    if len(dims) == 1:
        return [f"{dims[0]} = {flat}"]
    lines = [f"rest = {flat}"]
    for dim in reversed(dims[1:]):
        lines += [f"{dim} = rest % {size(dim)}", f"rest = rest // {size(dim)}"]
    return lines + [f"{dims[0]} = rest"]


def product(dims: Sequence[str]) -> str:
    """Source for the number of elements of a group of dims (``1`` when empty)."""
    return " * ".join(size(d) for d in dims) or "1"


def parameter_lines(groups: Sequence[Sequence[str]], indent: str = "    ", width: int = 110) -> list[str]:
    """A kernel's parameter list as source lines: each group of names starts a line and wraps at ``width``."""
    lines = []
    for group in groups:
        line = ""
        for name in group:
            piece = f"{name}, "
            if line and len(indent + line + piece) > width + 1:
                lines.append(indent + line.rstrip())
                line = ""
            line += piece
        if line:
            lines.append(indent + line.rstrip())
    return lines
