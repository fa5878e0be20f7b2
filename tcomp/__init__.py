"""tcomp: a tensor-network graph compiler for PyTorch.

``tcomp.compile(model)`` traces a model into a tensor-network IR, optimises it with a pipeline of passes and
returns an ordinary ``nn.Module``. See README.md and docs/ (docs/architecture.md for how the package is laid out).
"""
from tcomp.api import CompiledModule, TcompWarning, compile
from tcomp.approx.heal import HealConfig
from tcomp.frontend.capture import CaptureError
from tcomp.passmanager import VerificationError
from tcomp.version import __version__

__all__ = ["compile", "CompiledModule", "CaptureError", "HealConfig", "TcompWarning", "VerificationError",
           "__version__"]
