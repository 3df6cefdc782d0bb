"""Lossless GGUF import and export of every block-quantized type in the table (edgesdk.quant._types).

Q4_0 / Q4_1 / Q8_0 go to the i16x32 layout the fast kernels use: a GGUF Q4 block's 16 code bytes
hold element j in the low nibble and j+16 in the high nibble, the same pairing i16x32 uses, so
import is a byte permutation (one copy of the codes) and the round trip is bit-exact. Every other
type (K-quants, Q5_0/Q5_1, IQ4_NL) keeps the file's blocks as they are (layout "gguf").
"""

from __future__ import annotations

import attrs
import numpy as np

from .._errors import QuantizationError
from ._buffer import weight_buffer
from ._tensor import BLOCKS, I16X32_TYPES, ROWS, SUB, QuantizedTensor, pack_rows, rows8_default, unpack_rows
from ._types import quant_type

__all__ = ["from_gguf", "from_gguf_bytes", "to_gguf_bytes"]


def _qtype_name(qtype) -> str:
    t = quant_type(qtype)  # UnsupportedModelError for a type outside the table
    if not t.quantized:
        raise QuantizationError(f"GGUF type {t.name} is a float type: read it as an array, not a QuantizedTensor")
    return t.name


# Rows repacked at once: a whole 262k-row LM head at once would hold its file pages and the full
# repacked copy at the same time (twice its size at peak); by chunks, each chunk's source pages can
# be dropped as soon as it is converted.
_CHUNK_ROWS = 16384


