"""The kernels' stated error bounds (edgesdk/kernels.py docstring), shared by the kernel tests and
the emulated-CPU portability check."""

from __future__ import annotations

import numpy as np

from edgesdk import _kernels_ref as ref


def f32_scale(x, qt):
    """|x| @ |W|.T: the natural magnitude of each output's rounding error."""
    return np.abs(x).astype(np.float64) @ np.abs(qt.dequantize()).T.astype(np.float64) + 1e-30


def raw_scale(x, qt):
    """|x| @ (d * (code + offset) + |m|).T: the int8 path sums codes and offset terms
    separately (d*dx*sum(code*xq) - offset*d*dx*sum(xq)), so float rounding scales with these."""
    n, k = qt.shape
    per = k // qt.n_blocks if qt.layout == "gguf" else min(qt.block_size, k)  # elements per scale
    blk = np.minimum(np.arange(k) // per, qt.n_blocks - 1)
    d = np.abs(qt.scale_matrix()[:, blk]).astype(np.float64)
    raw = d * (np.abs(qt.codes().astype(np.float64)) + qt.offset)  # gguf codes are signed, offset 0
    mins = qt.min_matrix()
    if mins is not None:
        raw += np.abs(mins[:, blk])
    return np.abs(x).astype(np.float64) @ raw.T + 1e-30


def within_f32_bound(y, x, qt) -> bool:
    """act="f32": exact up to float32 rounding, <= 1e-5 relative to |x| @ |W|.T."""
    exact = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    return bool(np.all(np.abs(y - exact) <= 1e-5 * f32_scale(x, qt)))


def within_int8_bound(y, x, qt) -> bool:
    """act="int8": the numpy reference of the same arithmetic up to float32 rounding of the raw terms."""
    return bool(np.all(np.abs(y - ref.matmul_int8_exact(x, qt)) <= 1e-5 * raw_scale(x, qt)))
