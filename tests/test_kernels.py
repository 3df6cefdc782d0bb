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
from kernel_bounds import f32_scale, within_f32_bound, within_int8_bound

C = kernels.available()
needs_c = pytest.mark.skipif(not C, reason="C kernels not built")
CONFIGS = [
    (4, "sym", 32),
    (4, "asym", 32),
    (8, "sym", 32),
    (4, "sym", 64),
    (4, "asym", 128),
    (8, "sym", 64),
    (4, "sym", 10**6),
    (4, "asym", 10**6),
    (8, "sym", 10**6),
]


def simd_paths():
    """Every path this CPU can run, whichever they are: no order among CPUs is assumed."""
    return list(kernels.info().simd_runnable) if C else []


@pytest.fixture(autouse=True)
def _restore():
    threads = kernels.get_threads()
    yield
    kernels.set_simd("auto")
    kernels.set_decode_read("auto")
    kernels.set_threads(threads)


def _case(rng, m, n, k, bits, scheme, bs):
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 2)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    return x, quantize(w, bits=bits, block_size=bs, scheme=scheme)


@needs_c
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 300), n=st.integers(1, 70), k=st.integers(1, 200), cfg=st.sampled_from(CONFIGS), threads=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_c_matches_reference(m, n, k, cfg, threads, seed):
    if m > 40:  # large M with small N/K keeps the example fast
        k = min(k, 64)
    bits, scheme, bs = cfg
    rng = np.random.default_rng(seed)
    x, qt = _case(rng, m, n, k, bits, scheme, bs)
    kernels.set_threads(threads)
    for path in simd_paths():
        assert kernels.set_simd(path) == path
        assert within_f32_bound(kernels.matmul(x, qt, act="f32"), x, qt), path
        assert within_int8_bound(kernels.matmul(x, qt), x, qt), path


@needs_c
@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 100), k=st.integers(1, 300), cfg=st.sampled_from(CONFIGS), seed=st.integers(0, 2**31))
def test_results_identical_for_all_thread_counts(m, n, k, cfg, seed):
    x, qt = _case(np.random.default_rng(seed), m, n, k, *cfg)
    for act in ("int8", "f32"):
        base = kernels.matmul(x, qt, act=act, threads=1)
        for t in (2, 3, 4):
            assert np.array_equal(kernels.matmul(x, qt, act=act, threads=t), base)


@needs_c
@pytest.mark.parametrize("bits", [4, 8])
def test_two_group_tiles_give_the_one_group_bits(bits):
    """AVX-512 runs the i16x32 weights two 16-row groups at a time at every M (two weight streams);
    the 256-bit paths run one group. 130 groups: pairs, and odd groups at the ends of the work
    chunks. AVX2 takes 8-bit codes signed (no offset correction, other float rounding): left out there."""
    runnable = [p for p in simd_paths() if p != "portable" and not (bits == 8 and p == "avx2")]
    if len(runnable) < 2 or not any(p in ("amx", "avx512vnni") for p in runnable):
        pytest.skip(f"needs AVX-512 VNNI and a 256-bit path to compare (runnable: {runnable})")
    rng = np.random.default_rng(bits)
    x, qt = _case(rng, 5, 130 * 16, 256, bits, "sym", 32)
    outs = {}
    for path in runnable:
        kernels.set_simd(path)
        outs[path] = [kernels.matmul(x[:m], qt, threads=t) for m in (1, 2, 5) for t in (1, 2)]
    first = outs[runnable[0]]
    for path in runnable[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(outs[path], first)), (bits, path, runnable[0])


@needs_c
@pytest.mark.parametrize("bits", [4, 8])
def test_decode_read_plans_give_the_same_bits(bits):
    """On every path, "paired" and "single" (on AVX-512 at M <= 2: two 16-row groups per tile, or
    one) compute the same outputs, at the M where the plan acts and past it, with 130 groups (odd
    ones at the ends of the work chunks)."""
    rng = np.random.default_rng(10 + bits)
    x, qt = _case(rng, 5, 130 * 16, 256, bits, "sym", 32)
    for path in simd_paths():
        kernels.set_simd(path)
        outs = {}
        for plan in kernels.READ_PLANS:
            assert kernels.set_decode_read(plan) == plan == kernels.info().decode_read
            outs[plan] = [kernels.matmul(x[:m], qt, threads=t) for m in (1, 2, 3, 5) for t in (1, 2)]
        assert all(np.array_equal(a, b) for a, b in zip(*outs.values())), (bits, path)


