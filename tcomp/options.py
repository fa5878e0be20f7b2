"""The user's compile options, typed and validated once (``tcomp.compile``'s keyword arguments).

Two defaults come from the environment, read here and nowhere else in the pipeline: ``TCOMP_DEFAULT_BACKEND``
(``backend``; the test suite sets ``eager`` to skip Inductor's cold compiles) and ``TCOMP_LAYOUT`` (``layout``).
The cache directory (``TCOMP_CACHE_DIR``, :mod:`tcomp.cache`) and fixed cost constants
(``TCOMP_CALIBRATION=default``, :mod:`tcomp.cost.machine`) are read where they apply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tcomp.approx.heal import HealConfig
from tcomp.approx.metrics import get_metric

KERNELS = ("auto", "torch", "triton")
BACKENDS = ("auto", "eager", "inductor")
LAYOUTS = ("auto", "channels_last", "contiguous")


def _default_backend() -> str:
    return os.environ.get("TCOMP_DEFAULT_BACKEND", "auto")


def _default_layout() -> str:
    return os.environ.get("TCOMP_LAYOUT", "auto")


@dataclass(frozen=True)
class Options:
    """See :func:`tcomp.compile` and docs/usage.md for each option. Frozen: every compilation of a module, and every
    pass, reads the same options."""

    tolerance: float | None = None
    calibration: Any = None
    metric: Any = "relative_l2"
    target_speedup: float | None = None
    heal: bool | HealConfig | None = None
    structures: tuple | None = None
    memory_budget: float | int | None = None
    kernels: str = "auto"
    strict: bool = False
    verify: bool = False
    passes: Any = None
    backend: str = field(default_factory=_default_backend)
    layout: str = field(default_factory=_default_layout)
    progress: bool = False
    dynamic: bool | None = None

    @property
    def approximate(self) -> bool:
        return self.tolerance is not None or self.target_speedup is not None

    @property
    def heal_config(self) -> HealConfig | None:
        """``heal`` as a configuration: ``True`` is the default one."""
        return HealConfig() if self.heal is True else self.heal or None

    def validate(self) -> None:
        for name, value, choices in (("kernels", self.kernels, KERNELS), ("backend", self.backend, BACKENDS),
                                     ("layout", self.layout, LAYOUTS)):
            if value not in choices:
                raise ValueError(f"{name}={value!r}: choose one of {choices}")
        if self.dynamic not in (None, True, False):
            raise ValueError(f"dynamic={self.dynamic!r}: choose None (the batch symbolic, the sequence once a second "
                             f"length is seen), True (both from the start) or False (every size specialised)")
        if self.memory_budget is not None:
            check_budget(self.memory_budget)
        if self.approximate:
            if self.calibration is None:
                raise ValueError("tolerance= / target_speedup= need calibration= (an iterable of at least 2 input "
                                 "batches: the error is measured on them, the last quarter held out)")
            if self.tolerance is not None and not self.tolerance > 0:
                raise ValueError(f"tolerance must be positive, got {self.tolerance!r}")
            if self.target_speedup is not None and not self.target_speedup > 1:
                raise ValueError(f"target_speedup must be above 1, got {self.target_speedup!r}")
            get_metric(self.metric)
        elif self.heal is not None:
            raise ValueError("heal= needs tolerance= or target_speedup= (there is nothing to heal otherwise)")


def check_budget(budget: float | int) -> None:
    """Raise TypeError / ValueError unless ``budget`` (``memory_budget=``) is a fraction of eager's measured peak in
    (0, 1] or a positive number of bytes."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a float fraction of eager's peak or an int of bytes, got {budget!r}")
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        raise ValueError(f"a fractional budget must be in (0, 1], got {budget}")
    if isinstance(budget, int) and budget <= 0:
        raise ValueError(f"a budget in bytes must be positive, got {budget}")
