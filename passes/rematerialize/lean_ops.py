"""Memory-lean forms of backward operations whose kernels bound a training step's peak, whatever the schedule.

Rematerialization decides which activations are live; it cannot go below what one operation holds while it runs.
Three operations of common training graphs hold more than their arithmetic needs, and `make_lean` rewrites them in
the AOTAutograd joint graph before it is coarsened (exact rewrites: the same gradients up to the order of
floating-point accumulation):

- **Batch-norm backward on CPU.** ATen's `native_batch_norm_backward` (training mode) allocates its input gradient
  twice in its contiguous path, so at ResNet-18's stem (batch 32) it holds input, output gradient and two
  103 MB input gradients. `tcomp::batch_norm_backward` computes the same three gradients from the standard
  formulas (Ioffe & Szegedy 2015, section 3) with no temporary beyond its outputs and a slice of a sixteenth of
  the channels (one channel when there are fewer than 16):

      dβ = Σ dy,   dγ = σ⁻¹ Σ dy·(x − μ),   dx = γσ⁻¹ · (dy − dβ/n − (x − μ) σ⁻² (Σ dy·(x − μ))/n)

  where the sums run over every dimension but the channels and n is their size. dx is built in place in the
  buffer that first holds x − μ.
- **A tied embedding's gradient sum.** A weight shared by an embedding lookup and an output projection (GPT-2's
  token embedding and language-model head) gets two partial gradients that the joint graph adds out of place:
  `add(A, embedding_dense_backward(g, ids, ...))` holds A, the dense embedding gradient and their sum, three
  vocabulary-sized matrices. When nothing else reads A's storage, the sum becomes `A.index_put_((ids,), g,
  accumulate=True)`, which scatters the lookup's gradient rows into A: one matrix instead of three. (The dense
  embedding gradient is exactly that scatter into zeros when there is no padding index and no frequency scaling.)
- **Log-softmax backward** (a cross-entropy loss inside the model, over a vocabulary for a language model).
  `_log_softmax_backward_data(dy, y)` allocates dx = dy − exp(y)·Σdy beside y, the log-probabilities the forward
  saved, and dy: at GPT-2's loss (batch 4 × 256) three 206 MB tensors. When every other reader of y's storage
  is an operation the backward depends on (the loss and its backward: every schedule runs them before it, and
  coarsen.py keeps them from being recomputed), `tcomp::log_softmax_backward_` computes dx in place in y's
  storage: two instead of three.

The coarse model sees the rewritten graph: the new batch-norm kernel's workspace is measured like any other's, and
an in-place write allocates nothing and keeps its storage owner, and the other readers of that storage, from being
recomputed (coarsen.py).
"""
from __future__ import annotations

import operator

import torch
from torch import Tensor, fx

from .coarsen import ancestors, is_view, storage_source

_SLICES = 16
"""The dot product Σ dy·(x − μ) is computed in this many slices of the channels (its temporary is one slice)."""


