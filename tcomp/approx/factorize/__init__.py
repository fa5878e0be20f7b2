"""Closed-form factorizations of weights into small tensor networks (issue 4, "Factorizations").

Every factorization returns a :class:`FactorNetwork`; each family lives in its own module, which cites its source:
``lowrank`` (truncated SVD, activation-aware SVD, AFM output projection, CUR), ``monarch`` (Monarch, Block
Tensor-Train), ``kronecker`` (Kronecker sums), ``tucker`` (HOSVD/HOOI, Tucker-2 of convolutions), ``cp`` (CP-ALS with
a term-norm bound) and ``tucker_packing`` (the core shape under a parameter budget).
"""
from .cp import CPResult, cp, cp_als
from .kronecker import kronecker
from .lowrank import CalibrationStats, activation_aware_svd, cur, output_projection, truncated_svd
from .monarch import btt, monarch
from .network import FactorNetwork
from .tucker import mode_singular_values, tucker, tucker2
from .tucker_packing import Packing, greedy_packing, packing_cost, tucker_packing

__all__ = [
    "CPResult", "CalibrationStats", "FactorNetwork", "Packing", "activation_aware_svd", "btt", "cp", "cp_als", "cur",
    "greedy_packing", "kronecker", "mode_singular_values", "monarch", "output_projection", "packing_cost",
    "truncated_svd", "tucker", "tucker2", "tucker_packing",
]