@needs_c
def test_decode_read_plan_default_follows_the_cpu_vendor():
    """auto: single on AMD / Hygon (the vendor as Linux reads it), paired elsewhere; a name outside
    the plans is an error that changes nothing."""
    import os
    import platform

    assert kernels.set_decode_read("paired") == "paired"
    with pytest.raises(KernelError, match=r"unknown decode read plan 'both'; valid: auto, paired, single"):
        kernels.set_decode_read("both")
    assert kernels.info().decode_read == "paired"
    auto = kernels.set_decode_read(" AUTO ")
    if platform.machine() in ("x86_64", "AMD64") and os.path.exists("/proc/cpuinfo"):
        vendor = next((ln.split(":")[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("vendor_id")), "")
        assert auto == ("single" if vendor in ("AuthenticAMD", "HygonGenuine") else "paired"), vendor


@needs_c
@pytest.mark.parametrize("value,expect", [("single", "single"), ("paired", "paired"), ("Single ", "single"), ("bogus", None)])
def test_env_sets_the_decode_read_plan(value, expect):
    import os
    import subprocess
    import sys

    code = "import edgesdk.kernels as k\nprint(k.info().decode_read, k.set_decode_read('auto'))\n"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EDGESDK_DECODE_READ": value}, capture_output=True, text=True, timeout=120)
    got, auto = r.stdout.split()
    assert got == (expect or auto), (value, r.stdout, r.stderr)
    if expect is None:
        assert "EDGESDK_DECODE_READ='bogus' is not one of auto, paired, single" in r.stderr, r.stderr


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
    assert np.all(np.abs(y - exact) <= bound * (1 + 1e-4) + 1e-5 * f32_scale(x, qt))


@needs_c
def test_activation_quantizer_bit_identical():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, 77)) * 3).astype(np.float32)
    x[1, :32] = 0
    x[2, 5] = 127.5  # exact half steps exercise round-half-even
    x[3, 40:] = np.arange(37) * 0.5
    for path in simd_paths():
        assert kernels.set_simd(path) == path
        for a, b in zip(kernels.quantize_activations(x), ref.quantize_activations(x)):
            assert np.array_equal(a, b), path


