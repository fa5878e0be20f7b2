"""What capture needs to know about Hugging Face transformers models.

Their caches (``DynamicCache`` and the other ``Cache`` subclasses) are outputs of a decoder's forward by default;
torch.export can flatten an output only into registered pytree nodes. transformers' own exporter
(``transformers.exporters.exporter_dynamo``) registers them, and so does :func:`prepare` — the same registration,
process-wide, as exporting the model with transformers would do. The compiled program then returns the cache's
tensors and the runner rebuilds the cache (:mod:`tcomp.frontend.outputs`).
"""
from __future__ import annotations

import sys

import torch


def prepare(model: torch.nn.Module) -> None:
    """Make ``model``'s outputs exportable, if it is a transformers model (a no-op otherwise, and where this
    transformers has no exporter)."""
    # never import transformers' modelling code (1.4 s) for a model that is not one of its own
    if "transformers" not in sys.modules or not any(cls.__module__.startswith("transformers.")
                                                    for cls in type(model).__mro__):
        return
    try:
        from transformers import PreTrainedModel
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except ImportError:
        return
    if isinstance(model, PreTrainedModel):
        register_cache_pytrees_for_model(model)
