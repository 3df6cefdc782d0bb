"""C kernels vs the numpy reference: property tests over shapes, schemes, SIMD paths, threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesdk import _kernels_ref as ref
from edgesdk import kernels
from edgesdk._errors import KernelError
from edgesdk.quant import quantize

C = kernels.available()
needs_c = pytest.mark.skipif(not C, reason="C kernels not built")
SIMD_ORDER = ["portable", "avx2", "avxvnni", "avx512vnni", "neon"]
CONFIGS = [(4, "sym", 32), (4, "asym", 32), (8, "sym", 32), (4, "sym", 64), (4, "asym", 128),
           (8, "sym", 64), (4, "sym", 10**6), (4, "asym", 10**6), (8, "sym", 10**6)]


def simd_paths():
    """Every path this CPU can run (each is capped at what CPUID reports)."""
    if not C:
        return []
    best = kernels.info().simd_detected
    if best == "neon":
        return ["portable", "neon"]
    return SIMD_ORDER[: SIMD_ORDER.index(best) + 1]


@pytest.fixture(autouse=True)
def _restore():
    threads = kernels.get_threads()
    yield
    if C:
        kernels._set_simd(kernels.info().simd_detected)
    kernels.set_threads(threads)


def _case(rng, m, n, k, bits, scheme, bs):
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 2)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    return x, quantize(w, bits=bits, block_size=bs, scheme=scheme)


def _scale(x, qt):
    """|x| @ |W|.T: the natural magnitude of each output's rounding error."""
    return np.abs(x).astype(np.float64) @ np.abs(qt.dequantize()).T.astype(np.float64) + 1e-30


def _raw_scale(x, qt):
    """|x| @ (d * (code + offset) + |m|).T: the int8 path sums codes and offset terms
    separately (d*dx*sum(code*xq) - offset*d*dx*sum(xq)), so float rounding scales with these."""
    n, k = qt.shape
    blk = np.minimum(np.arange(k) // min(qt.block_size, k), qt.n_blocks - 1)
    d = np.abs(qt.scale_matrix()[:, blk]).astype(np.float64)
    raw = d * (qt.codes().astype(np.float64) + qt.offset)
    if qt.mins is not None:
        raw += np.abs(qt.min_matrix()[:, blk])
    return np.abs(x).astype(np.float64) @ raw.T + 1e-30


@needs_c
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 300), n=st.integers(1, 70), k=st.integers(1, 200), cfg=st.sampled_from(CONFIGS),
       threads=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_c_matches_reference(m, n, k, cfg, threads, seed):
    if m > 40:  # large M with small N/K keeps the example fast
        k = min(k, 64)
    bits, scheme, bs = cfg
    rng = np.random.default_rng(seed)
    x, qt = _case(rng, m, n, k, bits, scheme, bs)
    kernels.set_threads(threads)
    exact = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    i8ref = ref.matmul_int8_exact(x, qt)
    sc, rsc = _scale(x, qt), _raw_scale(x, qt)
    for path in simd_paths():
        kernels._set_simd(path)
        yf = kernels.matmul(x, qt, act="f32")
        assert np.all(np.abs(yf - exact) <= 1e-5 * sc), path
        yi = kernels.matmul(x, qt)
        assert np.all(np.abs(yi - i8ref) <= 1e-5 * rsc), path


@needs_c
@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 100), k=st.integers(1, 300), cfg=st.sampled_from(CONFIGS),
       seed=st.integers(0, 2**31))
def test_results_identical_for_all_thread_counts(m, n, k, cfg, seed):
    x, qt = _case(np.random.default_rng(seed), m, n, k, *cfg)
    for act in ("int8", "f32"):
        base = kernels.matmul(x, qt, act=act, threads=1)
        for t in (2, 3, 4):
            assert np.array_equal(kernels.matmul(x, qt, act=act, threads=t), base)


def test_int8_path_error_bound():
    """Documented bound of the int8-activation path against the exact product."""
    rng = np.random.default_rng(1)
    x, qt = _case(rng, 7, 33, 100, 4, "asym", 32)
    _, dx, _ = ref.quantize_activations(x)
    w = np.abs(qt.dequantize()).astype(np.float64)
    k = x.shape[1]
    wb = np.zeros((w.shape[0], dx.shape[1] * 32))
    wb[:, :k] = w
    bound = np.einsum("ms,ns->mn", dx.astype(np.float64) / 2, wb.reshape(w.shape[0], -1, 32).sum(-1))
    exact = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    y = kernels.matmul(x, qt)
    assert np.all(np.abs(y - exact) <= bound * (1 + 1e-4) + 1e-5 * _scale(x, qt))


