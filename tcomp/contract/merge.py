"""Merging two Networks into one: the producer's sub-network substituted for the operand it produces.

The two index structures meet through their common refinement (:func:`tcomp.ir.indices.refine`): a reshape between
them only splits or merges indices, so both sides are renamed to the finer indices and the producer's operands join
the consumer's. A producer whose epilogue is a scalar scaling merges (the scale moves to the consumer's epilogue);
any other epilogue does not (it is not linear). The merged Network's *hint* is the unfused evaluation — the
producer's tree, then the consumer's — so that planning it can only do better than the two apart.

Used by the fuse_networks and algebraic passes, and to substitute a weight's factors into its layer
(:func:`tcomp.approx.apply.apply_structure`).
"""
from __future__ import annotations

import torch

from tcomp.ir import ACC, EpilogueOp, Network
from tcomp.ir.indices import IndexPool, refine
from tcomp.ir.symbolic import as_size

from .plan import default_pairs


def scale_of(epilogue: tuple[EpilogueOp, ...]) -> int | float | None:
    """The product of a purely scalar-scaling epilogue, or None if the epilogue does anything else. Integer factors
    multiply to an integer: an integer network scaled by ``2`` must stay integer (``2.0`` would turn it float)."""
    s = 1
    for e in epilogue:
        if e.fn == "mul" and len(e.args) == 2 and e.args[0] is ACC and is_scalar(e.args[1]) and not e.kwargs:
            s *= e.args[1]
        elif e.fn == "div" and len(e.args) == 2 and e.args[0] is ACC and is_scalar(e.args[1]) and not e.kwargs:
            s /= e.args[1]
        else:
            return None
    return s


def is_scalar(x) -> bool:
    """A Python number (not a bool): what an epilogue may scale by."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scale_epilogue(scale: int | float) -> tuple[EpilogueOp, ...]:
    return () if scale == 1 else (EpilogueOp("mul", torch.mul, (ACC, scale)),)


def _split_dims(dims, mapping: dict[str, tuple[str, ...]]):
    return tuple(tuple(j for i in g for j in mapping.get(i, (i,))) for g in dims)


def _rename(net: Network, mapping: dict[str, tuple[str, ...]], sizes: dict[str, int]) -> Network:
    """``net`` with each index in ``mapping`` replaced by its tuple of (finer) indices."""
    new_sizes = {}
    for i, s in net.sizes.items():
        if i in mapping:
            for j in mapping[i]:
                new_sizes[j] = sizes[j]
        else:
            new_sizes[i] = s
    return Network(net.out, net.operands, tuple(_split_dims(d, mapping) for d in net.operand_dims),
                   _split_dims(net.out_dims, mapping), new_sizes, net.epilogue, None, net.origin, net.hint)


def merge(consumer: Network, position: int, producer: Network,
          trees: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None) -> Network | None:
    """The consumer with operand ``position`` (the producer's result) replaced by the producer's sub-network, or
    None when the two index structures have no common refinement or the producer's epilogue is not linear.

    ``trees`` — the (consumer, producer) contraction trees the two were priced with — make the merged network's
    hint exactly that unfused evaluation, so that planning the merged network can only do better; without them
    the hint is built from each network's own hint (or opt_einsum's default tree)."""
    scale = scale_of(producer.epilogue)
    if scale is None:
        return None
    pool = IndexPool(set(consumer.sizes) | set(producer.sizes))
    fresh = {i: (pool.new(),) for i in producer.sizes}
    prod_sizes = {fresh[i][0]: s for i, s in producer.sizes.items()}
    producer = _rename(producer, fresh, prod_sizes)
    c_map: dict[str, tuple[str, ...]] = {}
    p_map: dict[str, tuple[str, ...]] = {}
    sizes: dict[str, int] = {}
    for pg, cg in zip(producer.out_dims, consumer.operand_dims[position]):
        r = refine([producer.sizes[i] for i in pg], [consumer.sizes[i] for i in cg])
        if r is None:
            return None
        pieces, p_ranges, c_ranges = r
        names = [pool.new() for _ in pieces]
        for i, rg in zip(pg, p_ranges):
            p_map[i] = tuple(names[k] for k in rg)
        for i, rg in zip(cg, c_ranges):
            c_map[i] = tuple(names[k] for k in rg)
        sizes.update(zip(names, (as_size(p) for p in pieces)))
    producer = _rename(producer, p_map, sizes)
    consumer = _rename(consumer, c_map, sizes)
    operands = consumer.operands[:position] + producer.operands + consumer.operands[position + 1:]
    dims = consumer.operand_dims[:position] + producer.operand_dims + consumer.operand_dims[position + 1:]
    all_sizes = {**consumer.sizes, **producer.sizes}
    used = {i for d in (*dims, consumer.out_dims) for g in d for i in g}
    own_scale = scale_of(consumer.epilogue[:1]) if consumer.epilogue else None
    if own_scale is not None and consumer.epilogue:
        epilogue = _scale_epilogue(scale * own_scale) + consumer.epilogue[1:]
    else:
        epilogue = _scale_epilogue(scale) + consumer.epilogue
    origin = " + ".join(o for o in (producer.origin, consumer.origin) if o)
    return Network(consumer.out, operands, dims, consumer.out_dims,
                   {i: s for i, s in all_sizes.items() if i in used}, epilogue, None, origin,
                   _merged_tree(consumer, position, producer, trees))


def _merged_tree(consumer: Network, position: int, producer: Network,
                 trees: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None) -> tuple[tuple[int, int], ...]:
    """The tree that evaluates the producer's sub-network first, then the consumer's (the unfused order), over
    the merged operand list; contraction_order prices it beside opt_einsum's trees."""
    m, n = len(producer.operands), len(consumer.operands)
    total = n - 1 + m
    if trees is not None:
        c_pairs, p_pairs = (list(t) for t in trees)
    else:
        p_pairs = list(producer.hint) if producer.hint is not None else default_pairs(producer)
        c_pairs = list(consumer.hint) if consumer.hint is not None else default_pairs(consumer)

    def p_id(t: int) -> int:
        return position + t if t < m else total + (t - m)

    p_result = p_id(m + len(p_pairs) - 1) if p_pairs else position

    def c_id(t: int) -> int:
        if t < n:
            return t if t < position else (p_result if t == position else t + m - 1)
        return total + len(p_pairs) + (t - n)

    return tuple((p_id(a), p_id(b)) for a, b in p_pairs) + tuple((c_id(a), c_id(b)) for a, b in c_pairs)
