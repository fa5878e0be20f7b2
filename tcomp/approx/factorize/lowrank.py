"""Low-rank factorizations of a Linear weight ``W[o,i]`` or a 1×1 conv weight ``W[o,i,1,1]``: ``W ≈ U[o,r]·V[r,i]``.

- :func:`truncated_svd` — the best rank-r approximation in Frobenius norm (Eckart & Young 1936).
- :func:`activation_aware_svd` — minimises the error on the calibration inputs, ``‖XWᵀ − XW_rᵀ‖_F``, by whitening
  with the input second moment ``C = XᵀX/n`` (SVD-LLM's truncation-aware whitening, Wang et al. 2024). SVD-LLM
  writes the minimiser as ``U_r Σ_r V_rᵀ S⁻¹`` with ``S = C^{1/2}``, which needs C invertible. Here it is written as
  ``W_r = U_r U_rᵀ W`` with ``U_r`` the top-r left singular vectors of ``W·C^{1/2}``: the same matrix when C is
  invertible (``U_r U_rᵀ W S = U_r Σ_r V_rᵀ``), still optimal when C is rank-deficient (Eckart–Young on ``WS``),
  and no inverse is taken — the weight's action on input directions the calibration never excited is kept
  (projected), not zeroed.
- :func:`output_projection` — AFM, atomic feature mimicking (Yu & Wu, "Compressing Transformers: Features Are
  Low-Rank, but Weights Are Not!", AAAI 2023): project the outputs onto the top-r principal components of their
  (centred) covariance, ``y ≈ μ_y + U Uᵀ(y − μ_y)``, which moves the mean into the bias. It is the activation-aware
  optimum for the affine layer ``y = Wx + b``; on zero-mean inputs it coincides with :func:`activation_aware_svd`.
- :func:`cur` — ``W ≈ W[:,J]·M·W[I,:]``, a CUR decomposition (Mahoney & Drineas 2009) whose rows and columns are
  actual rows and columns of W. The indices are chosen by pivoted QR on the top-r singular vectors of the
  activation-scaled weight ``W·diag(rms(x_j))`` (Q-DEIM, Drmač & Gugercin 2016 — unlike taking the top-r leverage
  scores it never picks linearly dependent rows or columns, so a rank-r W is recovered exactly); the middle
  factor is the whitened least-squares optimum ``M = W[:,J]⁺·(WS)·(W[I,:]·S)⁺``.

Calibration inputs enter through :class:`CalibrationStats`, which accumulates the first and second moments of a
layer's inputs batch by batch, so that no activation matrix has to be kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .network import FactorNetwork, as_matrix, working_dtype


@dataclass
class CalibrationStats:
    """Running sums of a layer's inputs (float64): ``count`` rows, their ``total`` and their ``gram`` ``XᵀX``."""

    count: int
    total: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def empty(cls, features: int) -> "CalibrationStats":
        if features < 1:
            raise ValueError(f"features must be positive, got {features}")
        zeros = torch.zeros(features, dtype=torch.float64)
        return cls(0, zeros, torch.zeros(features, features, dtype=torch.float64))

    @classmethod
    def from_inputs(cls, inputs: torch.Tensor) -> "CalibrationStats":
        """Statistics of ``inputs[..., features]`` (for a conv layer, move the channels last first)."""
        stats = cls.empty(inputs.shape[-1])
        stats.update(inputs)
        return stats

    @property
    def features(self) -> int:
        return self.total.shape[0]

    def update(self, inputs: torch.Tensor) -> None:
        """Add the rows of ``inputs[..., features]``."""
        if inputs.dim() == 0 or inputs.shape[-1] != self.features:
            raise ValueError(f"inputs of shape {tuple(inputs.shape)} do not end in {self.features} features")
        rows = inputs.detach().reshape(-1, self.features).to(torch.float64)
        self.count += rows.shape[0]
        self.total += rows.sum(0)
        self.gram += rows.T @ rows

    def validate(self, in_features: int) -> None:
        """Raise ValueError unless these statistics are non-empty and have ``in_features`` features."""
        if self.count == 0:
            raise ValueError("calibration statistics are empty: update() them with some inputs first")
        if self.features != in_features:
            raise ValueError(f"statistics have {self.features} features, the weight takes {in_features}")

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def second_moment(self) -> torch.Tensor:
        """``C = XᵀX/n``."""
        return self.gram / self.count

    @property
    def covariance(self) -> torch.Tensor:
        """The centred covariance ``C − μμᵀ``."""
        mean = self.mean
        return self.second_moment - torch.outer(mean, mean)


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix; negative rounding noise is clipped to 0."""
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def check_rank(rank: int, rows: int, cols: int) -> None:
    if not isinstance(rank, int) or not 1 <= rank <= min(rows, cols):
        raise ValueError(f"rank must be an integer in [1, {min(rows, cols)}] for a {rows}x{cols} matrix, got {rank!r}")


def balanced(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite ``left·right`` (rank ≤ r) as ``(U√Σ)·(√ΣVᵀ)``: the same product, both factors of equal scale."""
    q_left, r_left = torch.linalg.qr(left)
    q_right, r_right = torch.linalg.qr(right.T)
    u, s, vh = torch.linalg.svd(r_left @ r_right.T)
    root = s.sqrt()
    return (q_left @ u) * root, root[:, None] * (vh @ q_right.T)


def low_rank_network(method: str, params: dict, left: torch.Tensor, right: torch.Tensor,
                     trailing: list[tuple[str, ...]], dtype: torch.dtype) -> FactorNetwork:
    """``W[o,i] = U[o,r]·V[r,i]`` as a FactorNetwork (``trailing``: empty groups of a 1×1 conv kernel)."""
    (o, r), i = left.shape, right.shape[1]
    return FactorNetwork(method, params, [left.to(dtype), right.to(dtype)], ["or", "ri"],
                         [("o",), ("i",), *trailing], {"o": o, "r": r, "i": i})


