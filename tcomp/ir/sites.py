"""Approximation sites: the places in a Program where an approximation can be made, and the options proposed for
each (kept in :attr:`Program.sites <tcomp.ir.program.Program.sites>` between the approximate passes).

- a **linear site**: a Network with exactly one activation operand and a weight operand ``W[o,i]`` (or a 1×1
  convolution's ``W[o,i,1,1]``) whose output indices reach the Network's output and whose input indices contract
  with the activation — ``nn.Linear``, ``F.linear``, a 1×1 conv, after fusion too;
- a **conv site**: a ``Call`` of an ``nn.Conv2d`` with a k×k kernel and one group;
- a **network site**: any Network (for reduced precision).

An *option* is one way to run a site: a structured factorization of its weight (a
:class:`~tcomp.approx.factorize.FactorNetwork`), a Tucker-2/CP rewrite of a convolution, a compute dtype, or a
combination. The structured, tucker and precision passes propose options, the select pass prices and chooses them,
and :mod:`tcomp.approx.apply` applies them to a Program.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .ops import Call, Network, Value


@dataclass
class Option:
    """One way to run a site. ``factors`` (for structure) is a FactorNetwork; ``dtype`` a compute dtype."""

    site: str
    kind: str                     # "structure", "precision", "conv"
    name: str                     # e.g. "asvd(rank=64)", "bf16", "asvd(rank=64)+bf16", "tucker2(32,32)"
    factors: Any = None
    dtype: torch.dtype | None = None
    params: dict = field(default_factory=dict)
    local_error: float | None = None   # relative error of the weight (activation-weighted where known)
    values: list | None = None         # its trainable constants, created once (see tcomp.approx.apply.site_replacement)

    @property
    def num_params(self) -> int | None:
        return self.factors.num_params() if self.factors is not None else None


@dataclass
class Site:
    name: str                     # the site's op output name
    kind: str                     # "linear", "conv", "network"
    weight: Value | None = None
    weight_pos: int | None = None
    activation_pos: int | None = None
    in_indices: tuple[str, ...] = ()
    out_indices: tuple[str, ...] = ()
    options: list[Option] = field(default_factory=list)


def linear_site(net: Network) -> Site | None:
    """The linear site of ``net``, or None when it does not have the Linear shape described above."""
    acts = [k for k, v in enumerate(net.operands) if v.kind != "const"]
    weights = [k for k, v in enumerate(net.operands) if v.kind == "const" and v.trainable and v.is_tensor
               and (len(v.shape) == 2 or (len(v.shape) == 4 and v.shape[2:] == (1, 1)))]
    if len(acts) != 1 or len(weights) != 1 or len(net.operands) != 2:
        return None
    w = weights[0]
    dims = net.operand_dims[w]
    out_group, in_group = dims[0], dims[1]
    if any(dims[2:]) or not out_group or not in_group:
        return None
    out_set, act = set(net.flat_out_indices), set(net.flat_operand_indices()[acts[0]])
    if not set(out_group) <= out_set or set(out_group) & act or not set(in_group) <= act or set(in_group) & out_set:
        return None
    return Site(net.out.name, "linear", net.operands[w], w, acts[0], tuple(in_group), tuple(out_group))


def conv_site(call: Call) -> Site | None:
    mod = call.module
    if call.kind != "module" or type(mod) is not nn.Conv2d or mod.groups != 1 or mod.padding_mode != "zeros" \
            or mod.kernel_size == (1, 1) or isinstance(mod.padding, str):
        return None
    return Site(call.out.name, "conv")


def find_sites(program) -> dict[str, Site]:
    """Every site of ``program``, by its op's output name: each Network (a linear site where it has that shape,
    else a network site) and each k×k convolution module."""
    sites: dict[str, Site] = {}
    for op in program.ops:
        if isinstance(op, Network):
            s = linear_site(op)
            sites[op.out.name] = s if s is not None else Site(op.out.name, "network")
        elif isinstance(op, Call):
            s = conv_site(op)
            if s is not None:
                sites[op.out.name] = s
    return sites
