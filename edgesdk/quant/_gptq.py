"""GPTQ-style quantization: column-by-column rounding with error feedback.

Each column's rounding error is spread over the not-yet-quantized columns through the
inverse Hessian of the layer's calibration inputs (H = X^T X), which minimizes the
output error ||X W^T - X Q^T|| rather than the weight error.  Block scales (and mins)
are chosen when a block starts, from the already-updated weights (Frantar et al., 2022).
"""

from __future__ import annotations

import numpy as np

from .._errors import QuantizationError

__all__ = ["gptq_codes"]


def _inv_chol_upper(h: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U), as GPTQ uses it."""
    lower = np.linalg.cholesky(h)
    hinv = np.linalg.inv(lower)
    hinv = hinv.T @ hinv
    return np.linalg.cholesky(hinv).T


def gptq_codes(w: np.ndarray, calib: np.ndarray, bits: int, scheme: str, bs: int, damp: float, params_fn, assign_fn):
    """Returns codes (N, K) uint8 and per-block fp16 d (N, nb), m (N, nb) | None.

    params_fn(block (N, 1, bs)) -> (d16 (N,1), m16 | None) picks a block's parameters;
    assign_fn(cols (N, 1, c), d16, m16) -> (codes, dequantized) rounds columns to them.
    """
    n, k = w.shape
    x = np.asarray(calib, np.float64).reshape(-1, k)
    if x.shape[0] < 1 or not np.isfinite(x).all():
        raise QuantizationError("gptq needs finite calibration activations (T, K)")
    h = x.T @ x / x.shape[0]
    dead = np.diag(h) == 0
    w = w.astype(np.float64).copy()
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += np.eye(k) * (damp * float(np.mean(np.diag(h))))
    try:
        u = _inv_chol_upper(h)
    except np.linalg.LinAlgError:
        raise QuantizationError("calibration Hessian is not positive definite; raise damp") from None
    nb = -(-k // bs)
    codes = np.zeros((n, k), np.uint8)
    d_all = np.zeros((n, nb), np.float16)
    m_all = np.zeros((n, nb), np.float16) if scheme == "asym" else None
    for b in range(nb):
        j0, j1 = b * bs, min(k, (b + 1) * bs)
        blk = np.full((n, 1, bs), np.nan, np.float32)
        blk[:, 0, : j1 - j0] = w[:, j0:j1]
        d16, m16 = params_fn(blk)
        d_all[:, b] = d16[:, 0]
        if m_all is not None:
            m_all[:, b] = m16[:, 0]
        # lazy batch: errors of this block are applied to later blocks in one matmul
        err_blk = np.zeros((n, j1 - j0))
        for j in range(j0, j1):
            col = w[:, j].astype(np.float32)[:, None, None]
            c, q = assign_fn(col, d16, m16)
            codes[:, j] = c[:, 0, 0]
            e = (w[:, j] - q[:, 0, 0].astype(np.float64)) / u[j, j]
            w[:, j + 1 : j1] -= np.outer(e, u[j, j + 1 : j1])
            err_blk[:, j - j0] = e
        w[:, j1:] -= err_blk @ u[j0:j1, j1:]
    return codes, d_all, m_all
