"""The cost model: what an op costs (FLOPs, memory traffic, transposition copies, launches) and what that means in
seconds on this machine, whose constants are measured once and cached (:mod:`.machine`)."""
from .machine import gemm_speedup, machine_model
from .model import Cost, MachineModel, dtype_bytes

__all__ = ["Cost", "MachineModel", "dtype_bytes", "gemm_speedup", "machine_model"]
