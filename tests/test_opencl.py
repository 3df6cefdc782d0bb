"""The OpenCL backend for real: PoCL gives CI and CPU-only machines an OpenCL device on the CPU.

Every kernel is compared with the numpy reference the CPU backend already uses (dequantize_rows,
_rms_norm, Transformer._rope/_attend_one, _gated). SmolLM2 greedy tokens are compared with the CPU
backend in its exact mode (``activations="f32"``): the OpenCL kernels keep activations in fp32, so
the two differ only by summation order (~1e-6 relative). The CPU default (int8 activations per
32-block) rounds every activation to 8 bits, a different arithmetic, not a reference for fp32 kernels.
Every architecture of ``test_architectures.py`` (its "mix" files: Q4_K_M's tensor types) is compared
with the numpy reference the same way: logits and greedy tokens.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgesdk
from edgesdk import SessionOptions
from edgesdk._errors import BackendError, BackendUnavailable, PlacementError

cl = pytest.importorskip("pyopencl", reason="pyopencl is not installed (pip install -e '.[opencl]')")

from edgesdk.llm import LLM  # noqa: E402
from edgesdk.llm._model import Transformer, _gated, _rms_norm, rope_rotation, softcap  # noqa: E402
from edgesdk.llm.arch import FEATURES  # noqa: E402
from edgesdk.llm._weights import dequantize_rows  # noqa: E402
from edgesdk.quant import TYPES  # noqa: E402
from gguf_blocks import F16_FIELDS, random_blocks  # noqa: E402
from edgesdk_backends.opencl import OpenCLBackend  # noqa: E402
from edgesdk_backends.opencl._transformer import IMPLEMENTS, rope_tables  # noqa: E402
from edgesdk_backends.opencl._progcache import ProgramCache, build_program  # noqa: E402
from edgesdk_backends.opencl._runtime import GEMM_KINDS, GEMV_MAX_ROWS, GEMV_SHAPES, ClRuntime, ClWeight  # noqa: E402

_TINY_SRC = "kernel void one(global int *a) { a[get_global_id(0)] = 1; }"
QTYPES = tuple(TYPES)  # every type of the quant-type table


def _compiles(dev) -> str | None:
    """None if ``dev``'s compiler builds a trivial kernel, else why not (e.g. an LLVM that cannot name this CPU)."""
    try:
        cl._cl._Program(cl.Context([dev]), _TINY_SRC).build(b"", [dev])
        return None
    except Exception as exc:
        return f"{dev.name}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="module")
def backend():
    b = OpenCLBackend()
    try:
        b.devices = b.probe()
    except BackendUnavailable as exc:
        pytest.skip(f"OpenCL unavailable: {exc}")
    return b


@pytest.fixture(scope="module")
def device(backend):
    """The first OpenCL device whose compiler works (a PoCL built with an LLVM too old for this CPU's
    name cannot compile anything: that is an unavailable device, not a failure of these kernels)."""
    reasons = []
    for d in backend.devices:
        why = _compiles(backend._cl_device(d.id))
        if why is None:
            return d
        reasons.append(f"{d.id} {why}")
    pytest.skip("no OpenCL device can compile a kernel: " + "; ".join(reasons))


@pytest.fixture(scope="module")
def rt(backend, device):
    return ClRuntime(backend._cl_device(device.id), ProgramCache())


def _buf(rt, a):
    return rt.upload(np.ascontiguousarray(a, np.float32))


def _read(rt, buf, shape):
    return rt.read(np.empty(shape, np.float32), buf)


def _packed(rng, qtype, n, k):
    """GGUF rows of a random (n, k) weight and their dequantized reference."""
    import gguf

    a = rng.standard_normal((n, k)).astype(np.float32)
    if qtype in ("F16", "F32"):
        raw = a.astype(np.float16 if qtype == "F16" else np.float32)
    elif qtype in F16_FIELDS:  # no gguf-py quantizer: random blocks
        raw = random_blocks(qtype, (n, k), rng, 1.0)
    else:
        raw = gguf.quants.quantize(a, getattr(gguf.GGMLQuantizationType, qtype))
    return raw, dequantize_rows(raw, qtype, k)


