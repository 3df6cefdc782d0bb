"""Linear layers over memory-mapped GGUF tensors.

Weights stay as the file's packed bytes. Two implementations compute ``y = x @ W.T``:

- ``"numpy"``: the reference. Dequantizes the layer's blocks to fp32 (a few MB, one layer at a
  time) and uses numpy's matmul. Slow, simple, obviously right.
- ``"kernels"``: :func:`edgesdk.kernels.matmul` on the packed blocks (cffi C, int8 activations).

:func:`kernel_impl` picks one from ``EDGESDK_KERNELS`` (``numpy`` forces the reference).
"""

from __future__ import annotations

import importlib
import logging
import os

import numpy as np

from .._errors import UnsupportedModelError

__all__ = ["Linear", "Embedding", "dequantize_rows", "kernel_impl", "vector"]

log = logging.getLogger(__name__)

# Block layouts: (elements per block, bytes per block)
_BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q8_0": (32, 34), "F16": (1, 2), "F32": (1, 4)}
# Rows dequantized at once by the reference path: bounds its scratch memory (~ROWS*K*4 bytes).
_CHUNK_ROWS = 4096


def kernel_impl() -> str:
    """``"kernels"`` when ``edgesdk.kernels`` is importable and not disabled by ``EDGESDK_KERNELS=numpy``."""
    if os.environ.get("EDGESDK_KERNELS", "auto").lower() == "numpy":
        return "numpy"
    try:
        importlib.import_module("edgesdk.kernels")
    except ImportError:
        return "numpy"
    return "kernels"


def dequantize_rows(raw: np.ndarray, qtype: str, k: int) -> np.ndarray:
    """fp32 rows from packed GGUF rows ``raw`` (uint8, shape (n, row_bytes))."""
    n = raw.shape[0]
    if qtype == "F32":
        return raw.view(np.float32).reshape(n, k)
    if qtype == "F16":
        return raw.view(np.float16).reshape(n, k).astype(np.float32)
    blk, nbytes = _BLOCK[qtype]
    b = raw.reshape(n, k // blk, nbytes)
    out = np.empty((n, k // blk, blk), np.float32)
    d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
    if qtype == "Q8_0":
        np.multiply(b[..., 2:].view(np.int8), d, out=out)
        return out.reshape(n, k)
    qs = b[..., -16:]
    out[..., :16] = qs & 0x0F
    out[..., 16:] = qs >> 4
    if qtype == "Q4_0":
        out -= 8.0
        out *= d
    else:
        out *= d
        out += b[..., 2:4].copy().view(np.float16).astype(np.float32)
    return out.reshape(n, k)


def _check(tensor) -> tuple[str, int, int]:
    qtype = tensor.tensor_type.name
    if qtype not in _BLOCK:
        raise UnsupportedModelError("", f"tensor {tensor.name!r} has unsupported type {qtype}")
    k, n = (int(s) for s in tensor.shape[:2]) if len(tensor.shape) > 1 else (int(tensor.shape[0]), 1)
    return qtype, n, k


class Linear:
    """``y = x @ W.T`` with W of shape (N, K) kept as packed GGUF blocks."""

    def __init__(self, tensor, impl: str = "numpy", threads: int | None = None):
        self.name = tensor.name
        self.qtype, self.n, self.k = _check(tensor)
        self.raw = tensor.data  # memmap view, never copied
        self.impl = impl
        self.threads = threads
        self._qt = None
        if impl == "kernels":
            from .. import quant

            self._qt = quant.from_gguf(tensor)
            from .. import kernels

            self._matmul = kernels.matmul

    def dequantize(self, rows: slice | None = None) -> np.ndarray:
        return dequantize_rows(self.raw[rows] if rows is not None else self.raw, self.qtype, self.k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._qt is not None:
            return self._matmul(np.ascontiguousarray(x, np.float32), self._qt, act="int8", threads=self.threads)
        out = np.empty((x.shape[0], self.n), np.float32)
        for r0 in range(0, self.n, _CHUNK_ROWS):
            r1 = min(self.n, r0 + _CHUNK_ROWS)
            np.matmul(x, self.dequantize(slice(r0, r1)).T, out=out[:, r0:r1])
        return out


class Embedding:
    """Token embedding lookup that dequantizes only the rows asked for."""

    def __init__(self, tensor):
        self.qtype, self.n, self.k = _check(tensor)
        self.raw = tensor.data

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return dequantize_rows(np.ascontiguousarray(self.raw[np.asarray(ids, np.int64)]), self.qtype, self.k)


def vector(tensor) -> np.ndarray:
    """A small 1-D tensor (norm weights, biases) as fp32; copied because it is tiny and read every token."""
    qtype, n, k = _check(tensor)
    if tensor.data.dtype != np.uint8:  # gguf already typed F32/F16 tensors
        return np.array(tensor.data, np.float32).reshape(-1)
    return np.array(dequantize_rows(tensor.data.reshape(1, -1), qtype, k * n).reshape(-1), np.float32)
