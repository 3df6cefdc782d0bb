"""Prompt-sized M on the GGUF-block kernels of the K-quant mixes (Q4_K, Q5_K, Q6_K, Q5_0).

An output's bits must not depend on how many activation rows are computed with it, nor on the
thread count: verifying k draft tokens in one matmul then gives exactly the logits of k single-token
steps. M sweeps the kernels' tilings (tiles of 8 rows, the rows left over in tiles of 4, one row);
N = 1001 rows is a multiple of no tile, and spans several passes of rows per thread's share of them.
Each check runs on both layouts of these types: rows interleaved 8 at a time (N = 1000, what
loading a GGUF file gives) and row by row (N = 1001, or built with interleave=False).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk import kernels
from edgesdk.quant import TYPES, QuantizedTensor
from gguf_blocks import finite_blocks
from kernel_bounds import within_int8_bound

needs_c = pytest.mark.skipif(not kernels.available(), reason="C kernels not built")

NAMES = ["Q4_K", "Q5_K", "Q6_K", "Q5_0"]
MS = (1, 2, 3, 4, 5, 7, 8, 16, 33, 128)
N = 1001


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, NaN payloads aside."""
    a, b = np.asarray(a, np.float32).reshape(-1), np.asarray(b, np.float32).reshape(-1)
    na, nb = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and np.array_equal(na, nb) and np.array_equal(a[~na].view(np.uint32), b[~nb].view(np.uint32))


LAYOUTS = ("rows8", "rowwise")