# --- kernels against the numpy reference ------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    qtype=st.sampled_from(QTYPES),
    m=st.sampled_from([1, 2, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1, 37]),
    n=st.integers(1, 70),
    kb=st.integers(1, 6),
    shape=st.sampled_from(sorted(GEMV_SHAPES)),
    accumulate=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matmul_matches_dequantized_reference(rt, qtype, m, n, kb, shape, accumulate, seed):
    """GEMV (m <= GEMV_MAX_ROWS) and GEMM, each in its GPU and its CPU form (work-group shape; local-memory
    tiles or register rows), every format, ragged N and M, writing at a column offset of a wider output,
    with and without accumulation."""
    rng = np.random.default_rng(seed)
    k = 32 * kb * (TYPES[qtype].block // 32 if TYPES[qtype].block > 32 else 1)  # K-quants: whole 256-blocks
    raw, w = _packed(rng, qtype, n, k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    ldy, off = n + 5, 3
    y0 = rng.standard_normal((m, ldy)).astype(np.float32)
    rt.gemv_shape, rt.gemm_kind = GEMV_SHAPES[shape], GEMM_KINDS[shape]
    try:
        weight = ClWeight(rt, [(raw, qtype, n, k)])
        y = _buf(rt, y0)
        weight(_buf(rt, x), k, m, y, ldy, off, accumulate)
        got = _read(rt, y, (m, ldy))
    finally:
        native = "CPU" if rt.device.type & cl.device_type.CPU else "GPU"
        rt.gemv_shape, rt.gemm_kind = GEMV_SHAPES[native], GEMM_KINDS[native]
    want = y0.copy()
    want[:, off : off + n] = (y0[:, off : off + n] if accumulate else 0) + x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_fused_projection_of_mixed_formats_writes_each_part_in_its_columns(rt):
    rng = np.random.default_rng(3)
    k = 64
    parts = [_packed(rng, q, n, k) for q, n in (("Q4_0", 20), ("Q4_0", 12), ("Q8_0", 9), ("F16", 5))]
    weight = ClWeight(rt, [(raw, q, w.shape[0], k) for (raw, w), q in zip(parts, ("Q4_0", "Q4_0", "Q8_0", "F16"))])
    assert [s[0] for s in weight.segments] == ["Q4_0", "Q8_0", "F32"]  # consecutive same-format parts share a launch
    x = rng.standard_normal((2, k)).astype(np.float32)
    y = rt.empty(2 * weight.n * 4)
    weight(_buf(rt, x), k, 2, y, weight.n)
    want = x @ np.concatenate([w for _, w in parts]).T
    np.testing.assert_allclose(_read(rt, y, (2, weight.n)), want, rtol=1e-5, atol=1e-4)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 5), n=st.sampled_from([32, 100, 576]), row0=st.integers(0, 2), accumulate=st.booleans(), seed=st.integers(0, 999))
