"""GGUF block encoders: K-quants (Q4_K, Q5_K, Q6_K) and the 32-element types, as llama.cpp writes them.

The K-quant encoders follow ggml's reference quantizers (``quantize_row_q4_K_ref`` & co., what
``llama-quantize`` runs when no importance matrix is given), vectorized over all sub-blocks at once:

- Q4_K / Q5_K: each 32-element sub-block gets an affine fit ``x ~ scale * q - min`` by a search over
  candidate inverse scales with a weighted least-squares refit per candidate (``make_qkx2_quants``,
  weights ``rms(sub-block) + |x|``); the 8 scales and 8 mins of a 256-element super-block are then
  themselves quantized to 6 bits against fp16 ``d`` / ``dmin``, and the codes re-chosen for the
  stored scales.
- Q6_K: each 16-element sub-block gets a symmetric scale from a search over 19 candidates
  maximizing the x^2-weighted fit (``make_qx_quants``), then the 16 scales go to int8 against an
  fp16 ``d``, and the codes are re-chosen.

Every float operation is done in float32 in the reference's order, and every sum over a sub-block
runs element by element (a reduction over axis 0 of a (elements, sub-blocks) array, which numpy
performs sequentially, unlike its pairwise sum along a contiguous axis), so the blocks equal
llama.cpp's byte for byte (tests/test_kquant.py checks this against libggml). The 32-element types
(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are ggml's round-to-nearest reference encoders; unlike gguf-py's,
they also reproduce the sign of a zero scale or min (an all-zero block's d is -0.0 in Q4_0).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._errors import QuantizationError
from ._tensor import QuantizedTensor
from ._types import quant_type

__all__ = ["ENCODERS", "encode_blocks", "kquantize"]

_F = np.float32
_EPS = _F(1e-15)  # ggml's GROUP_MAX_EPS: a group whose largest |x| is below this is all zero

# Blocks per work item: small enough that a chunk's (32, n) float32 temporaries stay in L2, large
# enough that numpy's per-call overhead is amortized over thousands of sub-blocks.
_CHUNK_ELEMENTS = 1 << 16


def _codes(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """ggml's nearest_int (round half to even) clamped to [lo, hi], as float32.

    Clamping first is the same for integer bounds; fmin/fmax also map NaN/inf (a degenerate group
    divided by a zero range) to a bound instead of an undefined integer cast."""
    return np.rint(np.fmax(np.fmin(v, _F(hi)), _F(lo)))


def _qkx2(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """make_qkx2_quants over the columns of x (elements, groups): (codes, scale, the_min).

    The search updates ``mn`` whenever a candidate wins and later candidates measure from it, as
    the reference does, so the steps run in order (each one vectorized over every group)."""
    mn = np.minimum(x.min(axis=0), _F(0))
    mx = x.max(axis=0)
    sum_w = w.sum(axis=0)
    sum_x = (w * x).sum(axis=0)
    flat = mx == mn
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = _F(nmax) / (mx - mn)
        scale = _F(1) / iscale
        L = _codes(iscale * (x - mn), 0, nmax)
        diff = scale * L + mn - x
        best = (w * (diff * diff)).sum(axis=0)
        for step in range(nstep + 1):
            iscale = (_F(rmin) + _F(rdelta) * _F(step) + _F(nmax)) / (mx - mn)
            la = _codes(iscale * (x - mn), 0, nmax)
            wl = w * la
            sum_l = wl.sum(axis=0)
            sum_l2 = (wl * la).sum(axis=0)
            sum_xl = (wl * x).sum(axis=0)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            pos = this_min > 0
            this_min = np.where(pos, _F(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            diff = this_scale * la + this_min - x
            cur = (w * (diff * diff)).sum(axis=0)
            win = (det > 0) & (cur < best) & ~flat
            L = np.where(win, la, L)
            best = np.where(win, cur, best)
            scale = np.where(win, this_scale, scale)
            mn = np.where(win, this_min, mn)
    L = np.where(flat, _F(0), L)
    scale = np.where(flat, _F(0), scale)
    return L, scale, -mn


def _qx(x: np.ndarray, nmax: int):
    """make_qx_quants with rmse_type 1 and no importance weights (weights x^2) over the columns of
    x (elements, groups): (codes offset by nmax, scale)."""
    ax = np.abs(x)
    top = ax.argmax(axis=0)  # the first largest |x|, as the reference's strict '>' scan keeps
    cols = np.arange(x.shape[1])
    mx = x[top, cols]
    zero = ax[top, cols] < _EPS
    mx = np.where(zero, _F(1), mx)
    w = x * x
    wx = w * x

    def fit(iscale):
        lv = _codes(iscale * x, -nmax, nmax - 1)
        return lv, (wx * lv).sum(axis=0), ((w * lv) * lv).sum(axis=0)

    with np.errstate(divide="ignore", invalid="ignore"):
        lv, sumlx, suml2 = fit(_F(-nmax) / mx)
        L = lv + _F(nmax)
        scale = np.where(suml2 != 0, sumlx / suml2, _F(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            lv, sumlx, suml2 = fit(-(_F(nmax) + _F(0.1) * _F(step)) / mx)
            win = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            new = sumlx / suml2
            L = np.where(win, lv + _F(nmax), L)
            scale = np.where(win, new, scale)
            best = np.where(win, new * sumlx, best)
    return np.where(zero, _F(0), L), np.where(zero, _F(0), scale)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """(n,) float32 -> (n, 2) uint8 of its fp16 (round to nearest even, as GGML_FP32_TO_FP16)."""
    return np.ascontiguousarray(v.astype(np.float16)).view(np.uint8).reshape(-1, 2)


def _sub_columns(xb: np.ndarray, size: int) -> np.ndarray:
    """Super-blocks (nb, 256) -> (size, nb * 256 / size): one column per sub-block."""
    return np.ascontiguousarray(xb.reshape(-1, size).T)


def _q45_k(xb: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Shared Q4_K/Q5_K encoding: (codes (nb, 256) uint8, packed scales (nb, 12), fp16 d, fp16 dmin)."""
    nb = xb.shape[0]
    x = _sub_columns(xb, 32)
    av_x = np.sqrt((x * x).sum(axis=0) / _F(32))
    w = av_x + np.abs(x)
    L, scale, mins = _qkx2(x, w, nmax, rmin, rdelta, nstep)
    scales = scale.reshape(nb, 8)
    mins = mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), _F(0))
    max_min = np.maximum(mins.max(axis=1), _F(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F(63) / max_scale, _F(0))
        inv_min = np.where(max_min > 0, _F(63) / max_min, _F(0))
    # nearest_int stored to uint8 (mod 256), then capped at 63
    ls = np.minimum(np.rint(inv_scale[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(np.rint(inv_min[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    d16 = (max_scale / _F(63)).astype(np.float16)
    m16 = (max_min / _F(63)).astype(np.float16)
    d = d16.astype(np.float32)[:, None] * ls.astype(np.float32)
    dm = m16.astype(np.float32)[:, None] * lm.astype(np.float32)
    xs = xb.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = _codes((xs + dm[..., None]) / d[..., None], 0, nmax)
    q = np.where((d != 0)[..., None], q, L.T.reshape(nb, 8, 32)).astype(np.uint8)
    packed = np.empty((nb, 12), np.uint8)
    packed[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    return q.reshape(nb, 256), packed, d16, m16


def _low_nibbles_k(q: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs: per 64 elements, 32 bytes holding element l (low nibble) and l+32 (high)."""
    c = (q & 0x0F).reshape(-1, 4, 2, 32)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(-1, 128)


def _check_scales(name: str, *halves: np.ndarray) -> None:
    for h in halves:
        if not np.isfinite(h).all():
            raise QuantizationError(f"a {name} block scale overflows fp16 (|w| too large for {name})")


def _q4_k(xb: np.ndarray) -> np.ndarray:
    q, packed, d16, m16 = _q45_k(xb, 15, -1.0, 0.1, 20)
    _check_scales("Q4_K", d16, m16)
    return np.concatenate([_f16_bytes(d16), _f16_bytes(m16), packed, _low_nibbles_k(q)], axis=1)


def _q5_k(xb: np.ndarray) -> np.ndarray:
    q, packed, d16, m16 = _q45_k(xb, 31, -0.5, 0.1, 15)
    _check_scales("Q5_K", d16, m16)
    hi = (q >> 4).reshape(-1, 8, 32) << np.arange(8, dtype=np.uint8)[None, :, None]
    qh = np.bitwise_or.reduce(hi, axis=1)
    return np.concatenate([_f16_bytes(d16), _f16_bytes(m16), packed, qh, _low_nibbles_k(q)], axis=1)


def _q6_k(xb: np.ndarray) -> np.ndarray:
    nb = xb.shape[0]
    L, scale = _qx(_sub_columns(xb, 16), 32)
    scales = scale.reshape(nb, 16)
    top = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), top]
    zero = np.abs(max_scale) < _EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(zero, _F(0), _F(-128) / np.where(zero, _F(1), max_scale))
        d16 = np.where(zero, _F(0), _F(1) / iscale).astype(np.float16)
    _check_scales("Q6_K", d16)
    sc = np.minimum(np.rint(iscale[:, None] * scales), _F(127)).astype(np.int8)
    d = d16.astype(np.float32)[:, None] * sc.astype(np.float32)
    xs = xb.reshape(nb, 16, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = _codes(xs / d[..., None], -32, 31) + _F(32)
    q = np.where((d != 0)[..., None], q, L.T.reshape(nb, 16, 16)).astype(np.uint8).reshape(nb, 2, 4, 32)
    lo = q & 0x0F
    ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)
    qh = np.bitwise_or.reduce((q >> 4) << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None], axis=2)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), _f16_bytes(d16)], axis=1)
    out[zero] = 0
    return out


def _roundf(v: np.ndarray) -> np.ndarray:
    """C roundf (half away from zero), exactly: floor(|v| + 0.5) rounds 0.49999997 up."""
    a = np.abs(v)
    f = np.floor(a)
    return np.copysign(f + np.floor(_F(2) * (a - f)), v)


def _signed_max(xb: np.ndarray) -> np.ndarray:
    """The first value of largest |x| per block, +0.0 for an all-zero block (the reference's scan
    starts from 0.0 and keeps the first strictly larger one, so a -0.0 never wins)."""
    ax = np.abs(xb)
    top = ax.argmax(axis=1)
    v = xb[np.arange(xb.shape[0]), top]
    return np.where(ax[np.arange(xb.shape[0]), top] > 0, v, _F(0))


def _first_extremes(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) per block as the first occurrence, which fixes the sign of a zero extreme."""
    rows = np.arange(xb.shape[0])
    return xb[rows, xb.argmin(axis=1)], xb[rows, xb.argmax(axis=1)]


def _inv(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, _F(1) / d, _F(0)).astype(np.float32)


def _pair_nibbles(q: np.ndarray) -> np.ndarray:
    """32-element types: byte j holds element j (low nibble) and j+16 (high)."""
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1 qh: bit j of a little-endian uint32 is element j's fifth bit."""
    return np.packbits((q >> 4).astype(np.uint8), axis=1, bitorder="little")


def _q8_0(xb: np.ndarray) -> np.ndarray:
    d = np.abs(xb).max(axis=1) / _F(127)
    d16 = d.astype(np.float16)
    _check_scales("Q8_0", d16)
    q = _roundf(xb * _inv(d)[:, None]).astype(np.int8)
    return np.concatenate([_f16_bytes(d16), q.view(np.uint8)], axis=1)


def _sym_32(xb: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 (half 8) / Q5_0 (half 16): codes (nb, 32) uint8 and the fp16 d."""
    d = _signed_max(xb) / _F(-half)
    d16 = d.astype(np.float16)
    q = np.trunc(xb * _inv(d)[:, None] + _F(half + 0.5))
    return np.clip(q, 0, 2 * half - 1).astype(np.uint8), d16


def _asym_32(xb: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 (15) / Q5_1 (31): codes, fp16 d, fp16 m (= the block minimum)."""
    mn, mx = _first_extremes(xb)
    d = (mx - mn) / _F(levels)
    q = np.trunc((xb - mn[:, None]) * _inv(d)[:, None] + _F(0.5))
    return np.clip(q, 0, levels).astype(np.uint8), d.astype(np.float16), mn.astype(np.float16)


def _q4_0(xb):
    q, d16 = _sym_32(xb, 8)
    _check_scales("Q4_0", d16)
    return np.concatenate([_f16_bytes(d16), _pair_nibbles(q)], axis=1)


def _q5_0(xb):
    q, d16 = _sym_32(xb, 16)
    _check_scales("Q5_0", d16)
    return np.concatenate([_f16_bytes(d16), _fifth_bits(q), _pair_nibbles(q)], axis=1)


def _q4_1(xb):
    q, d16, m16 = _asym_32(xb, 15)
    _check_scales("Q4_1", d16, m16)
    return np.concatenate([_f16_bytes(d16), _f16_bytes(m16), _pair_nibbles(q)], axis=1)


def _q5_1(xb):
    q, d16, m16 = _asym_32(xb, 31)
    _check_scales("Q5_1", d16, m16)
    return np.concatenate([_f16_bytes(d16), _f16_bytes(m16), _fifth_bits(q), _pair_nibbles(q)], axis=1)


#: Encoders by type name: float32 blocks (n, block) -> GGUF block bytes (n, bytes per block).
ENCODERS = {
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
    "Q8_0": _q8_0,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
}


def encode_blocks(w, qtype, *, threads: int | None = None) -> np.ndarray:
    """GGUF block bytes of float values ``w`` (any shape; the last axis a multiple of the block).

    Returns uint8 (rows, K // block * bytes per block) where rows is the product of the leading
    axes. NaN/Inf input, a type without an encoder, a row length that is not a whole number of
    blocks, or values whose block scale overflows fp16 raise QuantizationError.
    """
    t = quant_type(qtype)
    enc = ENCODERS.get(t.name)
    if enc is None:
        raise QuantizationError(f"no encoder for {t.name}; encodable types: {', '.join(ENCODERS)}")
    w = np.asarray(w)
    if w.ndim == 0 or w.size == 0:
        raise QuantizationError(f"expected a non-empty array, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise QuantizationError(f"expected floating-point values, got {w.dtype}")
    k = w.shape[-1]
    if k % t.block:
        raise QuantizationError(f"{t.name} needs rows whose length is a multiple of {t.block}, got {k}")
    x = np.ascontiguousarray(w, dtype=np.float32).reshape(-1, t.block)
    if not np.isfinite(x).all():
        raise QuantizationError(f"cannot quantize to {t.name}: the values contain NaN or Inf")
    nblk = x.shape[0]
    out = np.empty((nblk, t.nbytes), np.uint8)
    step = max(1, _CHUNK_ELEMENTS // t.block)
    spans = [(a, min(nblk, a + step)) for a in range(0, nblk, step)]

    def run(span):
        a, b = span
        # fp16 overflow becomes inf quietly here and is reported by the scale check as an error;
        # errstate is per thread, so it is set inside the worker
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out[a:b] = enc(x[a:b])

    threads = threads or min(8, os.cpu_count() or 1)
    if threads > 1 and len(spans) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, spans))
    else:
        for s in spans:
            run(s)
    return out.reshape(int(np.prod(w.shape[:-1], dtype=np.int64)), -1)


def kquantize(w, qtype, *, threads: int | None = None) -> QuantizedTensor:
    """Quantize a float weight W (N, K) to GGUF blocks of ``qtype`` (layout "gguf"), as llama.cpp."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise QuantizationError(f"expected a 2-D weight (N, K), got shape {w.shape}")
    t = quant_type(qtype)
    raw = encode_blocks(w, t, threads=threads)
    if t.name in ("Q4_0", "Q4_1", "Q8_0"):
        from ._gguf import from_gguf_bytes

        return from_gguf_bytes(raw, t.name, w.shape, source=f"kquant:{t.name}")
    return QuantizedTensor.from_blocks(raw, t.name, w.shape, source=f"kquant:{t.name}")