@needs_c
def test_kquant_activation_quantizer_bit_identical():
    """One scale per 256 (K-quant weights), every path: codes and scales as the reference's, and cs
    per 32 elements = dx * their sum."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 768)) * 3).astype(np.float32)
    x[1, :256] = 0
    x[2, 300] = 127.5 * 4
    x[3, 256:512] = np.arange(256) * 0.5
    xq, dx, _ = ref.quantize_activations(x, 256)
    cs = (np.repeat(dx, 8, axis=1) * xq.reshape(4, -1, 32).sum(-1, dtype=np.int32).astype(np.float32)).astype(np.float32)
    for path in simd_paths():
        assert kernels.set_simd(path) == path
        got = kernels.quantize_activations(x, 256)
        for a, b in zip(got, (xq, dx, cs)):
            assert np.array_equal(a, b), path
        bad = x.copy()
        bad[2, 700] = np.nan
        with pytest.raises(KernelError, match="NaN"):
            kernels.quantize_activations(bad, 256)
    with pytest.raises(KernelError, match="multiple of 256"):
        kernels.quantize_activations(x[:, :300], 256)


def test_vector_and_out_buffer():
    rng = np.random.default_rng(3)
    x, qt = _case(rng, 1, 40, 96, 4, "sym", 32)
    out = np.empty(40, np.float32)
    y = kernels.matmul(x[0], qt, out=out)
    assert y is out
    np.testing.assert_allclose(y, kernels.matmul(x, qt)[0], rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["f64", "noncontig", "3d", "k", "out", "nan", "inf", "act", "w", "threads", "list", "unaligned", "readonly_out"])
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
        assert i.simd in i.simd_runnable and i.simd == i.simd_detected == i.simd_runnable[0] and i.threads >= 1
        assert i.simd_runnable[-1] == "portable"


@needs_c
def test_unknown_path_is_a_clear_error():
    with pytest.raises(KernelError, match=r"unknown SIMD path 'sse9'; valid: auto, .*portable"):
        kernels.set_simd("sse9")
    assert kernels.info().simd == kernels.info().simd_detected  # nothing changed


@needs_c
def test_path_the_cpu_lacks_is_never_run(caplog):
    """Every known path not runnable here (there is always one: no CPU has both NEON and AVX2)
    gives the best runnable path and a warning naming what is missing."""
    i = kernels.info()
    others = [p for p in kernels._path_names() if p not in i.simd_runnable]
    assert others
    x, qt = _case(np.random.default_rng(7), 3, 20, 64, 4, "sym", 32)
    for p in others:
        caplog.clear()
        with caplog.at_level("WARNING", logger="edgesdk.kernels"):
            assert kernels.set_simd(p) == i.simd_detected
        assert f"SIMD path {p!r}" in caplog.text and ("needs" in caplog.text or "not built" in caplog.text)
        now = kernels.info()
        assert now.simd == i.simd_detected and now.simd_requested == p and "running" in now.simd_note
        assert within_int8_bound(kernels.matmul(x, qt), x, qt)
    kernels.set_simd("auto")
    assert kernels.info().simd_requested is None and kernels.info().simd_note == ""


@needs_c
@pytest.mark.skipif(not __import__("os").path.exists("/proc/cpuinfo"), reason="needs Linux /proc/cpuinfo")
def test_feature_detection_matches_the_kernel():
    """Our CPUID/XCR0 (or HWCAP) reading against the Linux kernel's own feature list, feature by feature."""
    import platform

    flags: set[str] = set()
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.split(":")[0].strip() in ("flags", "Features"):
            flags = set(line.split(":", 1)[1].split())
            break
    linux = {
        "sse4.2": "sse4_2",
        "avx512vnni": "avx512_vnni",
        "avxvnni": "avx_vnni",
        "neon": "asimd",
        "dotprod": "asimddp",
        "amx-tile": "amx_tile",
        "amx-int8": "amx_int8",
    }
    arch = {
        "x86_64": ("sse4.2", "popcnt", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "avxvnni"),
        "aarch64": ("neon", "dotprod", "i8mm", "sve"),
    }.get(platform.machine())
    if arch is None or not flags:
        pytest.skip(f"no feature list to compare with on {platform.machine()}")
    got = set(kernels.info().cpu_features)
    for f in arch:
        assert (f in got) == (linux.get(f, f) in flags), f
    # AMX also needs the process's grant from Linux, which a hypervisor can withhold where the flags
    # list it: never detected without the flag, and usable exactly when detected
    for f in ("amx-tile", "amx-int8") if platform.machine() == "x86_64" else ():
        assert f not in got or linux[f] in flags, f
    assert kernels.info().amx_usable == ({"amx-tile", "amx-int8"} <= got)


@needs_c
def test_fused_llm_loop_follows_the_kernel_path():
    pytest.importorskip("edgesdk._cllm")
    assert kernels.set_simd("portable") == "portable"
    assert kernels.info().llm_loop == "portable"
    kernels.set_simd("auto")
    assert kernels.info().llm_loop in ("avx2", "portable")


def test_numpy_impl_matches(monkeypatch):
    rng = np.random.default_rng(5)
    x, qt = _case(rng, 4, 30, 70, 4, "asym", 32)
    monkeypatch.setattr(kernels, "_impl", "numpy")
    assert within_int8_bound(kernels.matmul(x, qt), x, qt)
    assert within_f32_bound(kernels.matmul(x, qt, act="f32"), x, qt)
    with pytest.raises(KernelError):
        x[0, 0] = np.nan
        kernels.matmul(x, qt)


@pytest.mark.parametrize(
    "env,expect",
    [
        ({"EDGESDK_KERNELS": "numpy"}, "numpy none"),
        ({"EDGESDK_KERNELS": "c", "EDGESDK_SIMD": "portable"}, "c portable"),
        ({"EDGESDK_KERNELS": "bogus", "EDGESDK_SIMD": "x", "EDGESDK_THREADS": "y"}, "c "),
    ],
)
def test_env_selects_implementation(env, expect):
    import os
    import subprocess
    import sys

    if expect.startswith("c ") and not C:
        pytest.skip("C kernels not built")
    code = "import edgesdk.kernels as k\ntry:\n i = k.info(); print(i.impl, i.simd)\nexcept Exception as e: print(type(e).__name__)\n"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert expect in r.stdout, r.stdout + r.stderr


SIMD_VALUES = ["avx512vnni", "avxvnni", "avx2", "neon", "portable", "auto", "", " AVX2 ", "avx512", "sse2", "none", "1", "-1", "avx2,neon", "ÿ", "x" * 300]


