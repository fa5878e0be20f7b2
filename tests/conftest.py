"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default) runs the example counts the issues ask for with no deadline (the
machine is shared and timings vary), derandomized so that a run on a clean checkout is reproducible — the wide,
seeded search for new failures is ``bench/fuzz.py``, and ``explore`` (random draws) is for looking; ``dev`` runs
fewer for quick iteration. Choose one with ``HYPOTHESIS_PROFILE=explore``.
"""
import os
import warnings

import torch
from hypothesis import HealthCheck, settings

_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=_CHECKS)
settings.register_profile("explore", deadline=None, suppress_health_check=_CHECKS)
settings.register_profile("dev", deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))
# The default backend "auto" measures eager against Inductor (a cold compile of 5-40 s per model); tests that
# are about the backends ask for them explicitly.
os.environ.setdefault("TCOMP_DEFAULT_BACKEND", "eager")
warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
