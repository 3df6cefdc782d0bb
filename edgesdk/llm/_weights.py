"""Linear layers over GGUF tensors.

Two implementations compute ``y = x @ W.T``:

- ``"numpy"``: the reference. Weights stay memory-mapped in the file's packed blocks; each call
  dequantizes them to fp32 with ``edgesdk.quant`` a few thousand rows at a time (a 49k-row LM
  head must not become a 113 MB fp32 temporary).
- ``"c"``: :func:`edgesdk.kernels.matmul` (cffi C; activations quantized to int8 per
  32-block like llama.cpp's, or exact fp32 with ``act="f32"``). Q4_0/Q4_1/Q8_0 blocks are
  repacked once by :func:`edgesdk.quant.from_gguf` (every other block type of the table is kept
  as the file's blocks) and the file pages are then released, so the process holds one packed
  copy of the weights, never an fp32 one.

Which types exist, and how each decodes, is the quant-type table (``edgesdk.quant.TYPES``).

Projections that read the same input (Q/K/V, gate/up) are fused into one matmul, which halves
the per-layer call overhead that dominates decode of a small model.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from typing import Callable, Sequence

import attrs
import numpy as np

from .. import _env
from .._errors import GenerationError, UnsupportedModelError
from ..quant._types import quant_type

__all__ = ["Linear", "Embedding", "dequantize_rows", "kernel_impl", "vector"]

log = logging.getLogger(__name__)

# Rows dequantized at once by the reference path: bounds its scratch memory (~ROWS*K*4 bytes).
_CHUNK_ROWS = 4096


#: Deprecated names of an ``impl``, accepted with a DeprecationWarning: "c" is what edgesdk.kernels calls itself.
_IMPL_ALIASES = {"kernels": "c"}


def check_impl(impl: str | None) -> str | None:
    """``impl`` ("numpy", "c", or None: follow ``EDGESDK_KERNELS``), a deprecated alias mapped to its name."""
    if impl in _IMPL_ALIASES:
        warnings.warn(f"impl={impl!r} is deprecated; use impl={_IMPL_ALIASES[impl]!r}", DeprecationWarning, stacklevel=3)
        return _IMPL_ALIASES[impl]
    if impl not in (None, "numpy", "c"):
        raise GenerationError(f"impl must be 'numpy' or 'c', got {impl!r}")
    return impl


def kernel_impl() -> str:
    """``"c"`` when the C kernels are built and not disabled by ``EDGESDK_KERNELS=numpy``."""
    if _env.get("EDGESDK_KERNELS") == "numpy":
        return "numpy"
    try:
        kernels = importlib.import_module("edgesdk.kernels")
    except ImportError:
        return "numpy"
    return "c" if kernels.available() else "numpy"


def dequantize_rows(raw: np.ndarray, qtype: str, k: int) -> np.ndarray:
    """fp32 rows from packed GGUF rows ``raw`` (shape (n, row bytes), or typed for F32/F16)."""
    n = raw.shape[0]
    if qtype == "F32":  # already typed: no copy
        return raw.view(np.float32).reshape(n, k)
    return quant_type(qtype).dequantize(raw).reshape(n, k)


def _check(tensor) -> tuple[str, int, int]:
    try:
        qtype = quant_type(tensor.tensor_type).name
    except UnsupportedModelError as e:
        raise UnsupportedModelError("", f"tensor {tensor.name!r}: {e.cause}") from None
    k, n = (int(s) for s in tensor.shape[:2]) if len(tensor.shape) > 1 else (int(tensor.shape[0]), 1)
    return qtype, n, k


def _stack(arrays):
    """The arrays' rows, one after another, in one weight buffer."""
    from ..quant._buffer import weight_buffer

    return np.concatenate(arrays, out=weight_buffer((sum(a.shape[0] for a in arrays),) + arrays[0].shape[1:], arrays[0].dtype))


def _concat(qts):
    """One QuantizedTensor stacking the rows of several with the same K and encoding."""
    from ..quant import QuantizedTensor

    first = qts[0]
    if len(qts) == 1:
        return first
    cat = lambda name: _stack([getattr(q, name) for q in qts])  # noqa: E731
    if first.layout == "gguf":
        shape = (sum(q.shape[0] for q in qts), first.shape[1])
        if all(q.rows8 for q in qts):  # whole groups of 8 rows each: stacking them is a concatenation
            return attrs.evolve(first, shape=shape, qdata=cat("qdata"))
        return QuantizedTensor.from_blocks(_stack([q.gguf_blocks() for q in qts]), first.qtype, shape, source=first.source)
    return QuantizedTensor(
        shape=(sum(q.shape[0] for q in qts), first.shape[1]),
        bits=first.bits,
        block_size=first.block_size,
        scheme=first.scheme,
        qdata=cat("qdata"),
        scales=cat("scales"),
        mins=None if first.mins is None else cat("mins"),
        source=first.source,
    )