@needs_c
def test_no_simd_value_crashes():
    """EDGESDK_SIMD: every documented value and junk. Each run quantizes, multiplies and reports;
    a path the CPU lacks would die by SIGILL here. One interpreter per value."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, edgesdk.kernels as k\n"
        "from edgesdk.quant import quantize\n"
        "w = quantize(np.ones((32, 64), np.float32), bits=4)\n"
        "y = k.matmul(np.ones((5, 64), np.float32), w); y8 = k.matmul(np.ones(64, np.float32), quantize(np.ones((16, 64), np.float32), bits=8))\n"
        "i = k.info(); assert i.simd in i.simd_runnable\n"
        "print('OK', i.simd, float(y.sum()), float(y8.sum()))\n"
    )
    runnable = kernels.info().simd_runnable
    for v in SIMD_VALUES:
        r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EDGESDK_SIMD": v}, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "OK" in r.stdout, (v, r.returncode, r.stderr[-2000:])
        want = v.strip().lower()
        ran = r.stdout.split()[1]
        assert ran == (want if want in runnable else runnable[0]), (v, ran)
        if want and want != "auto" and want not in runnable:
            assert "SIMD path" in r.stderr or "unknown SIMD path" in r.stderr, (v, r.stderr)


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


@needs_c
def test_bandwidth_probe_reads_every_byte_on_every_path():
    """ek_stream_read XORs every 64-bit word (no tail when the size is a multiple of 256): each path,
    read loop, prefetch distance and thread count must see the whole buffer, split into its 1 MiB
    pieces; a read loop the path lacks reads nothing."""
    buf = np.random.default_rng(11).integers(0, 2**63, (3 << 20) // 8 + 512, dtype=np.uint64)
    want = int(np.bitwise_xor.reduce(buf))
    ptr = kernels._ffi.cast("void *", kernels._ffi.from_buffer(buf))
    for path in simd_paths():
        assert kernels.set_simd(path) == path
        loops = kernels._lib.ek_stream_loops()
        assert loops == (2 if path in ("amx", "avx512vnni") else 1)
        for th in (1, 2, 3):
            for loop in range(loops):
                for pf in kernels.PROBE_PREFETCH:
                    assert kernels._lib.ek_stream_read(ptr, buf.nbytes, th, loop, pf) == want, (path, th, loop, pf)
        assert kernels._lib.ek_stream_read(ptr, buf.nbytes, 1, loops, 0) == kernels._lib.ek_stream_read(ptr, buf.nbytes, 1, -1, 0) == 0


@needs_c
def test_read_loop_reads_the_range_it_is_given_and_refuses_others():
    """ReadLoop.read (what benchmarks time a kernel call against) reads exactly bytes offset ..
    offset + nbytes of the array, on every path and read loop; a range outside the array, an array
    it cannot read in place or a loop the path lacks is a KernelError naming it, never a read."""
    buf = np.random.default_rng(12).integers(0, 2**63, (1 << 20) // 8, dtype=np.uint64)
    words = buf[64:-64]  # bytes 512 .. nbytes - 512: a multiple of 256, so no byte-wise tail
    want = int(np.bitwise_xor.reduce(words))
    for path in simd_paths():
        kernels.set_simd(path)
        for loop in range(kernels._lib.ek_stream_loops()):
            how = kernels.ReadLoop(loop, 1024, 0.0)
            assert how.read(buf, 512, words.nbytes, threads=2) == want, (path, loop)
            assert how.read(words) == want
    how = kernels.ReadLoop(0, 0, 0.0)
    for args, msg in (
        ((buf, -1, 8), "outside"),
        ((buf, 8, buf.nbytes), "outside"),
        ((buf, buf.nbytes + 1), "outside"),
        ((buf[::2],), "C-contiguous"),
        ((bytearray(64),), "C-contiguous"),
    ):
        with pytest.raises(KernelError, match=msg):
            how.read(*args)
    with pytest.raises(KernelError, match="read loop 9"):
        kernels.ReadLoop(9, 0, 0.0).read(buf)
    with pytest.raises(KernelError, match="at least one piece"):
        kernels.fastest_read(1, set_bytes=1 << 20, piece=8 << 20)
    best = kernels.fastest_read(1, set_bytes=32 << 20, passes=1, piece=8 << 20)
    assert best.gbs > 0 and 0 <= best.loop < kernels._lib.ek_stream_loops() and best.prefetch in kernels.PROBE_PREFETCH