@torch.library.custom_op("tcomp::batch_norm_backward", mutates_args=())
def batch_norm_backward(grad_out: Tensor, x: Tensor, weight: Tensor, mean: Tensor,
                        invstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch-norm gradients (input, weight, bias) from the statistics the forward saved, holding no
    input-sized temporary (see the module docstring); the input gradient is laid out as `x`."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    dims = [0, *range(2, x.dim())]
    n = x.numel() // x.shape[1]
    grad_in = x - mean.view(shape)
    step = -(-x.shape[1] // _SLICES)
    dot = torch.cat([(c * g).sum(dims) for c, g in zip(grad_in.split(step, 1), grad_out.split(step, 1))])
    grad_bias = grad_out.sum(dims)
    scale = invstd * weight
    grad_in.mul_((-scale * invstd * invstd * dot / n).view(shape))
    grad_in.add_((-scale * grad_bias / n).view(shape))
    grad_in.addcmul_(grad_out, scale.view(shape))
    return grad_in, dot * invstd, grad_bias


@batch_norm_backward.register_fake
def _batch_norm_backward_outputs(grad_out, x, weight, mean, invstd):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)


_LIBRARY = torch.library.Library("tcomp", "FRAGMENT")
# defined with a raw schema: a custom_op may not return its (mutated) input, and the graph's later readers must
# read the write's result, so that every schedule orders them after it. Its kernel is CompositeImplicitAutograd:
# run, it is these in-place operations; traced (compiled autograd, torch.compile), it decomposes into them, which
# functionalization handles (an opaque operator whose result aliases an input it cannot)
_LIBRARY.define("log_softmax_backward_(Tensor(a!) output, Tensor grad_out, int dim) -> Tensor(a!)")


def log_softmax_backward_(output: Tensor, grad_out: Tensor, dim: int) -> Tensor:
    """The input gradient of log-softmax, dy − exp(y)·Σ_dim dy, written over `output` (y) and returned."""
    total = grad_out.sum(dim, keepdim=True)
    return output.exp_().mul_(total.neg_()).add_(grad_out)


_LIBRARY.impl("log_softmax_backward_", log_softmax_backward_, "CompositeImplicitAutograd")


def make_lean(joint: fx.GraphModule) -> int:
    """Rewrite the operations of `joint` described in the module docstring; returns how many were rewritten."""
    rewritten = 0
    for node in list(joint.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.aten.native_batch_norm_backward.default and _lean_norm_applies(node):
            _replace_norm(joint.graph, node)
            rewritten += 1
        elif node.target is torch.ops.aten.add.Tensor and (terms := _scatter_into(node)) is not None:
            _replace_sum(joint.graph, node, *terms)
            rewritten += 1
        elif node.target is torch.ops.aten._log_softmax_backward_data.default and _log_softmax_in_place_applies(node):
            _replace_log_softmax(joint.graph, node)
            rewritten += 1
    if rewritten:
        joint.graph.lint()
        joint.recompile()
    return rewritten


def _lean_norm_applies(node: fx.Node) -> bool:
    grad_out, x, weight, _, _, mean, invstd, train, _, mask = node.args
    value = x.meta.get("val")
    return (train and list(mask) == [True, True, True] and all(isinstance(a, fx.Node) for a in (weight, mean, invstd))
            and isinstance(value, Tensor) and value.device.type == "cpu" and value.dim() >= 2
            and value.dtype in (torch.float32, torch.float64))


def _replace_norm(graph: fx.Graph, node: fx.Node) -> None:
    grad_out, x, weight, _, _, mean, invstd = node.args[:7]
    with graph.inserting_before(node):
        lean = graph.call_function(torch.ops.tcomp.batch_norm_backward.default, (grad_out, x, weight, mean, invstd))
    lean.meta = dict(node.meta)  # the values ATen's kernel recorded, laid out as the lean op lays them out:
    lean.meta["val"] = _batch_norm_backward_outputs(*(a.meta["val"] for a in (grad_out, x, weight, mean, invstd)))
    for user in node.users:
        user.meta["val"] = lean.meta["val"][user.args[1]]
    node.replace_all_uses_with(lean)
    graph.erase_node(node)


def _scatter_into(add: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """(A, the embedding gradient) when `add` is A + embedding_dense_backward(...) that can scatter into A."""
    if add.kwargs or len(add.args) != 2 or not all(isinstance(a, fx.Node) for a in add.args):
        return None
    for base, dense in (add.args, add.args[::-1]):
        if dense.target is not torch.ops.aten.embedding_dense_backward.default or len(dense.users) != 1:
            continue
        grad, ids, _, padding_idx, scale_by_freq = dense.args
        values = [n.meta.get("val") for n in (base, grad, ids, dense, add)]
        if padding_idx >= 0 or scale_by_freq or not all(isinstance(v, Tensor) for v in values):
            continue
        base_v, grad_v, ids_v, dense_v, add_v = values
        if (base_v.shape == dense_v.shape == add_v.shape and base_v.dtype == grad_v.dtype == add_v.dtype
                and base_v.stride() == add_v.stride() and torch._debug_has_internal_overlap(base_v) == 0
                and grad_v.is_contiguous() and ids_v.is_contiguous() and _only_read_by(base, add)):
            return base, dense
    return None


def _only_read_by(base: fx.Node, add: fx.Node) -> bool:
    """Nothing but `add` (through views) reads the storage `base` lives in (see _readers)."""
    readers = _readers(base)
    return readers is not None and readers == {add}


def _readers(base: fx.Node) -> set[fx.Node] | None:
    """The nodes that read the storage `base` lives in other than by taking a view of it (the graph's output
    included), or None unless that storage is an operation's own result (not an input, not one of several results,
    which may be pieces of one storage, as `split`'s are) and no view of it comes in pieces (`split`, `unbind`:
    coarsen.py's storage_source does not follow their getitems)."""
    owner = storage_source(base)
    if owner.op != "call_function" or owner.target is operator.getitem:
        return None
    readers, family, stack = set(), set(), [owner]
    while stack:
        node = stack.pop()
        family.add(node)
        for user in node.users:
            if user.op == "call_function" and is_view(user) and user.args[0] is node:
                if not isinstance(user.meta.get("val"), Tensor):
                    return None
                stack.append(user)
            else:
                readers.add(user)
    return readers if base in family else None


def _log_softmax_in_place_applies(node: fx.Node) -> bool:
    """`_log_softmax_backward_data(dy, y, dim, dtype)` can write dx over y: same dtype (float32/64) and layout, and
    every other reader of y's storage is an ancestor of it. (Coming before it in the graph is not enough: coarsening
    may put such a reader in one group with operations that depend on the write.)"""
    grad, output, _, input_dtype = node.args
    if not (isinstance(grad, fx.Node) and isinstance(output, fx.Node)):
        return False
    values = [n.meta.get("val") for n in (grad, output, node)]
    if not all(isinstance(v, Tensor) for v in values):
        return False
    grad_v, output_v, result_v = values
    readers = _readers(output)
    return (output_v.dtype == grad_v.dtype == result_v.dtype == input_dtype
            and output_v.dtype in (torch.float32, torch.float64)
            and output_v.shape == result_v.shape and output_v.stride() == result_v.stride()
            and torch._debug_has_internal_overlap(output_v) == 0 and storage_source(grad) is not storage_source(output)
            and readers is not None and readers - {node} <= ancestors(node.all_input_nodes))


def _replace_log_softmax(graph: fx.Graph, node: fx.Node) -> None:
    grad, output, dim, _ = node.args
    with graph.inserting_before(node):
        lean = graph.call_function(torch.ops.tcomp.log_softmax_backward_.default, (output, grad, dim))
    lean.meta = dict(node.meta)
    node.replace_all_uses_with(lean)
    graph.erase_node(node)


def _replace_sum(graph: fx.Graph, add: fx.Node, base: fx.Node, dense: fx.Node) -> None:
    grad, ids = dense.args[:2]
    width = grad.meta["val"].shape[-1]
    with graph.inserting_before(add):
        flat_ids = graph.call_function(torch.ops.aten.view.default, (ids, [-1]))
        rows = graph.call_function(torch.ops.aten.view.default, (grad, [-1, width]))
        scattered = graph.call_function(torch.ops.aten.index_put_.default, (base, [flat_ids], rows, True))
    flat_ids.meta["val"] = ids.meta["val"].view(-1)
    rows.meta["val"] = grad.meta["val"].view(-1, width)
    scattered.meta = dict(add.meta)
    add.replace_all_uses_with(scattered)
    graph.erase_node(add)
    graph.erase_node(dense)