class Linear:
    """``y = x @ W.T`` where W stacks the rows of ``tensors`` (all with the same K)."""

    def __init__(self, tensors: Sequence, impl: str = "numpy", threads: int | None = None, release: Callable | None = None, act: str = "int8"):
        self.names = tuple(t.name for t in tensors)
        parts = [_check(t) for t in tensors]
        self.k = parts[0][2]
        if any(k != self.k for _, _, k in parts):
            raise UnsupportedModelError("", f"cannot fuse {self.names}: different input sizes")
        self.sizes = tuple(n for _, n, _ in parts)
        self.n = sum(self.sizes)
        self.impl = impl
        self.threads = threads
        self.act = act
        self._raw = [(t.data, q) for t, (q, _, _) in zip(tensors, parts)]  # memmap views, never copied
        self._qt = None
        self._parts: list = []
        if impl == "c" and any(not quant_type(q).quantized for q, _, _ in parts):
            # The kernels take block-quantized weights only; an F16/F32 tensor (often an untied
            # output.weight) runs through the numpy path instead.
            log.info("%s: %s weights run in numpy, not the kernels", self.names, parts[0][0])
            impl = self.impl = "numpy"
        if impl == "c":
            from .. import kernels, quant

            # Rows already repacked give their file pages back while the rest is converted.
            qts = [quant.from_gguf(t, None if release is None else (lambda r0, r1, t=t: release(t, (r0, r1)))) for t in tensors]
            # i16x32 packs rows 16 at a time: fusing is only a concatenation when every part is whole
            # groups of the same encoding (GGUF blocks: any rows); otherwise each part is its own matmul.
            whole = qts[0].layout == "gguf" or not any(n % 16 for n in self.sizes)
            if len(tensors) == 1 or (whole and len({q for q, _, _ in parts}) == 1):
                self._qt = _concat(qts)
            else:
                self._parts = qts
            self._matmul = kernels.matmul
            if release is not None:
                for t in tensors:
                    release(t)

    @property
    def packed_bytes(self) -> int:
        """Bytes the kernels read per pass over the weights (0 on the numpy path)."""
        return sum(q.nbytes for q in ([self._qt] if self._qt is not None else self._parts))

    def __call__(self, x: np.ndarray, lora: Sequence = ()) -> np.ndarray:
        """``x @ W.T``, plus each LoRA term's low-rank product (:class:`edgesdk.llm._lora.LoraTerm`):
        an adapter is applied beside the packed weights, never merged into them."""
        y = self._base(x)
        for term in lora:
            term.add(x, y)
        return y

    def _base(self, x: np.ndarray) -> np.ndarray:
        if self._qt is not None:
            return self._matmul(np.ascontiguousarray(x, np.float32), self._qt, act=self.act, threads=self.threads)
        if self._parts:
            x = np.ascontiguousarray(x, np.float32)
            return np.concatenate([self._matmul(x, q, act=self.act, threads=self.threads) for q in self._parts], axis=1)
        out = np.empty((x.shape[0], self.n), np.float32)
        col = 0
        for raw, q in self._raw:
            for r0 in range(0, raw.shape[0], _CHUNK_ROWS):
                r1 = min(raw.shape[0], r0 + _CHUNK_ROWS)
                np.matmul(x, dequantize_rows(raw[r0:r1], q, self.k).T, out=out[:, col + r0 : col + r1])
            col += raw.shape[0]
        return out


class Embedding:
    """Token embedding lookup that dequantizes only the rows asked for, times ``scale`` (Gemma's sqrt(n_embd))."""

    def __init__(self, tensor, scale: float = 1.0):
        self.qtype, self.n, self.k = _check(tensor)
        self.raw = tensor.data
        self.scale = np.float32(scale)

    def __call__(self, ids: np.ndarray, lora=None) -> np.ndarray:
        """Rows of ``ids``; ``lora``: an embedding LoRA term whose delta joins them before the scale (as llama.cpp)."""
        ids = np.asarray(ids, np.int64)
        rows = dequantize_rows(np.ascontiguousarray(self.raw[ids]), self.qtype, self.k)
        if lora is not None:
            rows = rows + lora.embed(ids)  # a new array: F32 tables come back as views of the file
        if self.scale != 1:
            rows = rows * self.scale  # a new array: F32 tables come back as views of the file
        return rows


def vector(tensor) -> np.ndarray:
    """A small 1-D tensor (norm weights, biases) as fp32; copied because it is tiny and read every token."""
    qtype, n, k = _check(tensor)
    if tensor.data.dtype != np.uint8:  # F32/F16 tensors are already typed views
        return np.array(tensor.data, np.float32).reshape(-1)
    return np.array(dequantize_rows(tensor.data.reshape(1, -1), qtype, k * n).reshape(-1), np.float32)
