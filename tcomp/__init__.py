"""tcomp: a tensor-network graph compiler for PyTorch.

``tcomp.compile(model)`` traces a model into a tensor-network IR, optimises it with a pipeline of passes and
returns an ordinary ``nn.Module``. See README.md and docs/.
"""
from .api import CompiledModule, TcompWarning, compile
from tcomp.frontend.capture import CaptureError
from tcomp.approx.heal import HealConfig
from .passmanager import VerificationError

__version__ = "0.1.1"
__all__ = ["compile", "CompiledModule", "CaptureError", "HealConfig", "TcompWarning",
           "VerificationError", "__version__"]