def from_gguf(tensor, done_rows=None) -> QuantizedTensor:
    """Import a ``gguf.GGUFReader`` tensor (ReaderTensor) of any block-quantized type of the table.

    GGUF lists dims fastest-first: ne = [K, N] for a weight used as y = x @ W.T. ``done_rows(r0, r1)``
    is called after rows r0..r1 of a repacked (Q4_0/Q4_1/Q8_0) tensor were copied, so the caller can
    release their source pages.
    """
    name = _qtype_name(tensor.tensor_type)
    dims = [int(d) for d in tensor.shape]
    if len(dims) != 2:
        raise QuantizationError(f"tensor {tensor.name!r}: expected 2 dims, got {dims}")
    k, n = dims
    raw = np.asarray(tensor.data)
    t = quant_type(name)
    if raw.ndim == 2 and rows8_default(t, n):
        # interleaved by chunks of rows, each chunk's file pages released once copied
        q = weight_buffer(raw.shape)
        for r0 in range(0, n, _CHUNK_ROWS):
            r1 = min(n, r0 + _CHUNK_ROWS)
            q[r0:r1] = t.interleave8(raw[r0:r1])
            if done_rows is not None:
                done_rows(r0, r1)
        return attrs.evolve(QuantizedTensor.from_blocks(q, name, (n, k), source=f"gguf:{name}", interleave=False), rows8=True)
    if name not in I16X32_TYPES or n <= _CHUNK_ROWS or raw.ndim != 2:
        qt = from_gguf_bytes(raw, name, (n, k), source=f"gguf:{name}")
        if done_rows is not None and name in I16X32_TYPES:
            done_rows(0, n)
        return qt
    first = from_gguf_bytes(raw[:_CHUNK_ROWS], name, (_CHUNK_ROWS, k))
    g = -(-n // ROWS)
    out = {a: weight_buffer((g,) + getattr(first, a).shape[1:], getattr(first, a).dtype) for a in ("qdata", "scales", "mins") if getattr(first, a) is not None}
    for r0 in range(0, n, _CHUNK_ROWS):
        r1 = min(n, r0 + _CHUNK_ROWS)
        part = first if r0 == 0 else from_gguf_bytes(raw[r0:r1], name, (r1 - r0, k))
        for a, arr in out.items():
            arr[r0 // ROWS : r0 // ROWS + getattr(part, a).shape[0]] = getattr(part, a)
        if done_rows is not None:
            done_rows(r0, r1)
    return QuantizedTensor(
        shape=(n, k),
        bits=first.bits,
        block_size=first.block_size,
        scheme=first.scheme,
        qdata=out["qdata"],
        scales=out["scales"],
        mins=out.get("mins"),
        source=f"gguf:{name}",
    )


def from_gguf_bytes(raw: np.ndarray, qtype, shape, *, source: str | None = None) -> QuantizedTensor:
    """Import raw GGUF block bytes (any shape, uint8, N*K/block blocks) of a (N, K) weight."""
    name = _qtype_name(qtype)
    if name not in I16X32_TYPES:
        return QuantizedTensor.from_blocks(raw, name, shape, source=source)
    bits, scheme = I16X32_TYPES[name]
    bpb = quant_type(name).nbytes
    n, k = (int(s) for s in shape)
    if n <= 0 or k <= 0 or k % SUB:
        raise QuantizationError(f"GGUF {name} needs K to be a positive multiple of 32, got shape {(n, k)}")
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise QuantizationError(f"raw GGUF data must be uint8, got {raw.dtype}")
    s = k // SUB
    if raw.size != n * s * bpb:
        raise QuantizationError(f"GGUF {name} {(n, k)} needs {n * s * bpb} bytes, got {raw.size}")
    blocks = raw.reshape(n, s, bpb)
    g = -(-n // ROWS)
    if n % ROWS:
        padded = np.zeros((g * ROWS, s, bpb), np.uint8)
        padded[:n] = blocks
        blocks = padded
    d = np.ascontiguousarray(blocks[:n, :, 0:2]).view(np.float16)[..., 0]
    m = np.ascontiguousarray(blocks[:n, :, 2:4]).view(np.float16)[..., 0] if name == "Q4_1" else None
    for arr in (d, m):
        if arr is not None and not np.isfinite(arr).all():
            raise QuantizationError(f"GGUF {name} tensor has non-finite block scales")
    qoff = 4 if name == "Q4_1" else 2
    if bits == 4:
        qs = blocks[:, :, qoff : qoff + 16].reshape(g, ROWS, s, 4, 4)
        qdata = weight_buffer((g, s, 256))
        qdata.reshape(g, s, 4, ROWS, 4)[...] = qs.transpose(0, 2, 3, 1, 4)
        if n % ROWS:
            qdata.reshape(g, s, 4, ROWS, 4)[-1, :, :, n % ROWS :] = 0x88 if scheme == "sym" else 0
    else:
        qs = blocks[:, :, qoff : qoff + 32].reshape(g, ROWS, s, 8, 4)
        qdata = weight_buffer((g, s, 512))
        qdata.reshape(g, s, 8, ROWS, 4)[...] = qs.transpose(0, 2, 3, 1, 4)
        qdata ^= 0x80  # int8 -> biased uint8
        if n % ROWS:
            qdata.reshape(g, s, 8, ROWS, 4)[-1, :, :, n % ROWS :] = 128
    return QuantizedTensor(
        shape=(n, k),
        bits=bits,
        block_size=32 if k > 32 else k,
        scheme=scheme,
        qdata=qdata,
        scales=pack_rows(d),
        mins=None if m is None else pack_rows(m),
        source=source or f"gguf:{name}",
    )


def to_gguf_bytes(qt: QuantizedTensor) -> tuple[str, np.ndarray]:
    """Export to GGUF block bytes: (type name, uint8 array (N, K/block * block bytes))."""
    n, k = qt.shape
    if qt.layout == BLOCKS:
        return qt.qtype, np.array(qt.gguf_blocks())
    if k % SUB or qt.block_size != SUB:
        raise QuantizationError("only 32-element blocks with K a multiple of 32 map onto GGUF Q4_0/Q4_1/Q8_0")
    name = qt.type_row.name
    bpb = qt.type_row.nbytes
    g, s = qt.qdata.shape[:2]
    out = np.empty((n, s, bpb), np.uint8)
    out[:, :, 0:2] = unpack_rows(qt.scales, n)[..., None].view(np.uint8)
    qoff = 2
    if qt.mins is not None:
        out[:, :, 2:4] = unpack_rows(qt.mins, n)[..., None].view(np.uint8)
        qoff = 4
    if qt.bits == 4:
        qs = qt.qdata.reshape(g, s, 4, ROWS, 4).transpose(0, 3, 1, 2, 4).reshape(g * ROWS, s, 16)
        out[:, :, qoff:] = qs[:n]
    else:
        qs = qt.qdata.reshape(g, s, 8, ROWS, 4).transpose(0, 3, 1, 2, 4).reshape(g * ROWS, s, 32)
        out[:, :, qoff:] = qs[:n] ^ 0x80
    return name, out.reshape(n, s * bpb)
