"""The tensor-type table: one row per GGML/GGUF tensor type edgesdk reads.

Each row states the type's GGML code, block geometry, bytes per block and encoding, and its
reference decoding. Every block-quantized type decodes to the same three arrays: signed integer
codes, one float32 ``scale`` and (for types with mins) one float32 ``min`` per sub-block of ``sub``
elements, so that ``w = scale * code + min``. The float arithmetic of ``scale`` and ``min``
(``d * sc``, ``-(dmin * m)``) is gguf-py's (``gguf.quants.dequantize``), so :meth:`QuantType.dequantize`
equals it bit for bit (tested on every tensor of a real K-quant file and on random blocks); the C
kernels compute ``scale * dx * sum(code * xq) + min * sum(x)`` per sub-block from the same codes.

Every other list of types (what the GGUF reader accepts, what each backend computes) derives
from :data:`TYPES`; adding a type is one row, its decoder and its tests.
"""

from __future__ import annotations

from typing import Callable

import attrs
import numpy as np

from .._errors import UnsupportedModelError
from ._buffer import weight_buffer

__all__ = ["QuantType", "TYPES", "quant_type"]

QK_K = 256  # elements of a K-quant super-block

Decoded = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


@attrs.frozen
class QuantType:
    name: str
    code: int  # GGML type id (gguf.GGMLQuantizationType)
    block: int  # elements per block
    nbytes: int  # bytes per block
    sub: int  # elements sharing one scale/min (0: a float type)
    bits: int  # bits of one code (of one value, for float types)
    has_min: bool  # w = scale * code + min (else w = scale * code)
    encoding: str  # the block's byte layout, in order
    decode: Callable[[np.ndarray], Decoded] | None = attrs.field(default=None, repr=False)
    to_float: Callable[[np.ndarray], np.ndarray] | None = attrs.field(default=None, repr=False)
    # The block's fields as (bytes, word size), for types whose CPU kernels read rows interleaved
    # 8 at a time (bindings/ekern.h, ek_weight.rows8): per group of 8 rows and block index, each
    # field is stored word by word, each word for the 8 rows in turn. Empty: no such kernels.
    rows8: tuple[tuple[int, int], ...] = ()

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / self.block

    @property
    def quantized(self) -> bool:
        return self.decode is not None

    def blocks(self, raw: np.ndarray) -> np.ndarray:
        """Raw bytes (any shape; a whole number of blocks) as (n_blocks, nbytes) uint8."""
        raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        if raw.size % self.nbytes:
            raise UnsupportedModelError("", f"{self.name} data of {raw.size} bytes is not a whole number of {self.nbytes}-byte blocks")
        return raw.reshape(-1, self.nbytes)

    def decoded(self, raw: np.ndarray) -> Decoded:
        """(codes int8 (n_blocks, block), scale float32 (n_blocks, block // sub), min or None)."""
        if self.decode is None:
            raise UnsupportedModelError("", f"{self.name} is a float type: it has no codes")
        return self.decode(self.blocks(raw))

    def interleave8(self, blocks: np.ndarray) -> np.ndarray:
        """Row-major GGUF blocks (N, row bytes), N a multiple of 8 -> the same bytes with rows
        interleaved 8 at a time (:attr:`rows8`), same shape; a byte permutation."""
        return self._permute8(blocks, inverse=False)

    def deinterleave8(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`interleave8`."""
        return self._permute8(data, inverse=True)

    def _permute8(self, a: np.ndarray, inverse: bool) -> np.ndarray:
        if not self.rows8:
            raise UnsupportedModelError("", f"{self.name} has no 8-row interleaved layout")
        n, rb = a.shape
        if n % 8 or rb % self.nbytes:
            raise UnsupportedModelError("", f"{self.name}: {a.shape} is not whole groups of 8 rows of whole blocks")
        g, nblk, nb = n // 8, rb // self.nbytes, self.nbytes
        out = weight_buffer(a.shape, a.dtype)
        rows = (out if inverse else a).reshape(g, 8, nblk, nb)  # (group, row, block, byte)
        inter = (a if inverse else out).reshape(g, nblk, 8 * nb)  # (group, block, field bytes x 8 rows)
        off = 0
        for size, word in self.rows8:
            r = rows[..., off : off + size].reshape(g, 8, nblk, size // word, word)
            i = inter[..., 8 * off : 8 * (off + size)].reshape(g, nblk, size // word, 8, word)
            if inverse:
                r[...] = i.transpose(0, 3, 1, 2, 4)
            else:
                i[...] = r.transpose(0, 2, 3, 1, 4)
            off += size
        return out

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        """float32 values of raw blocks, flat (n_blocks * block,): gguf-py's result bit for bit."""
        b = self.blocks(raw)
        if self.to_float is not None:
            return self.to_float(b).reshape(-1)
        codes, scale, mn = self.decode(b)
        nb, ns = scale.shape
        w = scale.reshape(nb, ns, 1) * codes.reshape(nb, ns, -1).astype(np.float32)
        if mn is not None:
            w = w + mn.reshape(nb, ns, 1)
        return w.reshape(-1)


# --------------------------------------------------------------------------- field readers


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """float32 of the fp16 at byte offset ``at`` of each block, as (n_blocks, 1)."""
    return np.ascontiguousarray(b[:, at : at + 2]).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, span: int) -> np.ndarray:
    """Low nibbles of each ``span``-byte run, then its high nibbles (GGML's 4-bit order)."""
    nb = qs.shape[0]
    q = qs.reshape(nb, -1, 1, span) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return (q & 0x0F).reshape(nb, -1)