def _case(name: str, n: int, k: int, m: int, seed: int, layout: str = "rows8"):
    t = TYPES[name]
    rng = np.random.default_rng(seed)
    n = n // 8 * 8 if layout == "rows8" else n
    qt = QuantizedTensor.from_blocks(finite_blocks(name, rng, n * k // t.block), name, (n, k), interleave=layout == "rows8")
    assert qt.rows8 == (layout == "rows8")
    # rows of different magnitudes: each gets its own activation scales
    x = (rng.standard_normal((m, k)) * rng.uniform(0.05, 4.0, (m, 1))).astype(np.float32)
    return qt, x


def _ks(name: str):
    # Q5_0 goes four blocks at a time: 800 and 96 leave a partial group
    return (256, 768, 2048) if TYPES[name].block == 256 else (256, 640, 2048, 800, 96)


@pytest.fixture(autouse=True)
def _restore():
    threads = kernels.get_threads()
    yield
    kernels.set_simd("auto")
    kernels.set_decode_read("auto")
    kernels.set_threads(threads)


@needs_c
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_outputs_identical_across_m_and_threads(name, layout):
    for k in _ks(name):
        qt, x = _case(name, N, k, max(MS), seed=k + TYPES[name].code, layout=layout)
        alone = np.stack([kernels.matmul(x[i], qt, threads=1) for i in range(len(x))])
        for m in MS:
            for th in (1, 2):
                assert same_bits(kernels.matmul(x[:m], qt, threads=th), alone[:m]), (name, k, m, th)


@needs_c
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", NAMES)
def test_prompt_sized_m_within_reference_bounds(name, layout):
    for k in _ks(name):
        qt, x = _case(name, 67, k, 40, seed=3 * k + TYPES[name].code, layout=layout)
        for path in kernels.info().simd_runnable:
            kernels.set_simd(path)
            assert within_int8_bound(kernels.matmul(x, qt, threads=2), x, qt), (name, k, path)
            assert same_bits(kernels.matmul(x, qt, act="f32"), kernels.matmul(x, attrs_rowwise(qt), act="f32")), (name, k, path)


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_interleaved_kernels_identical_on_every_instruction_set(name):
    """AVX2 (vpmaddubsw, int16 partial sums) and AVX-VNNI / AVX512-VNNI (vpdpbusd, int32) reach the
    same exact integer sums, so every SIMD path the CPU runs gives the same bits, at every tiling:
    AVX-512's 16-row tiles at decode-sized M (1-4, two groups of 8 rows at a time) and the odd group
    of 72 rows on the 8-row tiles included."""
    runnable = [p for p in kernels.info().simd_runnable if p != "portable"]
    if len(runnable) < 2:
        pytest.skip(f"this CPU runs one SIMD path ({', '.join(runnable) or 'none'})")
    for k in _ks(name)[:3]:
        qt, x = _case(name, 72, k, 40, seed=7 * k + TYPES[name].code)
        outs = {}
        for path in runnable:
            kernels.set_simd(path)
            outs[path] = [kernels.matmul(x[:m], qt, threads=th) for m in (1, 2, 3, 4, 9, 16, 40) for th in (1, 2)]
        first = outs[runnable[0]]
        for path in runnable[1:]:
            assert all(same_bits(a, b) for a, b in zip(outs[path], first)), (name, k, path, runnable[0])


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_decode_read_plans_give_the_same_bits(name):
    """The plans "paired" (AVX-512: two groups of 8 rows per decode tile) and "single" (one) on every SIMD
    path, at the M where the plan acts (1, 2) and past it; 72 rows leave an odd group."""
    for k in _ks(name)[:3]:
        qt, x = _case(name, 72, k, 5, seed=11 * k + TYPES[name].code)
        for path in kernels.info().simd_runnable:
            kernels.set_simd(path)
            outs = {}
            for plan in kernels.READ_PLANS:
                kernels.set_decode_read(plan)
                outs[plan] = [kernels.matmul(x[:m], qt, threads=th) for m in (1, 2, 3, 5) for th in (1, 2)]
            assert all(same_bits(a, b) for a, b in zip(*outs.values())), (name, k, path)


@needs_c
@pytest.mark.parametrize("name,k", [("Q4_K", 4096), ("Q4_K", 4352), ("Q5_0", 4096), ("Q5_0", 4128)])
def test_longest_rows_of_the_amx_tiles_keep_the_bits(name, k):
    """K = 4096 fills the AMX kernels' stack buffers exactly; one block more falls back to the zmm tiles.
    M = 17: one full tile of 16 activation rows and a tile of one."""
    qt, x = _case(name, 48, k, 17, seed=k + TYPES[name].code)
    alone = np.stack([kernels.matmul(x[i], qt, threads=1) for i in range(len(x))])
    for th in (1, 2):
        assert same_bits(kernels.matmul(x, qt, threads=th), alone), (name, k, th)


def attrs_rowwise(qt):
    """The same weight row by row: the portable decoders on both layouts compute the same bits."""
    return QuantizedTensor.from_blocks(qt.gguf_blocks(), qt.qtype, qt.shape, interleave=False)


@needs_c
@pytest.mark.parametrize("name", NAMES)
def test_interleaved_rows_on_the_portable_path_equal_row_by_row(name):
    qt, x = _case(name, 40, 512, 6, seed=11)
    flat = attrs_rowwise(qt)
    kernels.set_simd("portable")
    for act in ("int8", "f32"):
        assert same_bits(kernels.matmul(x, qt, act=act), kernels.matmul(x, flat, act=act)), act


@needs_c
@pytest.mark.parametrize("name,k", [("Q4_K", 71680), ("Q5_K", 71680), ("Q6_K", 65792), ("Q6_K", 98560), ("Q5_0", 49248)])
def test_long_rows_keep_the_bits(name, k):
    """Rows too long to decode into the kernels' stack buffer (then decoded per tile), and per-tile
    activation sums that do not fit there either (then made where used)."""
    qt, x = _case(name, 13, k, 11, seed=5, layout="rowwise")
    alone = np.stack([kernels.matmul(x[i], qt) for i in range(len(x))])
    for m in (8, 9, 11):
        assert same_bits(kernels.matmul(x[:m], qt), alone[:m]), (name, k, m)
    assert within_int8_bound(kernels.matmul(x[:9], qt), x[:9], qt)