def truncated_svd(weight: torch.Tensor, rank: int) -> FactorNetwork:
    """The best rank-``rank`` approximation of the weight in Frobenius norm."""
    matrix, trailing = as_matrix(weight)
    check_rank(rank, *matrix.shape)
    u, s, vh = torch.linalg.svd(matrix.to(working_dtype(weight)), full_matrices=False)
    root = s[:rank].sqrt()
    return low_rank_network("svd", {"rank": rank}, u[:, :rank] * root, root[:, None] * vh[:rank], trailing,
                            weight.dtype)


def _top_output_directions(matrix: torch.Tensor, input_moment: torch.Tensor, rank: int) -> torch.Tensor:
    """The top-``rank`` eigenvectors of the output moment ``W·C·Wᵀ`` (= left singular vectors of ``W·C^{1/2}``).

    Computed from whichever side is smaller: the o×o output moment, or ``C^{1/2}`` (i×i) and ``W·C^{1/2}``.
    """
    full = matrix.to(torch.float64)
    if full.shape[0] <= full.shape[1]:
        _, vectors = torch.linalg.eigh(full @ input_moment @ full.T)  # ascending eigenvalues
        return vectors[:, -rank:].flip(1)
    u, _, _ = torch.linalg.svd(full @ psd_sqrt(input_moment), full_matrices=False)
    return u[:, :rank]


def activation_aware_svd(weight: torch.Tensor, stats: CalibrationStats, rank: int) -> FactorNetwork:
    """The rank-``rank`` ``W_r`` minimising ``‖XWᵀ − XW_rᵀ‖_F`` on the calibration inputs (see the module doc)."""
    matrix, trailing = as_matrix(weight)
    check_rank(rank, *matrix.shape)
    stats.validate(matrix.shape[1])
    basis = _top_output_directions(matrix, stats.second_moment, rank)
    left, right = balanced(basis, basis.T @ matrix.to(torch.float64))
    return low_rank_network("asvd", {"rank": rank}, left, right, trailing, weight.dtype)


def output_projection(weight: torch.Tensor, stats: CalibrationStats, rank: int,
                      bias: torch.Tensor | None = None) -> tuple[FactorNetwork, torch.Tensor]:
    """AFM: project the layer's outputs onto their top-``rank`` principal components.

    Returns the factors of ``U Uᵀ W`` and the bias that replaces the layer's (``b + (I − U Uᵀ) W μ_x``, so that the
    discarded components keep their mean); a layer without a bias gets one.
    """
    matrix, trailing = as_matrix(weight)
    check_rank(rank, *matrix.shape)
    stats.validate(matrix.shape[1])
    if bias is not None and tuple(bias.shape) != (matrix.shape[0],):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match {matrix.shape[0]} outputs")
    full = matrix.to(torch.float64)
    basis = _top_output_directions(full, stats.covariance, rank)
    projected = basis.T @ full
    mean_out = full @ stats.mean
    new_bias = mean_out - basis @ (basis.T @ mean_out)
    if bias is not None:
        new_bias = new_bias + bias.to(torch.float64)
    left, right = balanced(basis, projected)
    network = low_rank_network("afm", {"rank": rank}, left, right, trailing, weight.dtype)
    return network, new_bias.to(weight.dtype)


def pivoted_qr_indices(vectors: torch.Tensor, count: int) -> list[int]:
    """Q-DEIM: the ``count`` rows of ``vectors[n, count]`` that column-pivoted QR of ``vectorsᵀ`` selects."""
    residual = vectors.T.clone()
    picks: list[int] = []
    for _ in range(count):
        norms = (residual * residual).sum(0)
        norms[picks] = -1.0
        pick = int(norms.argmax())
        picks.append(pick)
        direction = residual[:, pick] / residual[:, pick].norm()
        residual -= torch.outer(direction, direction @ residual)
    return picks


def cur(weight: torch.Tensor, stats: CalibrationStats, rank: int) -> FactorNetwork:
    """``W ≈ W[:,J]·M·W[I,:]`` with ``rank`` activation-weighted rows I and columns J (see the module doc).

    The factors are ``[W[:,J] (o×r), M (r×r), W[I,:] (r×i)]``; ``params`` records ``rows`` and ``cols``.
    """
    matrix, trailing = as_matrix(weight)
    check_rank(rank, *matrix.shape)
    stats.validate(matrix.shape[1])
    full = matrix.to(torch.float64)
    moment = stats.second_moment
    scaled = full * moment.diagonal().clamp(min=0).sqrt()
    u, _, vh = torch.linalg.svd(scaled, full_matrices=False)
    rows = pivoted_qr_indices(u[:, :rank], rank)
    cols = pivoted_qr_indices(vh[:rank].T, rank)
    columns, selected_rows = full[:, cols], full[rows, :]
    # W[:,J]⁺·(WS)·(RS)⁺ with R = W[I,:] and S = C^{1/2}; (RS)⁺ = S·Rᵀ·(R·C·Rᵀ)⁺ needs no square root.
    weighted_rows = moment @ selected_rows.T
    middle = torch.linalg.pinv(columns) @ (full @ weighted_rows) @ torch.linalg.pinv(selected_rows @ weighted_rows)
    o, i = full.shape
    factors = [t.to(weight.dtype) for t in (columns, middle, selected_rows)]
    return FactorNetwork("cur", {"rank": rank, "rows": rows, "cols": cols}, factors, ["or", "rs", "si"],
                         [("o",), ("i",), *trailing], {"o": o, "r": rank, "s": rank, "i": i})