def _crumbs(qs: np.ndarray, span: int) -> np.ndarray:
    """2-bit fields: each ``span``-byte run gives 4 runs of elements, bits 0-1, 2-3, 4-5, 6-7."""
    nb = qs.shape[0]
    q = qs.reshape(nb, -1, 1, span) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return (q & 3).reshape(nb, -1)


def _bits(h: np.ndarray, span: int) -> np.ndarray:
    """1-bit fields: each ``span``-byte run gives 8 runs of elements, bit 0 first."""
    nb = h.shape[0]
    q = h.reshape(nb, -1, 1, span) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
    return (q & 1).reshape(nb, -1)


def _k_scale_min(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins packed in 12 bytes."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _qh32(b: np.ndarray, at: int) -> np.ndarray:
    """The 32 fifth bits of a Q5_0/Q5_1 block (a little-endian uint32 at ``at``), element order."""
    qh = np.ascontiguousarray(b[:, at : at + 4]).view("<u4")
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


# --------------------------------------------------------------------------- decoders


def _q4_0(b):
    return (_nibbles(b[:, 2:], 16).astype(np.int8) - 8), _f16(b, 0), None


def _q4_1(b):
    return _nibbles(b[:, 4:], 16).astype(np.int8), _f16(b, 0), _f16(b, 2)


def _q5_0(b):
    q = _nibbles(b[:, 6:], 16) | (_qh32(b, 2) << 4)
    return q.astype(np.int8) - 16, _f16(b, 0), None


def _q5_1(b):
    q = _nibbles(b[:, 8:], 16) | (_qh32(b, 4) << 4)
    return q.astype(np.int8), _f16(b, 0), _f16(b, 2)


def _q8_0(b):
    return np.ascontiguousarray(b[:, 2:]).view(np.int8), _f16(b, 0), None


_IQ4_NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)


def _iq4_nl(b):
    return _IQ4_NL[_nibbles(b[:, 2:], 16)], _f16(b, 0), None


def _q2_k(b):
    sc = b[:, 0:16]
    d, dmin = _f16(b, 80), _f16(b, 82)
    return (_crumbs(b[:, 16:80], 32).astype(np.int8), d * (sc & 0x0F).astype(np.float32), -(dmin * (sc >> 4).astype(np.float32)))


def _q3_k(b):
    s = b[:, 96:108]
    lo = _nibbles(s[:, 0:8], 8)
    hi = _crumbs(s[:, 8:12], 4)
    sc = ((lo | (hi << 4)).astype(np.int8) - 32).astype(np.float32)
    q = _crumbs(b[:, 32:96], 32).astype(np.int8) - ((_bits(b[:, 0:32], 32) ^ 1) << 2).astype(np.int8)
    return q, _f16(b, 108) * sc, None


def _q4_k(b):
    sc, m = _k_scale_min(b[:, 4:16])
    return _nibbles(b[:, 16:], 32).astype(np.int8), _f16(b, 0) * sc, -(_f16(b, 2) * m)


def _q5_k(b):
    sc, m = _k_scale_min(b[:, 4:16])
    q = _nibbles(b[:, 48:], 32) | (_bits(b[:, 16:48], 32) << 4)
    return q.astype(np.int8), _f16(b, 0) * sc, -(_f16(b, 2) * m)


