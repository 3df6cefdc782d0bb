"""Random GGUF blocks for tests and benchmarks: realistic ones of the types gguf-py cannot quantize
(``random_blocks``), and raw random ones with only the non-finite blocks zeroed (``finite_blocks``)."""

from __future__ import annotations

import numpy as np

# Byte offsets of each block type's fp16 scale fields (d, dmin / m)
F16_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q5_0": (0,), "Q5_1": (0, 2), "IQ4_NL": (0,)}


def random_blocks(name: str, shape, rng, scale: float) -> np.ndarray:
    """Random blocks of a type, scale fields set so the weights' max magnitude is about ``scale``."""
    import gguf

    qt = gguf.GGMLQuantizationType[name]
    blk, nbytes = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, (shape[0], shape[1] // blk, nbytes), dtype=np.uint8)
    for at in F16_FIELDS[name]:
        raw[..., at : at + 2] = np.frombuffer(np.float16(1.0).tobytes(), np.uint8)
    peak = np.abs(gguf.quants.dequantize(raw.reshape(shape[0], -1), qt)).max()
    for at in F16_FIELDS[name]:  # w is linear in the scale fields
        raw[..., at : at + 2] = np.frombuffer(np.float16(scale / peak).tobytes(), np.uint8)
    return raw.reshape(shape[0], -1)


def finite_blocks(name: str, rng, nblocks: int) -> np.ndarray:
    """Random bytes as (nblocks, bytes per block) of any block type; blocks whose values are not all
    finite are zeroed (a valid all-zero block). Scales span fp16's whole range: a kernel stress test."""
    from edgesdk.quant import TYPES

    t = TYPES[name]
    raw = rng.integers(0, 256, (nblocks, t.nbytes), dtype=np.uint8)
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(t.dequantize(raw).reshape(nblocks, -1)).all(1)
    raw[bad] = 0
    return raw
