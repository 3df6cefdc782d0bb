"""Quantization error reports: SQNR, max/mean absolute error, per block and per tensor."""

from __future__ import annotations

import attrs
import numpy as np

from .._errors import QuantizationError
from ._tensor import QuantizedTensor

__all__ = ["QuantErrorReport", "error_report", "sqnr_db"]


def sqnr_db(reference: np.ndarray, approx: np.ndarray, axis=None) -> np.ndarray | float:
    """10*log10(sum(ref^2) / sum((ref-approx)^2)); +inf when exact."""
    ref = np.asarray(reference, np.float64)
    err = ref - np.asarray(approx, np.float64)
    sig = (ref**2).sum(axis=axis)
    noise = (err**2).sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(sig / noise)
    out = np.where(noise == 0, np.inf, out)
    return float(out) if np.ndim(out) == 0 else out


@attrs.frozen(eq=False)
class QuantErrorReport:
    """Weight error of a QuantizedTensor against its float reference (and output error if x given)."""

    shape: tuple[int, int]
    bits: int
    block_size: int
    scheme: str
    bits_per_weight: float
    sqnr_db: float
    max_abs: float
    mean_abs: float
    rmse: float
    block_sqnr_db: np.ndarray = attrs.field(repr=False)  # (N, n_blocks)
    block_max_abs: np.ndarray = attrs.field(repr=False)  # (N, n_blocks)
    block_mean_abs: np.ndarray = attrs.field(repr=False)  # (N, n_blocks)
    output_sqnr_db: float | None = None
    output_max_abs: float | None = None

    @property
    def worst_block_sqnr_db(self) -> float:
        return float(np.min(self.block_sqnr_db))

    def summary(self) -> str:
        s = (
            f"{self.shape[0]}x{self.shape[1]} int{self.bits} {self.scheme} block {self.block_size} "
            f"({self.bits_per_weight:.2f} b/w): SQNR {self.sqnr_db:.2f} dB, max|e| {self.max_abs:.3g}, "
            f"mean|e| {self.mean_abs:.3g}, worst block {self.worst_block_sqnr_db:.2f} dB"
        )
        if self.output_sqnr_db is not None:
            s += f"; output SQNR {self.output_sqnr_db:.2f} dB"
        return s


def error_report(reference, qt: QuantizedTensor, x: np.ndarray | None = None) -> QuantErrorReport:
    """Compare qt.dequantize() with the float weight ``reference`` (N, K).

    With activations ``x`` (M, K), also reports the error of y = x @ W.T.
    """
    ref = np.asarray(reference, np.float32)
    if ref.shape != qt.shape:
        raise QuantizationError(f"reference shape {ref.shape} != quantized shape {qt.shape}")
    deq = qt.dequantize()
    err = np.abs(ref - deq)
    n, k = qt.shape
    bs = min(qt.block_size, k)
    nb = qt.n_blocks
    pad = nb * bs - k

    def blocks(a, fill=0.0):
        return np.pad(a, ((0, 0), (0, pad)), constant_values=fill).reshape(n, nb, bs)

    rb, db = blocks(ref), blocks(deq)
    eb = blocks(err)
    counts = np.full(nb, bs, np.float64)
    counts[-1] = bs - pad
    out_sqnr = out_max = None
    if x is not None:
        xa = np.asarray(x, np.float32).reshape(-1, k)
        y_ref = xa.astype(np.float64) @ ref.T.astype(np.float64)
        y_q = xa.astype(np.float64) @ deq.T.astype(np.float64)
        out_sqnr = sqnr_db(y_ref, y_q)
        out_max = float(np.abs(y_ref - y_q).max())
    return QuantErrorReport(
        shape=qt.shape,
        bits=qt.bits,
        block_size=qt.block_size,
        scheme=qt.scheme,
        bits_per_weight=qt.bits_per_weight,
        sqnr_db=sqnr_db(ref, deq),
        max_abs=float(err.max()),
        mean_abs=float(err.mean()),
        rmse=float(np.sqrt((err.astype(np.float64) ** 2).mean())),
        block_sqnr_db=sqnr_db(rb, db, axis=-1),
        block_max_abs=eb.max(axis=-1),
        block_mean_abs=eb.sum(axis=-1) / counts,
        output_sqnr_db=out_sqnr,
        output_max_abs=out_max,
    )
