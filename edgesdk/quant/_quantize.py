"""Block quantization: round-to-nearest and MSE-optimal clipping ("mse").

Conventions match GGUF so the same tensors import/export losslessly:
4-bit sym = Q4_0 (d = v/-8 where v is the block's value of largest magnitude, codes 0..15
with offset 8), 4-bit asym = Q4_1 (d = (max-min)/15, m = min), 8-bit sym = Q8_0
(d = amax/127).  Scales are rounded to fp16 *before* the codes are chosen, so the codes
are optimal for the scale actually stored.
"""

from __future__ import annotations

import logging

import numpy as np

from .._errors import QuantizationError
from ._gptq import gptq_codes
from ._tensor import QuantizedTensor, check_block_size, pack_codes, pack_rows

__all__ = ["quantize"]

log = logging.getLogger(__name__)

_F16_MAX = 65504.0


def _blocks(w: np.ndarray, bs: int) -> np.ndarray:
    n, k = w.shape
    nb = -(-k // bs)
    if nb * bs == k:
        return w.reshape(n, nb, bs)
    wp = np.full((n, nb * bs), np.nan, dtype=np.float32)
    wp[:, :k] = w
    return wp.reshape(n, nb, bs)


def _f16(v: np.ndarray) -> np.ndarray:
    if np.any(np.abs(v) > _F16_MAX):
        raise QuantizationError("a block scale exceeds the fp16 range (|w| too large for fp16 scales)")
    return v.astype(np.float16)


def _f16_scale(d: np.ndarray) -> np.ndarray:
    """fp16 scale no smaller in magnitude than d: rounding the scale down would push the
    block's extreme value past the largest code and clip it (fp16 is coarse for tiny
    scales), so round away from zero when nearest-rounding went toward it."""
    d = np.asarray(d, np.float32)
    h = _f16(d)
    low = np.abs(h.astype(np.float32)) < np.abs(d)
    if low.any():
        h = np.where(low, np.nextafter(h, np.copysign(np.float16(np.inf), h).astype(np.float16)), h)
    return h.astype(np.float16)


def _inv(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)


def _params(wb: np.ndarray, valid: np.ndarray, bits: int, scheme: str, alpha):
    """Block scale d (and min m) from the block range shrunk by alpha, rounded to fp16."""
    x = np.where(valid, wb, 0).astype(np.float32)
    if scheme == "asym":
        lo = np.where(valid, wb, np.inf).min(axis=-1) * alpha
        hi = np.where(valid, wb, -np.inf).max(axis=-1) * alpha
        return _f16_scale((hi - lo) / 15.0), _f16(lo)
    if bits == 4:
        idx = np.abs(x).argmax(axis=-1)[..., None]
        vmax = np.take_along_axis(x, idx, axis=-1)[..., 0]
        return _f16_scale(vmax * alpha / -8.0), None
    return _f16_scale(np.abs(x).max(axis=-1) * alpha / 127.0), None


def _assign(wb, valid, bits, scheme, d16, m16):
    """Nearest codes for the stored (fp16) parameters: codes (8-bit biased), dequantized blocks."""
    x = np.where(valid, wb, 0).astype(np.float32)
    d = d16.astype(np.float32)[..., None]
    if scheme == "asym":
        m = m16.astype(np.float32)[..., None]
        q = np.clip(np.rint((x - m) * _inv(d)), 0, 15)
        deq = q * d + m
        return q.astype(np.uint8), np.where(valid, deq, 0).astype(np.float32)
    if bits == 4:
        q = np.clip(np.rint(x * _inv(d)) + 8, 0, 15)
        return q.astype(np.uint8), ((q - 8) * d).astype(np.float32)
    q = np.clip(np.rint(x * _inv(d)), -127, 127)
    return (q + 128).astype(np.uint8), (q * d).astype(np.float32)


def _quant(wb: np.ndarray, bits: int, scheme: str, alpha) -> tuple:
    valid = ~np.isnan(wb)
    d16, m16 = _params(wb, valid, bits, scheme, alpha)
    codes, deq = _assign(wb, valid, bits, scheme, d16, m16)
    return codes, d16, m16, deq


def _refit(wb, valid, h, bits, scheme, codes):
    """Weighted least-squares (d, m) for fixed codes: the optimal affine map onto the grid."""
    x = np.where(valid, wb, 0).astype(np.float64)
    hw = np.where(valid, h, 0).astype(np.float64)
    q = codes.astype(np.float64) - (8 if (bits == 4 and scheme == "sym") else (128 if bits == 8 else 0))
    sw, sq, sqq = hw.sum(-1), (hw * q).sum(-1), (hw * q * q).sum(-1)
    sx, sqx = (hw * x).sum(-1), (hw * q * x).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == "asym":
            det = sw * sqq - sq * sq
            d = np.where(det > 0, (sw * sqx - sq * sx) / det, 0.0)
            m = np.where(det > 0, (sqq * sx - sq * sqx) / det, np.where(sw > 0, sx / sw, 0.0))
            return _f16(d), _f16(m)
        d = np.where(sqq > 0, sqx / sqq, 0.0)
        return _f16(d), None


def quantize(
    w,
    bits: int = 4,
    block_size: int = 32,
    scheme: str = "sym",
    method: str = "rtn",
    *,
    calib: np.ndarray | None = None,
    grid: int = 24,
    min_alpha: float = 0.5,
    damp: float = 0.01,
) -> QuantizedTensor:
    """Quantize a float weight matrix W (N, K) block-wise along K.

    block_size: 32, 64, 128 (any multiple of 32) or >= K for per-channel.
    method: "rtn" round-to-nearest on the full block range; "mse" searches a per-block
    clipping factor alpha in [min_alpha, 1] (``grid`` candidates) minimizing the block's
    squared error, weighted per column by mean(calib**2) when calibration activations
    ``calib`` (T, K) are given, i.e. minimizing the expected output error of y = x @ W.T;
    "gptq" rounds column by column and feeds each rounding error forward through the
    inverse Hessian of ``calib`` (required), with ``damp`` * mean(diag H) added to H.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.size == 0:
        raise QuantizationError(f"expected a non-empty 2-D weight (N, K), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise QuantizationError(f"expected a floating-point weight, got {w.dtype}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise QuantizationError("weight contains NaN or Inf")
    if bits not in (4, 8):
        raise QuantizationError(f"bits must be 4 or 8, got {bits}")
    if scheme not in ("sym", "asym") or (bits == 8 and scheme != "sym"):
        raise QuantizationError(f"unsupported scheme {scheme!r} for {bits}-bit (8-bit is sym only)")
    n, k = w.shape
    check_block_size(k, block_size)
    bs = min(block_size, k)
    wb = _blocks(w, bs)

    if method == "rtn":
        codes, d16, m16, _ = _quant(wb, bits, scheme, np.float32(1.0))
    elif method == "mse":
        if calib is not None:
            calib = np.asarray(calib, dtype=np.float32).reshape(-1, k)
            h = (calib.astype(np.float64) ** 2).mean(axis=0).astype(np.float32)
        else:
            h = np.ones(k, np.float32)
        hb = _blocks(h[None, :], bs)[0]
        hb = np.where(np.isnan(hb), 0, hb)
        ref = np.where(np.isnan(wb), 0, wb)
        best = None
        valid = ~np.isnan(wb)
        cands = []
        for a in np.linspace(1.0, min_alpha, grid, dtype=np.float32):
            c, d, m, _ = _quant(wb, bits, scheme, a)
            cands.append((d, m))
            # one least-squares refit of the scale (and min) for the chosen codes
            cands.append(_refit(wb, valid, hb, bits, scheme, c))
        for d, m in cands:
            c, deq = _assign(wb, valid, bits, scheme, d, m)
            err = (((deq - ref) ** 2) * hb).sum(axis=-1)
            if best is None:
                best = [err, c, d, m]
                continue
            better = err < best[0]
            best[0] = np.where(better, err, best[0])
            best[1] = np.where(better[..., None], c, best[1])
            best[2] = np.where(better, d, best[2])
            if m is not None:
                best[3] = np.where(better, m, best[3])
        _, codes, d16, m16 = best
    elif method == "gptq":
        if calib is None:
            raise QuantizationError("method='gptq' needs calibration activations: calib=(T, K)")

        def params_fn(blk):
            return _params(blk, ~np.isnan(blk), bits, scheme, np.float32(1.0))

        def assign_fn(cols, d16, m16):
            return _assign(cols, ~np.isnan(cols), bits, scheme, d16, m16)

        codes, d16, m16 = gptq_codes(w, calib, bits, scheme, bs, damp, params_fn, assign_fn)
    else:
        raise QuantizationError(f"unknown method {method!r} (rtn, mse, gptq)")

    codes = codes.reshape(n, -1)[:, :k]
    pad = 8 if (bits == 4 and scheme == "sym") else (128 if bits == 8 else 0)
    return QuantizedTensor(
        shape=(n, k),
        bits=bits,
        block_size=block_size if block_size < k else k,
        scheme=scheme,
        qdata=pack_codes(codes, bits, pad),
        scales=pack_rows(d16),
        mins=None if m16 is None else pack_rows(m16),
        source=method if calib is None else f"{method}+calib",
    )
