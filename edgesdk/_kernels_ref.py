"""numpy reference implementations of every C kernel (and the EDGESDK_KERNELS=numpy path)."""

from __future__ import annotations

import numpy as np

from .quant._tensor import BLOCKS, QuantizedTensor

__all__ = ["quantize_activations", "matmul_f32", "matmul_int8", "matmul_int8_exact"]


def quantize_activations(x: np.ndarray, block: int = 32):
    """Per-block int8 activations, bit-identical to the C quantizers (32: every matmul but K-quants';
    256: K-quant weights, whose activations share one scale per super-block like llama.cpp's Q8_K).

    Returns xq (M, Kp) int8, dx (M, S) float32 scales, cs (M, S) float32 = dx * sum(xq) per block.
    """
    x = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
    m, k = x.shape
    s = -(-k // block)
    xp = np.zeros((m, s * block), np.float32)
    xp[:, :k] = x
    xb = xp.reshape(m, s, block)
    amax = np.abs(xb).max(axis=-1)
    d = (amax / np.float32(127)).astype(np.float32)
    if block == 32:  # llama.cpp's Q8_0 stores the scale as fp16 (its Q8_K, per 256, as f32)
        d = np.where(d < 65504, d.astype(np.float16).astype(np.float32), d)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(xb * inv[..., None]), -127, 127).astype(np.int8)
    cs = (d * q.sum(axis=-1, dtype=np.int32).astype(np.float32)).astype(np.float32)
    return q.reshape(m, s * block), d, cs


def act_block(w: QuantizedTensor) -> int:
    """Elements per activation scale on the int8 path: 256 for K-quant (super-block) weights, else 32
    (the C kernels' rule, ek_matmul)."""
    return 256 if w.layout == BLOCKS and w.block_size >= 256 else 32


def matmul_f32(x: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """Exact path: x @ dequantize(W).T in float32 (BLAS)."""
    return np.asarray(x, np.float32) @ w.dequantize().T


def matmul_int8(x: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """int8-activation path, fast form: dequantized int8 activations times dequantized W.

    Mathematically equal to the integer-dot formula; differs only by float rounding.
    """
    x2 = np.asarray(x, np.float32).reshape(-1, w.shape[1])
    ab = act_block(w)
    xq, d, _ = quantize_activations(x2, ab)
    m = x2.shape[0]
    xd = (xq.reshape(m, -1, ab).astype(np.float32) * d[..., None]).reshape(m, -1)[:, : w.shape[1]]
    return xd @ w.dequantize().T


def matmul_int8_exact(x: np.ndarray, w: QuantizedTensor) -> np.ndarray:
    """int8-activation path evaluated as the C kernels do (integer block dots), in float64."""
    x2 = np.asarray(x, np.float32).reshape(-1, w.shape[1])
    n, k = w.shape
    if w.layout == BLOCKS:
        ab = act_block(w)
        xq, d, _ = quantize_activations(x2, ab)
        return _blocks_int8_exact(xq, d, w, ab)
    xq, d, cs = quantize_activations(x2)
    m, kp = xq.shape
    s = kp // 32
    codes = np.zeros((n, kp), np.int64)
    codes[:, :k] = w.codes()
    idot = np.einsum("msk,nsk->mns", xq.reshape(m, s, 32).astype(np.int64), codes.reshape(n, s, 32))
    spb = s if w.block_size >= k else w.block_size // 32
    blk = np.arange(s) // spb
    dw = w.scale_matrix().astype(np.float64)[:, blk]  # (N, S)
    cw = -w.offset * dw if w.mins is None else w.min_matrix().astype(np.float64)[:, blk]
    y = (idot * dw[None] * d[:, None, :].astype(np.float64)).sum(-1)
    y += (cw[None] * cs[:, None, :].astype(np.float64)).sum(-1)
    return y


def _blocks_int8_exact(xq: np.ndarray, d: np.ndarray, w: QuantizedTensor, ab: int) -> np.ndarray:
    """GGUF-block weights: per sub-block scale * dx * sum(code * xq) + min * dx * sum(xq), in float64."""
    n, k = w.shape
    m = xq.shape[0]
    sub = k // w.n_blocks
    j = k // sub
    xs = xq.reshape(m, j, sub).astype(np.int64)
    idot = np.einsum("mje,nje->mnj", xs, w.codes().reshape(n, j, sub).astype(np.int64))
    dxs = d.astype(np.float64)[:, (np.arange(j) * sub) // ab]  # (M, J): each sub-block's dx
    y = (idot * w.scale_matrix().astype(np.float64)[None] * dxs[:, None, :]).sum(-1)
    mn = w.min_matrix()
    if mn is not None:
        y += ((dxs * xs.sum(-1))[:, None, :] * mn.astype(np.float64)[None]).sum(-1)
    return y
