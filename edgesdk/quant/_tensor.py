"""The packed weight type and the i16x32 layout shared with the C kernels.

Layout "i16x32" (see bindings/ekern.h): rows in groups of 16 (N padded), K in 32-wide
sub-blocks (K padded).  Per group and sub-block, 4-bit codes take 256 bytes where
byte [j][r][t] holds code 4j+t of row r (low nibble) and code 16+4j+t (high nibble);
8-bit codes take 512 bytes, byte [j][r][t] = code 4j+t of row r, biased by +128.
A GGUF Q4_0/Q4_1 block's 16 bytes map onto this by a pure byte permutation, which is
why import is one copy and no nibble arithmetic.

Layout "gguf": every other type of the table (edgesdk.quant._types: K-quants, Q5_0/Q5_1, IQ4_NL)
is held as the file's own blocks (N, K/block * bytes per block), so import and export are lossless
by construction; the C kernels read these blocks directly. Types with a ``rows8`` field table
(Q4_K, Q5_K, Q6_K, Q5_0) are held with rows interleaved 8 at a time (``rows8=True``, a byte
permutation of the same blocks, see QuantType.interleave8), which the kernels' fastest paths read.
"""

from __future__ import annotations

import attrs
import numpy as np

from .._errors import QuantizationError

__all__ = ["QuantizedTensor", "LAYOUT", "BLOCKS", "pack_codes", "unpack_codes", "pack_rows", "unpack_rows"]

LAYOUT = "i16x32"
BLOCKS = "gguf"
# GGUF types that map onto i16x32 losslessly (by a byte permutation): name -> (bits, scheme)
I16X32_TYPES = {"Q4_0": (4, "sym"), "Q4_1": (4, "asym"), "Q8_0": (8, "sym")}
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
        raise QuantizationError(f"block_size {block_size} must be a multiple of {SUB} (32, 64, 128, ...) or >= K={k} (per-channel)")


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


def rows8_default(t, n: int) -> bool:
    """Whether an (N, K) weight of type row ``t`` is held with rows interleaved 8 at a time by
    default: the type has that layout, N is whole groups of 8, and the kernels in effect read it
    natively (:func:`edgesdk.kernels.rows8_native`)."""
    if not t.rows8 or n % 8:
        return False
    from .. import kernels

    return kernels.rows8_native(t.name)