def _q6_k(b):
    ql = _nibbles(b[:, 0:128], 64)
    qh = _crumbs(b[:, 128:192], 32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)
    return (ql | (qh << 4)).astype(np.int8) - 32, _f16(b, 208) * sc, None


def _bf16(b):
    return (np.ascontiguousarray(b).view(np.int16).astype(np.int32) << 16).view(np.float32)


def _float(name, code, bits, to_float):
    return QuantType(name, code, 1, bits // 8, 0, bits, False, name.lower(), None, to_float)


def _quant(name, code, block, nbytes, sub, bits, has_min, encoding, decode, rows8=()):
    if rows8 and sum(size for size, _ in rows8) != nbytes:
        raise AssertionError(f"{name}: rows8 fields must cover the {nbytes}-byte block")
    return QuantType(name, code, block, nbytes, sub, bits, has_min, encoding, decode, rows8=rows8)


TYPES: dict[str, QuantType] = {
    t.name: t
    for t in (
        _float("F32", 0, 32, lambda b: np.ascontiguousarray(b).view("<f4")),
        _float("F16", 1, 16, lambda b: np.ascontiguousarray(b).view("<f2").astype(np.float32)),
        _float("BF16", 30, 16, _bf16),
        _quant("Q4_0", 2, 32, 18, 32, 4, False, "d:f16, qs:u8[16] (element j low nibble, j+16 high); w = d*(q-8)", _q4_0),
        _quant("Q4_1", 3, 32, 20, 32, 4, True, "d:f16, m:f16, qs:u8[16]; w = d*q + m", _q4_1),
        _quant("Q5_0", 6, 32, 22, 32, 5, False, "d:f16, qh:u32 (5th bits), qs:u8[16]; w = d*(q-16)", _q5_0, ((2, 2), (4, 4), (16, 4))),
        _quant("Q5_1", 7, 32, 24, 32, 5, True, "d:f16, m:f16, qh:u32, qs:u8[16]; w = d*q + m", _q5_1),
        _quant("Q8_0", 8, 32, 34, 32, 8, False, "d:f16, qs:i8[32]; w = d*q", _q8_0),
        _quant("Q2_K", 10, QK_K, 84, 16, 2, True, "scales:u8[16] (4-bit scale | 4-bit min), qs:u8[64] (2-bit), d:f16, dmin:f16; w = d*sc*q - dmin*m", _q2_k),
        _quant("Q3_K", 11, QK_K, 110, 16, 3, False, "hmask:u8[32], qs:u8[64] (low 2 bits), scales:u8[12] (6-bit, -32), d:f16; w = d*sc*(q - 4*(1-h))", _q3_k),
        _quant(
            "Q4_K",
            12,
            QK_K,
            144,
            32,
            4,
            True,
            "d:f16, dmin:f16, scales:u8[12] (8 6-bit scales, 8 6-bit mins), qs:u8[128]; w = d*sc*q - dmin*m",
            _q4_k,
            ((2, 2), (2, 2), (12, 4), (128, 4)),
        ),
        _quant(
            "Q5_K",
            13,
            QK_K,
            176,
            32,
            5,
            True,
            "d:f16, dmin:f16, scales:u8[12], qh:u8[32], qs:u8[128]; w = d*sc*q - dmin*m",
            _q5_k,
            ((2, 2), (2, 2), (12, 4), (32, 4), (128, 4)),
        ),
        _quant(
            "Q6_K", 14, QK_K, 210, 16, 6, False, "ql:u8[128], qh:u8[64], scales:i8[16], d:f16; w = d*sc*(q-32)", _q6_k, ((128, 4), (64, 4), (16, 4), (2, 2))
        ),
        _quant("IQ4_NL", 20, 32, 18, 32, 4, False, "d:f16, qs:u8[16] (4-bit indices into a 16-value int8 grid); w = d*grid[q]", _iq4_nl),
    )
}

_BY_CODE = {t.code: t for t in TYPES.values()}


def quant_type(t) -> QuantType:
    """The row for a type name ("Q4_K"), GGML code (12), ``gguf.GGMLQuantizationType`` or row.

    A type outside the table raises UnsupportedModelError naming it and the supported ones.
    """
    if isinstance(t, QuantType):
        return t
    name = getattr(t, "name", None)
    row = TYPES.get(str(name if name is not None else t).upper()) if not isinstance(t, int) else _BY_CODE.get(t)
    if row is None:
        label = name or (f"code {t}" if isinstance(t, int) else str(t))
        raise UnsupportedModelError("", f"tensor type {label} is not supported; supported: {', '.join(TYPES)}")
    return row