def test_rms_norm(rt, rows, n, row0, accumulate, seed):
    """Plain, and accumulating into the residual stream as a post norm does (x += norm(y))."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows + row0, n)).astype(np.float32) * 3
    w = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((rows, n)).astype(np.float32)
    out = _buf(rt, res)
    rt.rms_norm(_buf(rt, x), row0, _buf(rt, w), out, rows, n, 1e-5, accumulate)
    want = _rms_norm(x[row0:], w, 1e-5) + (res if accumulate else 0)
    np.testing.assert_allclose(_read(rt, out, (rows, n)), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 3), nh=st.sampled_from([1, 4]), nkv=st.sampled_from([1, 2]), hd=st.sampled_from([16, 64, 100, 128, 256]), seed=st.integers(0, 999))
def test_head_norm_matches_qk_norm(rt, T, nh, nkv, hd, seed):
    """QK-norm in place on the Q|K columns of strided qkv rows; V columns (and the row's padding) untouched."""
    rng = np.random.default_rng(seed)
    ld = (nh + 2 * nkv) * hd + 3
    qkv = (rng.standard_normal((T, ld)) * 5).astype(np.float32)
    wq, wk = (rng.standard_normal(hd).astype(np.float32) for _ in range(2))
    buf = _buf(rt, qkv)
    rt.head_norm(buf, ld, T, nh, nkv, hd, _buf(rt, wq), _buf(rt, wk), 1e-6)
    got = _read(rt, buf, (T, ld))
    heads = qkv[:, : (nh + nkv) * hd].reshape(T, nh + nkv, hd)
    want = np.concatenate([_rms_norm(heads[:, :nh], wq, 1e-6), _rms_norm(heads[:, nh:], wk, 1e-6)], axis=1).reshape(T, -1)
    np.testing.assert_allclose(got[:, : (nh + nkv) * hd], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[:, (nh + nkv) * hd :], qkv[:, (nh + nkv) * hd :])


def _cfg(mode="norm", nh=4, nkv=2, hd=16, rope_dim=None, scale=1.0, ropes=()):
    from edgesdk.llm._gguf import ModelConfig
    from edgesdk.llm.arch import Architecture

    return ModelConfig(Architecture("t", rope=mode), 1, nh * hd, 8, nh, nkv, hd, 256, 10, 1e-5, 10000.0, rope_dim or hd, rope_scale=scale, ropes=ropes)


@pytest.mark.parametrize("mode,rope_dim", [("norm", 16), ("neox", 16), ("neox", 8)])
def test_rope_matches_transformer_rope(rt, mode, rope_dim):
    cfg = _cfg(mode, rope_dim=rope_dim, scale=2.0)
    rng = np.random.default_rng(0)
    T, pos0, heads = 3, 5, cfg.n_head + cfg.n_head_kv
    ld = heads * cfg.head_dim + 7  # a wider row: V columns (and more) follow Q and K
    qkv = rng.standard_normal((T, ld)).astype(np.float32)
    rot = rope_rotation(cfg, np.arange(64))
    buf = _buf(rt, qkv)
    rt.rope(buf, ld, T, heads, cfg.head_dim, rope_dim, mode == "neox", _buf(rt, rot.real), _buf(rt, rot.imag), pos0)
    want = qkv.copy()
    ref = types.SimpleNamespace(cfg=cfg)
    Transformer._rope(ref, want[:, : heads * cfg.head_dim].reshape(T, heads, cfg.head_dim), rope_rotation(cfg, np.arange(pos0, pos0 + T))[:, None, :])
    np.testing.assert_allclose(_read(rt, buf, (T, ld)), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factors", [False, True], ids=["plain", "rope_freqs"])
def test_rope_tables_per_rope_with_factors(rt, factors):
    """One table per (base, linear scale) entry of cfg.ropes, each with the rope_freqs divisors applied,
    rotating exactly as the reference rotates with that entry."""
    cfg = _cfg("neox", ropes=((1e6, 2.0), (10000.0, 1.0)))
    f = np.geomspace(1.0, 8.0, cfg.rope_dim // 2).astype(np.float32) if factors else None
    tables = rope_tables(rt, cfg, 40, f)
    assert len(tables) == 2
    rng = np.random.default_rng(2)
    T, pos0, heads = 3, 30, cfg.n_head + cfg.n_head_kv
    qkv = rng.standard_normal((T, heads * cfg.head_dim)).astype(np.float32)
    ref = types.SimpleNamespace(cfg=cfg)
    outs = []
    for r, (cs, sn) in enumerate(tables):
        buf = _buf(rt, qkv)
        rt.rope(buf, qkv.shape[1], T, heads, cfg.head_dim, cfg.rope_dim, True, cs, sn, pos0)
        want = qkv.copy()
        rot = rope_rotation(cfg, np.arange(pos0, pos0 + T), r, f)[:, None, :]
        Transformer._rope(ref, want.reshape(T, heads, cfg.head_dim), rot)
        outs.append(_read(rt, buf, qkv.shape))
        np.testing.assert_allclose(outs[-1], want, rtol=1e-6, atol=1e-6)
    assert np.abs(outs[0] - outs[1]).max() > 0.1  # the two tables really differ


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pos0=st.sampled_from([0, 1, 63, 64, 130]),
    T=st.integers(1, 4),
    g=st.sampled_from([1, 3]),
    hd=st.sampled_from([16, 64, 96]),
    window=st.sampled_from([0, 0, 1, 6, 70]),
    seed=st.integers(0, 999),
)
def test_kv_store_and_attention_match_attend_one(rt, pos0, T, g, hd, window, seed):
    """Keys/values appended at pos0.., then causal GQA attention of each row over 0..pos0+t (or over its
    last `window` keys), across key-chunk boundaries (64 keys per chunk) and head dims that are not a
    multiple of 64."""
    nkv, n_ctx = 2, 160
    nh = nkv * g
    rng = np.random.default_rng(seed)
    nq, nk = nh * hd, nkv * hd
    qkv = rng.standard_normal((T, nq + 2 * nk)).astype(np.float32)
    k_old = rng.standard_normal((nkv, n_ctx, hd)).astype(np.float32)
    v_old = rng.standard_normal((nkv, n_ctx, hd)).astype(np.float32)
    kc, vc = _buf(rt, k_old), _buf(rt, v_old)
    out = rt.empty(T * nq * 4)
    qb = _buf(rt, qkv)
    scale = float(np.float32(1 / np.sqrt(hd)))
    rt.kv_store(qb, nq + 2 * nk, T, nq, nkv, hd, kc, vc, n_ctx, pos0)
    rt.attention(qb, nq + 2 * nk, T, kc, vc, out, nq, nh, nkv, hd, n_ctx, pos0, scale, window)
    cache = types.SimpleNamespace(k=k_old[None].copy(), v=v_old[None].copy())
    cache.k[0, :, pos0 : pos0 + T] = qkv[:, nq : nq + nk].reshape(T, nkv, hd).transpose(1, 0, 2)
    cache.v[0, :, pos0 : pos0 + T] = qkv[:, nq + nk :].reshape(T, nkv, hd).transpose(1, 0, 2)
    np.testing.assert_array_equal(_read(rt, kc, cache.k[0].shape), cache.k[0])
    np.testing.assert_array_equal(_read(rt, vc, cache.v[0].shape), cache.v[0])
    ref = types.SimpleNamespace(cfg=types.SimpleNamespace(n_head=nh, n_head_kv=nkv, head_dim=hd))
    want = np.stack([Transformer._attend_one(ref, qkv[t, :nq], cache, 0, pos0 + t + 1, np.float32(scale), window) for t in range(T)])
    np.testing.assert_allclose(_read(rt, out, (T, nq)), want, rtol=1e-5, atol=1e-5)


def test_swiglu_and_bias(rt):
    rng = np.random.default_rng(1)
    T, ff = 3, 100
    gu = rng.standard_normal((T, 2 * ff)).astype(np.float32) * 4
    out = rt.empty(T * ff * 4)
    rt.swiglu(_buf(rt, gu), out, T, ff)
    np.testing.assert_allclose(_read(rt, out, (T, ff)), _gated(gu.copy(), ff, "silu"), rtol=1e-5, atol=1e-6)
    b = rng.standard_normal(2 * ff).astype(np.float32)
    yb = _buf(rt, gu)
    rt.add_bias(yb, 2 * ff, _buf(rt, b), T, 2 * ff)
    np.testing.assert_array_equal(_read(rt, yb, gu.shape), gu + b)


def test_geglu_matches_gated_gelu_tanh(rt):
    """Including gates far out on both sides, where tanh saturates (the kernel's exp form must too)."""
    rng = np.random.default_rng(4)
    T, ff = 3, 96
    gu = (rng.standard_normal((T, 2 * ff)) * 4).astype(np.float32)
    gu[0, :8] = [-100, -30, -9, -1e-3, 0, 1e-3, 9, 100]
    out = rt.empty(T * ff * 4)
    rt.gated(_buf(rt, gu), out, T, ff, "gelu_tanh")
    np.testing.assert_allclose(_read(rt, out, (T, ff)), _gated(gu.copy(), ff, "gelu_tanh"), rtol=1e-5, atol=1e-6)


# --- program build cache ----------------------------------------------------------------------------


def test_program_cache_cold_cached_corrupt_and_rejected(tmp_path, backend, device, caplog):
    dev = backend._cl_device(device.id)
    ctx = cl.Context([dev])
    cache = ProgramCache(tmp_path)
    _, cold = build_program(ctx, dev, _TINY_SRC, "", cache)
    assert cold.how == "source" and cold.entry and (tmp_path / f"{cold.key}.clbin").exists()
    prg, warm = build_program(ctx, dev, _TINY_SRC, "", cache)
    assert warm.how == "cache" and warm.key == cold.key
    a = np.zeros(4, np.int32)
    buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=a)
    q = cl.CommandQueue(ctx)
    prg.one(q, (4,), None, buf)
    cl.enqueue_copy(q, a, buf)
    assert a.tolist() == [1, 1, 1, 1]  # the binary from the cache really runs
    # Other build options (or source) are another key: never a stale binary.
    assert build_program(ctx, dev, _TINY_SRC, "-DX=1", cache)[1].key != cold.key
    path = tmp_path / f"{cold.key}.clbin"
    blob = path.read_bytes()
    for bad in (blob[: len(blob) // 2], blob[:-1] + bytes([blob[-1] ^ 0xFF]), b"garbage"):
        path.write_bytes(bad)
        with caplog.at_level(logging.WARNING, "edgesdk.backends.opencl.cache"):
            assert build_program(ctx, dev, _TINY_SRC, "", cache)[1].how == "source"
        assert "unusable" in caplog.text
        caplog.clear()
        assert build_program(ctx, dev, _TINY_SRC, "", cache)[1].how == "cache"  # rebuilt entry is valid again
    # A well-formed entry whose binary the driver rejects: rebuilt from source, not trusted.
    cache.store(cold.key, b"\0not a program binary\0" * 8)
    info = build_program(ctx, dev, _TINY_SRC, "", cache)[1]
    assert info.how == "source" and "rejected" in info.note
    assert build_program(ctx, dev, _TINY_SRC, "", cache)[1].how == "cache"


def test_runtime_program_comes_from_cache_the_second_time(rt, backend, device):
    again = ClRuntime(backend._cl_device(device.id), ProgramCache())
    assert again.build_info.how == "cache" and again.build_info.key == rt.build_info.key


# --- backend: devices, placement, options -----------------------------------------------------------


def test_devices_reported_truthfully(backend):
    for d in backend.devices:
        t = d.details["opencl_type"]
        assert d.id.startswith("opencl:") and d.memory_bytes > 0 and d.details["driver"] and d.details["platform"]
        assert d.kind == {"GPU": "gpu", "CPU": "cpu"}.get(t, "dsp")
        assert d.simulated == (t == "CPU")  # PoCL is a CPU and says so


def test_cli_devices_lists_opencl_with_type_and_memory():
    p = subprocess.run([sys.executable, "-m", "edgesdk.cli", "devices", "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ocl = next(b for b in json.loads(p.stdout)["backends"] if b["name"] == "opencl")
    assert ocl["available"] and ocl["devices"]
    for d in ocl["devices"]:
        assert d["memory_bytes"] > 0 and d["details"]["opencl_type"] in d["name"]
        if d["details"]["opencl_type"] == "CPU":
            assert d["simulated"] and d["kind"] == "cpu"


def test_probe_reasons_when_opencl_is_missing(monkeypatch):
    from edgesdk_backends.opencl import _probe

    monkeypatch.setitem(sys.modules, "pyopencl", None)
    with pytest.raises(BackendUnavailable, match="pyopencl is not installed"):
        OpenCLBackend().probe()
    assert "pyopencl is not installed" in _probe.enumerate_devices()["unavailable"]
    monkeypatch.undo()
    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    assert "no OpenCL platform" in _probe.enumerate_devices()["unavailable"]

    def no_icd():
        raise cl.LogicError("clGetPlatformIDs failed: PLATFORM_NOT_FOUND_KHR")

    monkeypatch.setattr(cl, "get_platforms", no_icd)
    assert "PLATFORM_NOT_FOUND_KHR" in _probe.enumerate_devices()["unavailable"]
    monkeypatch.setattr(_probe, "_in_child", lambda: None)  # no child: the answer found here is the probe's
    monkeypatch.setattr("edgesdk_backends.opencl.discover", lambda: _probe.enumerate_devices())
    with pytest.raises(BackendUnavailable, match="PLATFORM_NOT_FOUND_KHR"):
        OpenCLBackend().probe()


def test_discovery_runs_in_a_child_and_is_cached_per_configuration(monkeypatch, tmp_path):
    """The drivers are not loaded into this process to list the devices; the list is cached, and a
    changed configuration, a corrupt entry or a failing child each lead to a fresh answer."""
    from edgesdk_backends.opencl import _probe

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    code = "import sys, edgesdk; st = edgesdk.get_registry().status('opencl'); print(len(st.devices), st.reason, 'pyopencl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout.split()
    assert int(out[0]) >= 1 and out[-1] == "False", out
    [entry] = list((tmp_path / "opencl").glob("devices-*.json"))
    fresh = _probe.enumerate_devices()
    calls = []
    monkeypatch.setattr(_probe, "_in_child", lambda: calls.append(1) or fresh)
    assert _probe.discover() == json.loads(entry.read_text())["answer"] and calls == []  # from the cache
    assert [d["device_name"] for d in _probe.discover()["devices"]] == [d["device_name"] for d in fresh["devices"]]
    monkeypatch.setenv("POCL_MAX_PTHREAD_COUNT", "1")  # another configuration: another key
    _probe.discover()
    assert calls == [1] and len(list((tmp_path / "opencl").glob("devices-*.json"))) == 2
    entry.write_text("{torn")
    monkeypatch.delenv("POCL_MAX_PTHREAD_COUNT")
    assert _probe.discover() == fresh and calls == [1, 1]
    monkeypatch.setattr(_probe, "_in_child", lambda: None)  # the child failed: found here, not cached
    assert _probe.discover(artifact_cache=False) == fresh


def test_a_device_that_changed_since_the_probe_is_an_error(device, monkeypatch):
    backend = OpenCLBackend()
    backend.probe()
    backend._probed[device.id] = {**backend._probed[device.id], "driver": "0.0-old"}
    with pytest.raises(BackendError, match="not the probed"):
        backend._cl_device(device.id)


def test_gpu_preference_does_not_pick_a_simulated_opencl_device(device):
    if any(d.kind == "gpu" and not d.simulated for d in edgesdk.get_registry().devices()):
        pytest.skip("this machine has a real GPU: prefer=('gpu',) rightly picks it")
    s = edgesdk.Session("hub:smollm2-135m", SessionOptions(prefer=("gpu",)))
    try:
        assert s.device.id == "cpu:0"
        why = {r.device: r.reason for r in s.placement.refusals}
        assert why[device.id] == "lower in preference than cpu:0"
    finally:
        s.close()


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"n_ctxx": 64}, "unknown opencl option"),
        ({"n_ctx": 1}, "n_ctx must be an int >= 2"),
        ({"prefill_chunk": 0}, "prefill_chunk"),
        ({"device": "opencl:9.9"}, "names another OpenCL device"),
    ],
)
def test_bad_backend_options_are_refused_with_the_reason(device, opts, match):
    with pytest.raises(PlacementError, match=match):
        edgesdk.Session("hub:smollm2-135m", SessionOptions(require=device.id, backend_options={"opencl": opts}))


# --- the LLM end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm(device):
    ocl = edgesdk.Session("hub:smollm2-135m", SessionOptions(prefer=(device.id,), backend_options={"opencl": {"n_ctx": 256}}))
    cpu = edgesdk.Session("hub:smollm2-135m", SessionOptions(prefer=("cpu",), backend_options={"cpu": {"activations": "f32", "n_ctx": 256, "kv_dtype": "f32"}}))
    yield ocl, cpu
    ocl.close()
    cpu.close()


def test_smollm2_greedy_tokens_match_cpu_backend(smollm, device):
    ocl, cpu = smollm
    assert ocl.device.id == device.id and ocl.device.simulated == device.simulated
    msgs = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
    texts = []
    for s in (ocl, cpu):
        s.runner.reset()
        texts.append(s.generate(msgs, max_tokens=40, ignore_eos=True))
        assert s.runner.last_stats.generated_tokens == 40
    # The conversation cache holds the prompt and every generated token but the last.
    a, b = ocl.runner.llm.cache.tokens, cpu.runner.llm.cache.tokens
    assert len(a) == len(b) and a == b, f"first difference at {next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)}"
    assert texts[0] == texts[1]
    assert ocl.runner.llm.model.impl == "opencl" and ocl.runner.build.how in ("source", "cache")


def test_smollm2_logits_and_chat_reuse(smollm):
    ocl, cpu = smollm
    ids = np.array([ocl.runner.tokenizer.encode("The capital of France is")], np.int64)
    got, want = ocl.run({"input_ids": ids})["logits"], cpu.run({"input_ids": ids})["logits"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max())
    # A longer prompt runs in chunks (24 rows: tiled GEMM, then 16: row-by-row GEMV) and agrees too.
    long = np.array([list(range(100, 140))], np.int64)
    model = ocl.runner.llm.model
    model.chunk = 24
    try:
        got = ocl.run({"input_ids": long})["logits"][0]
    finally:
        model.chunk = 128
    np.testing.assert_allclose(got, cpu.run({"input_ids": long})["logits"][0], atol=5e-3 * np.abs(want).max())
    # Runner.run is safe from several threads at once (they share the device's activation buffers in turn).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: ocl.run({"input_ids": ids})["logits"], range(3)))
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    chat = [{"role": "user", "content": "Hi"}]
    ocl.runner.reset()
    first = ocl.generate(chat, max_tokens=4)
    ocl.generate(chat + [{"role": "assistant", "content": first}, {"role": "user", "content": "And?"}], max_tokens=2)
    assert ocl.runner.last_stats.cached_tokens > 0  # the engine's KV reuse works on device buffers


@pytest.mark.parametrize("kind", [dict(tied=False, mixed=True, arch="qwen2"), dict(tied=True, mixed=False, kquant=True)], ids=["qwen2-mixed", "llama-kquants"])
def test_tiny_model_matches_cpu(tmp_path, device, kind):
    """qwen2: biases, neox RoPE, a fused Q/K/V of Q4_0 + Q8_0 and an untied F16 head; llama-kquants: Q4_K,
    Q5_K, Q6_K, Q2_K, Q3_K and IQ4_NL projections; both against the CPU numpy reference."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_llm_tiny import _write

    path = tmp_path / "tiny.gguf"
    _write(path, **kind)
    ids = np.array([[256, 72, 105, 33, 10, 200, 3]], np.int64)
    ocl = edgesdk.Session(str(path), SessionOptions(require=device.id))
    cpu = edgesdk.Session(str(path), SessionOptions(require="cpu:0", backend_options={"cpu": {"impl": "numpy", "kv_dtype": "f32"}}))
    try:
        got, want = ocl.run({"input_ids": ids})["logits"], cpu.run({"input_ids": ids})["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        assert ocl.generate("Hi", max_tokens=6, ignore_eos=True) == cpu.generate("Hi", max_tokens=6, ignore_eos=True)
    finally:
        ocl.close()
        cpu.close()


# --- every architecture: the primitives of edgesdk.llm.arch end to end ------------------------------


def test_implements_every_feature():
    assert set(IMPLEMENTS) == set(FEATURES)


def _greedy(model, ids, n_ctx, n=16):
    """Logits at every prompt position and the next ``n`` greedy tokens, on a fresh cache."""
    cache = model.new_cache(n_ctx)
    logits = model.forward(ids, cache, logits="all")
    out, last = [], logits[-1]
    for _ in range(n):
        out.append(int(np.argmax(last)))
        last = model.forward([out[-1]], cache)
    return logits, out


def _arch_file(tmp_path, name):
    from test_architectures import ARCH_CASES, MIX, write_model

    kw = dict(ARCH_CASES[name])
    return write_model(tmp_path / f"{name}.gguf", kw.pop("arch", name), types=MIX, **kw)


def _arch_cases():
    from test_architectures import ARCH_CASES

    return sorted(ARCH_CASES)


# The OpenCL pass keeps activations in fp32 on the same decoded weights as the numpy reference
# (impl="numpy", activations="f32"): only summation order differs, ~1e-6 of the logits' range on these
# files. 1e-4 leaves room for other devices' exp/sqrt and FMA contraction while any wrong primitive
# (norm placement, window, RoPE table, activation) is off by far more than that.
ARCH_TOLERANCE = 1e-4


@pytest.mark.parametrize("name", _arch_cases())
def test_architecture_matches_numpy_reference(tmp_path, device, name):
    """Q4_K_M-typed random files of every architecture: logits at all 48 prompt positions and 16 greedy
    tokens. The prompt runs in chunks of 20 (GEMM), 20 and 8 rows (row-by-row GEMV), so windowed
    layers slide across chunk boundaries; decoding then appends one row at a time."""
    from test_architectures import CTX, _prompt

    path = _arch_file(tmp_path, name)
    ids = _prompt()
    ref = LLM(path, impl="numpy", activations="f32", n_ctx=CTX, kv_dtype="f32")
    ocl = edgesdk.Session(path, SessionOptions(require=device.id, backend_options={"opencl": {"n_ctx": CTX}}))
    try:
        model = ocl.runner.llm.model
        assert model.impl == "opencl" and model.cfg.features <= set(IMPLEMENTS)
        model.chunk = 20
        want, want_tokens = _greedy(ref.model, ids, CTX)
        got, got_tokens = _greedy(model, ids, CTX)
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < ARCH_TOLERANCE, f"{name}: logits differ from the numpy reference by {err:.2e} of their range"
        assert got_tokens == want_tokens
    finally:
        ocl.close()
        ref.close()


def test_logit_softcap_applied_to_what_is_read_back(tmp_path, device):
    """No test architecture's file sets final_logit_softcapping: both passes get it through their config."""
    import attrs

    from test_architectures import CTX, _prompt

    path = _arch_file(tmp_path, "llama")
    ids = _prompt()[:12]
    ref = LLM(path, impl="numpy", activations="f32", n_ctx=CTX, kv_dtype="f32")
    ocl = edgesdk.Session(path, SessionOptions(require=device.id, backend_options={"opencl": {"n_ctx": CTX}}))
    try:
        model = ocl.runner.llm.model
        plain = model.forward(ids, model.new_cache(CTX), logits="all")
        cap = float(np.abs(plain).max() / 2)  # caps the largest logits hard, the small ones barely
        for m in (ref.model, model):
            m.cfg = attrs.evolve(m.cfg, logit_softcap=cap)
        got = model.forward(ids, model.new_cache(CTX), logits="all")
        want = ref.model.forward(ids, ref.model.new_cache(CTX), logits="all")
        np.testing.assert_allclose(got, softcap(plain.copy(), cap), rtol=1e-6, atol=1e-6)
        assert np.abs(got).max() < cap
        np.testing.assert_allclose(got, want, atol=ARCH_TOLERANCE * np.abs(want).max())
    finally:
        ocl.close()
        ref.close()


def test_generic_session_options_reach_the_opencl_runner(tmp_path, device, monkeypatch, capsys):
    """SessionOptions.n_ctx sizes the device KV cache (``edgesdk generate --n-ctx`` sets it, so it is
    no longer lost when the model lands here); a kv_dtype the device cache cannot store is refused."""
    import edgesdk_backends.opencl as ocl_backend
    from edgesdk.cli import main

    path = _arch_file(tmp_path, "llama")
    with edgesdk.Session(path, SessionOptions(require=device.id, n_ctx=64)) as s:
        assert s.runner.llm.n_ctx == 64
    with edgesdk.Session(path, SessionOptions(require=device.id, n_ctx=64, backend_options={"opencl": {"n_ctx": 32}})) as s:
        assert s.runner.llm.n_ctx == 32  # the backend's own option is the more specific ask
    with pytest.raises(PlacementError, match="kv_dtype='f16': the opencl KV cache is f32 only"):
        edgesdk.Session(path, SessionOptions(require=device.id, kv_dtype="f16"))
    seen = []

    class Recording(ocl_backend.OpenCLRunner):
        def __init__(self, llm, *a, **kw):
            seen.append(llm.n_ctx)
            super().__init__(llm, *a, **kw)

    monkeypatch.setattr(ocl_backend, "OpenCLRunner", Recording)
    assert main(["generate", path, "ab", "--raw", "-n", "2", "--n-ctx", "64", "--require", device.id]) == 0
    capsys.readouterr()
    assert seen == [64]
