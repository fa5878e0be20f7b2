"""tcomp under torch.distributed: the wrappers it must not trace through, and one compile decision for every rank.

**Wrappers.** ``tcomp.compile(DistributedDataParallel(m))`` would trace through DDP's forward and leave out its
gradient hooks — the ranks' weights would drift apart with no error — and tracing through an FSDP module reads
its sharded parameters. :func:`refuse_wrapped` raises a ``TypeError`` saying how to compose them instead, as with
torch.compile: ``DistributedDataParallel(tcomp.compile(m))``, and ``fully_shard(tcomp.compile(block))`` for each
block before ``fully_shard(model)``.

**One decision.** What tcomp measures (the cost model's constants, channels-last against contiguous, eager against
Inductor) differs a little from process to process, so two ranks could compile different programs. When a process
group of more than one rank is initialised, :func:`agree` hands every rank rank 0's value (a broadcast). Every rank
compiles the same model for the same input shapes at the same point of its first forward, so they reach each
:func:`agree` together.
"""
from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn as nn

T = TypeVar("T")


def _wrappers() -> tuple[type, ...]:
    found: list[type] = [nn.DataParallel]
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
        from torch.nn.parallel import DistributedDataParallel

        found += [DistributedDataParallel, FullyShardedDataParallel, FSDPModule]
    return tuple(found)


def refuse_wrapped(model: nn.Module) -> None:
    """Raise TypeError when ``model`` is, or contains, a data-parallel or sharding wrapper."""
    wrappers = _wrappers()
    for name, module in model.named_modules():
        if isinstance(module, wrappers):
            where = "" if not name else f" (its submodule {name!r} is one)"
            raise TypeError(
                f"tcomp.compile cannot compile through {type(module).__name__}{where}: tracing its forward would "
                f"leave out its gradient hooks or read sharded parameters. Compile the module first, then wrap it: "
                f"DistributedDataParallel(tcomp.compile(model)); with FSDP2, fully_shard(tcomp.compile(block)) for "
                f"each block, then fully_shard(model) (see docs/usage.md)")


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank of the default process group (``value`` itself without one)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