def _types():
    from ._types import TYPES

    return TYPES


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

    ``layout="gguf"`` (``qtype`` names the table row): ``qdata`` is the (N, row bytes) GGUF blocks,
    ``scales``/``mins`` are None (they live in the blocks), ``bits``/``block_size``/``scheme`` are the
    type's code bits, block and whether it has mins; use :meth:`from_blocks`. ``rows8``: the blocks'
    rows are interleaved 8 at a time (the type's ``rows8`` table); :meth:`gguf_blocks` gives them
    back in file order.
    """

    shape: tuple[int, int] = attrs.field(converter=lambda s: (int(s[0]), int(s[1])))
    bits: int
    block_size: int
    scheme: str
    qdata: np.ndarray = attrs.field(repr=False)
    scales: np.ndarray | None = attrs.field(repr=False)
    mins: np.ndarray | None = attrs.field(default=None, repr=False)
    layout: str = LAYOUT
    source: str = "rtn"
    qtype: str = ""
    rows8: bool = False
    _kcache: dict = attrs.field(factory=dict, init=False, repr=False)

    @classmethod
    def from_blocks(cls, raw: np.ndarray, qtype, shape, *, source: str | None = None, interleave: bool | None = None) -> "QuantizedTensor":
        """A (N, K) weight held as GGUF blocks of ``qtype`` (layout "gguf"), raw in file order.

        With ``interleave`` a type with 8-row kernels and N a multiple of 8 is stored interleaved
        (``rows8``, one permuted copy); None (the default): when the kernels in effect read that
        layout natively (:func:`edgesdk.kernels.rows8_native`). Otherwise raw is copied only if it is
        not already a C-contiguous uint8 array."""
        from ._types import quant_type

        t = quant_type(qtype)
        n, k = (int(v) for v in shape)
        if not t.quantized:
            raise QuantizationError(f"{t.name} is a float type, not a block-quantized one")
        if n <= 0 or k <= 0 or k % t.block:
            raise QuantizationError(f"{t.name} needs K to be a positive multiple of {t.block}, got shape {(n, k)}")
        raw = np.asarray(raw)
        if raw.dtype != np.uint8:
            raise QuantizationError(f"raw GGUF data must be uint8, got {raw.dtype}")
        want = n * (k // t.block) * t.nbytes
        if raw.size != want:
            raise QuantizationError(f"GGUF {t.name} {(n, k)} needs {want} bytes, got {raw.size}")
        q = np.ascontiguousarray(raw).reshape(n, -1)
        rows8 = rows8_default(t, n) if interleave is None else bool(interleave and t.rows8 and n % 8 == 0)
        if rows8:
            q = t.interleave8(q)
        return cls(
            shape=(n, k),
            bits=t.bits,
            block_size=t.block,
            scheme="asym" if t.has_min else "sym",
            qdata=q,
            scales=None,
            layout=BLOCKS,
            qtype=t.name,
            source=source or f"gguf:{t.name}",
            rows8=rows8,
        )

    def __attrs_post_init__(self):
        n, k = self.shape
        if n <= 0 or k <= 0:
            raise QuantizationError(f"shape must be positive, got {self.shape}")
        if self.layout == BLOCKS:
            return self._check_blocks()
        if self.bits not in (4, 8):
            raise QuantizationError(f"bits must be 4 or 8, got {self.bits}")
        if self.scheme not in ("sym", "asym"):
            raise QuantizationError(f"scheme must be 'sym' or 'asym', got {self.scheme!r}")
        if self.bits == 8 and self.scheme != "sym":
            raise QuantizationError("8-bit weights are symmetric only")
        if self.layout != LAYOUT:
            raise QuantizationError(f"unknown layout {self.layout!r} ({LAYOUT!r} or {BLOCKS!r})")
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

    def _check_blocks(self):
        from ._types import quant_type

        t = quant_type(self.qtype)
        n, k = self.shape
        if not t.quantized or k % t.block:
            raise QuantizationError(f"layout {BLOCKS!r} needs a block-quantized qtype with K a multiple of its block, got {t.name} and K={k}")
        if (self.bits, self.block_size, self.scheme) != (t.bits, t.block, "asym" if t.has_min else "sym"):
            raise QuantizationError(f"{t.name}: bits/block_size/scheme must be the type's, use QuantizedTensor.from_blocks")
        if self.scales is not None or self.mins is not None:
            raise QuantizationError(f"layout {BLOCKS!r} keeps scales inside the blocks: scales and mins must be None")
        if self.rows8 and (not t.rows8 or n % 8):
            raise QuantizationError(
                f"rows8 needs a type with 8-row kernels ({', '.join(k for k, v in _types().items() if v.rows8)}) and N a multiple of 8, got {t.name} {self.shape}"
            )
        want = (n, k // t.block * t.nbytes)
        a = self.qdata
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.shape != want or not a.flags.c_contiguous:
            raise QuantizationError(
                f"qdata must be a C-contiguous uint8 array of shape {want}, got {(getattr(a, 'dtype', type(a)), getattr(a, 'shape', None))}"
            )
        _readonly(a)

    @property
    def type_row(self):
        """The quant-type table row of this tensor (edgesdk.quant._types)."""
        from ._types import quant_type

        if self.layout == BLOCKS:
            return quant_type(self.qtype)
        return quant_type(next(name for name, bs in I16X32_TYPES.items() if bs == (self.bits, self.scheme)))

    @property
    def offset(self) -> int:
        if self.layout == BLOCKS:
            return 0  # codes are signed, offsets applied
        return 0 if self.scheme == "asym" else (8 if self.bits == 4 else 128)

    @property
    def n_blocks(self) -> int:
        """Scale blocks per row."""
        return self.shape[1] // self.type_row.sub if self.layout == BLOCKS else self.scales.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes plus scales (and mins), padding included."""
        extra = 0 if self.scales is None else self.scales.nbytes + (0 if self.mins is None else self.mins.nbytes)
        return int(self.qdata.nbytes + extra)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def gguf_blocks(self) -> np.ndarray:
        """Layout "gguf": the blocks in file order, (N, row bytes) uint8 (a copy where ``rows8``)."""
        if self.layout != BLOCKS:
            raise QuantizationError(f"layout {self.layout!r} holds no GGUF blocks (edgesdk.quant.to_gguf_bytes converts)")
        return self.type_row.deinterleave8(self.qdata) if self.rows8 else self.qdata

    def codes(self) -> np.ndarray:
        """Codes (N, K): unsigned uint8 for i16x32 (8-bit biased by +128); signed int8 for gguf."""
        if self.layout == BLOCKS:
            return self.type_row.decoded(self.gguf_blocks())[0].reshape(self.shape)
        return unpack_codes(self.qdata, self.bits, *self.shape)

    def scale_matrix(self) -> np.ndarray:
        """Scales per row and block, (N, n_blocks) float32."""
        if self.layout == BLOCKS:
            return self.type_row.decoded(self.gguf_blocks())[1].reshape(self.shape[0], -1)
        return unpack_rows(self.scales, self.shape[0]).astype(np.float32)

    def min_matrix(self) -> np.ndarray | None:
        if self.layout == BLOCKS:
            mn = self.type_row.decoded(self.gguf_blocks())[2]
            return None if mn is None else mn.reshape(self.shape[0], -1)
        return None if self.mins is None else unpack_rows(self.mins, self.shape[0]).astype(np.float32)

    def dequantize(self) -> np.ndarray:
        n, k = self.shape
        if self.layout == BLOCKS:
            return self.type_row.dequantize(self.gguf_blocks()).reshape(n, k)
        c = self.codes().astype(np.float32)
        if self.offset:
            c -= np.float32(self.offset)
        col_block = np.minimum(np.arange(k) // min(self.block_size, k), self.n_blocks - 1)
        w = c * self.scale_matrix()[:, col_block]
        if self.mins is not None:
            w += self.min_matrix()[:, col_block]
        return w
