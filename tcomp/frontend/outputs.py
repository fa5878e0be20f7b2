"""The model's output structure, kept as eager gives it.

torch.fx records an output that is a dict subclass or a dataclass (Hugging Face's ``ModelOutput``, say) as a plain
dict, so the emitted program returns ``{"last_hidden_state": ..., ...}`` where eager returns a
``BaseModelOutputWithPooling``. :func:`in_eager_structure` puts the leaves back into eager's containers when the two
structures differ only in their container types: the same leaves at the same key paths (a pytree key path names a
leaf by its keys, indices and attributes, whatever the container's type).

torch.export flattens the output itself and records its structure (``out_spec``). Where that structure holds only
tuples, lists and dicts, capture writes it back into the graph; otherwise (a ``DynamicCache``, a ``ModelOutput``: fx
cannot write their constructors into code) the graph returns the flat leaves and the runner rebuilds the structure.
"""
from __future__ import annotations

from typing import Any, Callable

import torch.fx as fx
import torch.utils._pytree as pytree
from torch.fx.immutable_collections import immutable_dict, immutable_list

_PLAIN = {immutable_dict: dict, immutable_list: list}
_CODEGEN = {tuple, list, dict, type(None)}   # containers fx writes into code


class EagerStructure:
    """Calls ``run`` and returns its results in the pytree structure ``spec``."""

    def __init__(self, run: Callable, spec: pytree.TreeSpec):
        self.run, self.spec = run, spec

    def __call__(self, *args: Any) -> Any:
        return pytree.tree_unflatten(pytree.tree_leaves(self.run(*args)), self.spec)


def _containers(spec: pytree.TreeSpec) -> list[type]:
    if spec.is_leaf():
        return []
    return [_PLAIN.get(spec.type, spec.type), *(t for child in spec.children() for t in _containers(child))]


def plain(spec: pytree.TreeSpec) -> bool:
    """Whether the structure holds only containers fx can write into a graph's code."""
    return set(_containers(spec)) <= _CODEGEN


def _paths(tree: Any) -> list[tuple]:
    return [path for path, _ in pytree.tree_flatten_with_path(tree)[0]]


def in_eager_structure(runner: Callable, gm: fx.GraphModule, reference: Any,
                       flat_spec: pytree.TreeSpec | None = None) -> Callable:
    """``runner`` (which runs ``gm``'s program) returning eager's output structure ``reference`` where ``gm``'s
    output differs from it only in container types, or where ``gm`` returns the flat leaves of ``flat_spec`` (the
    structure torch.export read) and that is eager's; otherwise ``runner`` itself (a real difference is left for the
    check against eager to report)."""
    spec = pytree.tree_structure(reference)
    run = runner.forward if runner is gm else runner
    if flat_spec is not None:
        return EagerStructure(run, spec) if flat_spec == spec else runner
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    if _containers(pytree.tree_structure(out)) == _containers(spec) or _paths(out) != _paths(reference):
        return runner
    return EagerStructure(run, spec)