@needs_c
def test_activation_quantizer_bit_identical():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 77)) * 3).astype(np.float32)
    x[1, :32] = 0
    x[2, 5] = 127.5  # exact half steps exercise round-half-even
    x[3, 40:] = np.arange(37) * 0.5
    for path in simd_paths():
        kernels._set_simd(path)
        for a, b in zip(kernels.quantize_activations(x), ref.quantize_activations(x)):
            assert np.array_equal(a, b), path


def test_vector_and_out_buffer():
    rng = np.random.default_rng(3)
    x, qt = _case(rng, 1, 40, 96, 4, "sym", 32)
    out = np.empty(40, np.float32)
    y = kernels.matmul(x[0], qt, out=out)
    assert y is out
    np.testing.assert_allclose(y, kernels.matmul(x, qt)[0], rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["f64", "noncontig", "3d", "k", "out", "nan", "inf", "act", "w", "threads", "list",
                                 "unaligned", "readonly_out"])
def test_bad_input_raises_kernel_error(bad):
    rng = np.random.default_rng(4)
    x, qt = _case(rng, 3, 20, 64, 4, "sym", 32)
    kw = {}
    if bad == "f64":
        x = x.astype(np.float64)
    elif bad == "noncontig":
        x = np.asfortranarray(np.repeat(x, 2, axis=0))[::2]
    elif bad == "3d":
        x = x[None]
    elif bad == "k":
        x = x[:, :63].copy()
    elif bad == "out":
        kw["out"] = np.empty((3, 21), np.float32)
    elif bad == "nan":
        x[1, 5] = np.nan
    elif bad == "inf":
        x[2, 63] = -np.inf
    elif bad == "act":
        kw["act"] = "int4"
    elif bad == "w":
        qt = qt.dequantize()
    elif bad == "threads":
        kw["threads"] = 0
    elif bad == "list":
        x = x.tolist()
    elif bad == "unaligned":
        buf = np.zeros(x.nbytes + 1, np.uint8)
        x = np.frombuffer(buf.data, np.float32, count=x.size, offset=1).reshape(x.shape)
    elif bad == "readonly_out":
        o = np.empty((3, 20), np.float32)
        o.setflags(write=False)
        kw["out"] = o
    with pytest.raises(KernelError):
        kernels.matmul(x, qt, **kw)


def test_info_reports_choice():
    i = kernels.info()
    assert i.impl in ("c", "numpy")
    if i.impl == "c":
        assert i.simd in SIMD_ORDER and i.threads >= 1


def test_numpy_impl_matches(monkeypatch):
    rng = np.random.default_rng(5)
    x, qt = _case(rng, 4, 30, 70, 4, "asym", 32)
    monkeypatch.setattr(kernels, "_impl", "numpy")
    yi = kernels.matmul(x, qt)
    yf = kernels.matmul(x, qt, act="f32")
    sc = _scale(x, qt)
    assert np.all(np.abs(yi - ref.matmul_int8_exact(x, qt)) <= 1e-5 * _raw_scale(x, qt))
    assert np.all(np.abs(yf - x.astype(np.float64) @ qt.dequantize().T) <= 1e-5 * sc)
    with pytest.raises(KernelError):
        x[0, 0] = np.nan
        kernels.matmul(x, qt)


@pytest.mark.parametrize("env,expect", [({"EDGESDK_KERNELS": "numpy"}, "numpy none"),
                                        ({"EDGESDK_KERNELS": "c", "EDGESDK_SIMD": "portable"}, "c portable"),
                                        ({"EDGESDK_KERNELS": "bogus", "EDGESDK_SIMD": "x", "EDGESDK_THREADS": "y"}, "c ")])
def test_env_selects_implementation(env, expect):
    import os
    import subprocess
    import sys

    if expect.startswith("c ") and not C:
        pytest.skip("C kernels not built")
    code = ("import edgesdk.kernels as k\n"
            "try:\n i = k.info(); print(i.impl, i.simd)\n"
            "except Exception as e: print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert expect in r.stdout, r.stdout + r.stderr


@needs_c
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_pool_survives_fork():
    import os

    rng = np.random.default_rng(6)
    x, qt = _case(rng, 8, 256, 512, 4, "sym", 32)
    y = kernels.matmul(x, qt, threads=2)
    pid = os.fork()
    if pid == 0:  # child: the pool's threads are gone; the kernels must start new ones
        ok = np.array_equal(kernels.matmul(x, qt, threads=2), y)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
