"""What a captured graph reads from tensor data into Python, and which tensors' shapes depend on data.

torch.fx traces ``x / x.abs().max().item()`` and ``x * x.nonzero().shape[0]`` into ordinary nodes, and shape
propagation records their values at the example inputs: values that other data changes. A forward taint analysis
over the graph finds them:

- a **data value** is a Python value read from a tensor's contents (``item``, ``tolist``, ``int(t)``, aten's
  ``_local_scalar_dense``), or computed from one, or the size of a data-shaped tensor;
- a **data-shaped tensor** is the result of an op whose output shape depends on the data (``nonzero``,
  ``masked_select``, ``unique``, indexing with a boolean mask, ...), or of any op reading one, or of an op given a
  data value anywhere but as a scalar operand of elementwise arithmetic (``torch.arange(n)``, ``x[:n]``).

Lowering never folds a data value into the program: it stays an op computed on every call. A data-shaped tensor may
only have its size read (its shape is not one the program can fix); read in any other way, lowering refuses the
graph with :class:`DataDependentShape`, naming the op, and the model runs eagerly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

READS_DATA = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "_local_scalar_dense"}
DATA_SHAPED = {"nonzero", "argwhere", "unique", "unique_consecutive", "unique_dim", "_unique", "_unique2",
               "masked_select", "bincount", "repeat_interleave"}
SIZE_QUERIES = {"size", "dim", "numel", "nelement", "sym_size", "sym_numel", "shape"}
ELEMENTWISE = {"add", "sub", "mul", "truediv", "div", "floordiv", "mod", "pow", "neg", "radd", "rsub", "rmul",
               "rtruediv", "rdiv", "rpow", "__add__", "__sub__", "__mul__", "__truediv__", "__radd__", "__rsub__",
               "__rmul__", "__rtruediv__", "__pow__", "__rpow__", "clamp", "clamp_min", "clamp_max", "maximum",
               "minimum", "fmod", "remainder", "eq", "ne", "lt", "le", "gt", "ge"}
_INDEXING = {"getitem", "index", "__getitem__"}


class DataDependentShape(RuntimeError):
    """A tensor whose shape depends on the data is read beyond its size."""


@dataclass
class DataDependence:
    values: set[fx.Node] = field(default_factory=set)
    shapes: set[fx.Node] = field(default_factory=set)


def op_name(node: fx.Node) -> str:
    """``item``, ``nonzero``, ``shape`` (for ``getattr(x, "shape")``), ``mul``, ...: what a node computes."""
    target = node.target
    if node.op == "call_method":
        return target
    if node.op != "call_function":
        return ""
    if target is getattr and len(node.args) == 2 and isinstance(node.args[1], str):
        return node.args[1]
    if isinstance(target, torch._ops.OpOverload):
        return target._opname
    return getattr(target, "__name__", "")


def analyse(graph: fx.Graph) -> DataDependence:
    """The data values and data-shaped tensors of ``graph`` (see the module docstring); raises
    :class:`DataDependentShape` when a data-shaped tensor is read beyond its size."""
    dd = DataDependence()
    for node in graph.nodes:
        name = op_name(node)
        if name in READS_DATA:
            dd.values.add(node)
        elif name in DATA_SHAPED or (name in _INDEXING and _boolean_index(node)):
            dd.shapes.add(node)
        else:
            _propagate(node, name, dd)
    for node in dd.shapes:
        for user in node.users:
            if op_name(user) not in SIZE_QUERIES:
                raise DataDependentShape(
                    f"{_describe(node)} has a shape that depends on the data, and {_describe(user)} reads it: "
                    f"tcomp compiles shapes it can fix, so this model runs eagerly")
    return dd


def _propagate(node: fx.Node, name: str, dd: DataDependence) -> None:
    inputs = node.all_input_nodes
    shaped = [i for i in inputs if i in dd.shapes]
    valued = [i for i in inputs if i in dd.values]
    if not shaped and not valued:
        return
    if name in SIZE_QUERIES or "tcomp_shape" not in node.meta:
        dd.values.add(node)  # a Python value: a size of a data-shaped tensor, or arithmetic on data values
    elif shaped or name not in ELEMENTWISE:
        dd.shapes.add(node)  # reads a data-shaped tensor, or a data value may set its shape (arange(n), x[:n])


def _boolean_index(node: fx.Node) -> bool:
    indices = node.args[1:] if node.args else ()
    leaves = [a for a in torch.utils._pytree.tree_leaves(indices) if isinstance(a, fx.Node)]
    return any(a.meta.get("tcomp_dtype") == torch.bool for a in leaves)


def _describe(node: fx.Node) -> str:
    trace = node.meta.get("stack_trace") or node.stack_trace
    where = ""
    if trace:
        lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
        where = f" ({lines[-2]}: {lines[-1]})" if len(lines) >= 2 else ""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target!s} ({node.name}){where}"

