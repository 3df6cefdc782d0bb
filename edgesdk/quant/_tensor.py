"""The packed weight type and the i16x32 layout shared with the C kernels.

Layout "i16x32" (see bindings/ekern.h): rows in groups of 16 (N padded), K in 32-wide
sub-blocks (K padded).  Per group and sub-block, 4-bit codes take 256 bytes where
byte [j][r][t] holds code 4j+t of row r (low nibble) and code 16+4j+t (high nibble);
8-bit codes take 512 bytes, byte [j][r][t] = code 4j+t of row r, biased by +128.
A GGUF Q4_0/Q4_1 block's 16 bytes map onto this by a pure byte permutation, which is
why import is one copy and no nibble arithmetic.
"""

from __future__ import annotations

import attrs
import numpy as np

from .._errors import QuantizationError

__all__ = ["QuantizedTensor", "LAYOUT", "pack_codes", "unpack_codes", "pack_rows", "unpack_rows"]

LAYOUT = "i16x32"
ROWS = 16
SUB = 32


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def geometry(n: int, k: int, block_size: int) -> tuple[int, int, int, int]:
    """(groups, sub-blocks, scale blocks per row, sub-blocks per scale block)."""
    s = _ceil(k, SUB)
    spb = s if block_size >= k else block_size // SUB
    return _ceil(n, ROWS), s, _ceil(s, spb), spb


def check_block_size(k: int, block_size: int) -> None:
    if block_size <= 0 or (block_size < k and block_size % SUB):
        raise QuantizationError(
            f"block_size {block_size} must be a multiple of {SUB} (32, 64, 128, ...) or >= K={k} (per-channel)"
        )


def pack_codes(codes: np.ndarray, bits: int, pad_code: int) -> np.ndarray:
    """Row-major codes (N, K) uint8 -> packed (G, S, 256|512) uint8 (8-bit codes already biased)."""
    n, k = codes.shape
    g, s = _ceil(n, ROWS), _ceil(k, SUB)
    full = np.full((g * ROWS, s * SUB), pad_code, dtype=np.uint8)
    full[:n, :k] = codes
    c = full.reshape(g, ROWS, s, SUB)
    if bits == 4:
        lo = c[..., :16].reshape(g, ROWS, s, 4, 4)
        hi = c[..., 16:].reshape(g, ROWS, s, 4, 4)
        packed = lo | (hi << 4)
        return np.ascontiguousarray(packed.transpose(0, 2, 3, 1, 4)).reshape(g, s, 256)
    return np.ascontiguousarray(c.reshape(g, ROWS, s, 8, 4).transpose(0, 2, 3, 1, 4)).reshape(g, s, 512)


def unpack_codes(q: np.ndarray, bits: int, n: int, k: int) -> np.ndarray:
    """Inverse of pack_codes: (N, K) uint8 codes (8-bit still biased)."""
    g, s = q.shape[:2]
    if bits == 4:
        p = q.reshape(g, s, 4, ROWS, 4).transpose(0, 3, 1, 2, 4).reshape(g, ROWS, s, 16)
        c = np.concatenate([p & 15, p >> 4], axis=-1)
    else:
        c = q.reshape(g, s, 8, ROWS, 4).transpose(0, 3, 1, 2, 4).reshape(g, ROWS, s, SUB)
    return c.reshape(g * ROWS, s * SUB)[:n, :k]


def pack_rows(v: np.ndarray) -> np.ndarray:
    """Per-row block values (N, nblk) -> (G, nblk, 16) float16, padded rows zero."""
    n, nb = v.shape
    g = _ceil(n, ROWS)
    full = np.zeros((g * ROWS, nb), dtype=np.float16)
    full[:n] = v
    return np.ascontiguousarray(full.reshape(g, ROWS, nb).transpose(0, 2, 1))


def unpack_rows(p: np.ndarray, n: int) -> np.ndarray:
    g, nb, _ = p.shape
    return p.transpose(0, 2, 1).reshape(g * ROWS, nb)[:n]


