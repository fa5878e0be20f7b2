"""What approximate compilation measures once per model and calibration data, and remembers.

A site's option proposals, activation statistics, time ratios and sensitivities depend only on the model's weights,
the calibration batches, the metric and the machine. :class:`Measurements` remembers them:

- **in the process**, under the *calibration key* — the model object, every parameter's and buffer's storage and
  version, the calibration tensors' storages and shapes — so a sweep over tolerances measures each option once
  (the two most recent keys are kept: factorizations are large);
- **on disk** for JSON-able results (numbers, lists, None), under a *content digest* of the same things by value
  (:func:`content_digest`), in the cache table ``measurements`` (:class:`tcomp.cache.DiskCache`), so that compiling
  the same model with the same data in a new process does not measure every option again (MiniLM: 13 minutes the
  first time). A user's metric function has no stable identity across processes: with one, nothing goes to disk.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable

import torch

from tcomp.cache import DiskCache, machine_key
from tcomp.version import __version__

_KEEP = 2


class Measurements:
    """Results remembered for one (model, parameter values, calibration data); see the module docstring.
    ``Measurements()`` remembers nothing (no calibration data: every result is computed)."""

    #: calibration key -> {(kind, *key) -> result}, most recently used last
    _recent: "OrderedDict[tuple, dict]" = OrderedDict()

    def __init__(self, key: tuple | None = None, digest: str | None = None):
        self.key = key
        self.disk = DiskCache.open("measurements", digest[:24]) if digest is not None else None

    @classmethod
    def of(cls, model: torch.nn.Module, batches: list[tuple], program_text: str, metric: Any) -> "Measurements":
        """The measurements of ``model`` on ``batches`` (``program_text``: the lowered program's printed form;
        ``metric``: a metric's name, or a callable, which keeps results in the process only)."""
        digest = content_digest(model, program_text, batches, metric) if isinstance(metric, str) else None
        return cls(calibration_key(model, batches), digest)

    def remember(self, kind: str, *key: Any, compute: Callable[[], Any], persist: bool = False) -> Any:
        """``compute()``, or what it returned before for the same ``(kind, *key)``; with ``persist`` (a JSON-able
        result) also across processes."""
        if self.key is None:
            return compute()
        table = self._recent.setdefault(self.key, {})
        self._recent.move_to_end(self.key)
        while len(self._recent) > _KEEP:
            self._recent.popitem(last=False)
        full = (kind, *key)
        if full not in table:
            disk = self.disk if persist else None
            found = disk.get(repr(full)) if disk is not None else DiskCache.MISSING
            table[full] = compute() if found is DiskCache.MISSING else found
            if disk is not None and found is DiskCache.MISSING:
                disk.put(repr(full), table[full])
        return table[full]


def calibration_key(model: torch.nn.Module, batches: list[tuple]) -> tuple:
    """The model object, every parameter's and buffer's storage and version, and the calibration tensors' storages
    and shapes."""
    state = tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    data = tuple((t.data_ptr(), tuple(t.shape)) for b in batches for t in b if isinstance(t, torch.Tensor))
    return id(model), hash(state), hash(data)


def content_digest(model: torch.nn.Module, program_text: str, batches: list[tuple], metric: str) -> str:
    """A digest of what an option's measured time and sensitivity depend on, stable across processes: the
    lowered program's printed form (what the model computes, op by op), every parameter's and buffer's name, dtype,
    shape and bytes, the calibration batches (tensors by value, anything else by ``repr``), the metric's name, the
    tcomp version and the machine key (the times are this machine's)."""
    h = hashlib.sha256(f"{machine_key()}|{__version__}|{metric}|{program_text}".encode())
    named = [*model.named_parameters(), *model.named_buffers()]
    leaves = [(f"batch{k}.{j}", t) for k, b in enumerate(batches)
              for j, t in enumerate(torch.utils._pytree.tree_leaves(b))]
    for name, t in (*named, *leaves):
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}|{t!r}".encode())
            continue
        flat = t.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()