def _readonly(a):
    if a is not None and a.flags.writeable:
        a.setflags(write=False)
    return a


@attrs.frozen(eq=False)
class QuantizedTensor:
    """A block-quantized weight matrix W of shape (N, K), y = x @ W.T.

    Dequantized value of row n, column k in scale block b: ``d[n,b] * (code - offset) + m[n,b]``
    with offset 8 (4-bit sym), 128 (8-bit sym, codes stored biased) or 0 (asym, m = block min).
    Arrays are read-only and validated here, because the C kernels trust their sizes.
    """

    shape: tuple[int, int] = attrs.field(converter=lambda s: (int(s[0]), int(s[1])))
    bits: int
    block_size: int
    scheme: str
    qdata: np.ndarray = attrs.field(repr=False)
    scales: np.ndarray = attrs.field(repr=False)
    mins: np.ndarray | None = attrs.field(default=None, repr=False)
    layout: str = LAYOUT
    source: str = "rtn"
    _kcache: dict = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self):
        n, k = self.shape
        if n <= 0 or k <= 0:
            raise QuantizationError(f"shape must be positive, got {self.shape}")
        if self.bits not in (4, 8):
            raise QuantizationError(f"bits must be 4 or 8, got {self.bits}")
        if self.scheme not in ("sym", "asym"):
            raise QuantizationError(f"scheme must be 'sym' or 'asym', got {self.scheme!r}")
        if self.bits == 8 and self.scheme != "sym":
            raise QuantizationError("8-bit weights are symmetric only")
        if self.layout != LAYOUT:
            raise QuantizationError(f"unknown layout {self.layout!r}")
        check_block_size(k, self.block_size)
        g, s, nb, _ = geometry(n, k, self.block_size)
        want_q = (g, s, 256 if self.bits == 4 else 512)
        arrays = [("qdata", self.qdata, np.uint8, want_q), ("scales", self.scales, np.float16, (g, nb, ROWS))]
        if self.scheme == "asym":
            arrays.append(("mins", self.mins, np.float16, (g, nb, ROWS)))
        elif self.mins is not None:
            raise QuantizationError("mins given for a symmetric tensor")
        for name, a, dt, shp in arrays:
            if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != shp or not a.flags.c_contiguous:
                got = (getattr(a, "dtype", type(a)), getattr(a, "shape", None))
                raise QuantizationError(f"{name} must be a C-contiguous {np.dtype(dt)} array of shape {shp}, got {got}")
            _readonly(a)

    @property
    def offset(self) -> int:
        return 0 if self.scheme == "asym" else (8 if self.bits == 4 else 128)

    @property
    def n_blocks(self) -> int:
        """Scale blocks per row."""
        return self.scales.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes plus scales (and mins), padding included."""
        return int(self.qdata.nbytes + self.scales.nbytes + (0 if self.mins is None else self.mins.nbytes))

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def codes(self) -> np.ndarray:
        """Unsigned codes (N, K) uint8; 8-bit codes are biased by +128."""
        return unpack_codes(self.qdata, self.bits, *self.shape)

    def scale_matrix(self) -> np.ndarray:
        """Scales per row and block, (N, n_blocks) float32."""
        return unpack_rows(self.scales, self.shape[0]).astype(np.float32)

    def min_matrix(self) -> np.ndarray | None:
        return None if self.mins is None else unpack_rows(self.mins, self.shape[0]).astype(np.float32)

    def dequantize(self) -> np.ndarray:
        n, k = self.shape
        c = self.codes().astype(np.float32)
        if self.offset:
            c -= np.float32(self.offset)
        col_block = np.minimum(np.arange(k) // min(self.block_size, k), self.n_blocks - 1)
        w = c * self.scale_matrix()[:, col_block]
        if self.mins is not None:
            w += self.min_matrix()[:, col_block]
        return w
