"""K-quant encoders and ``edgesdk quantize --to`` against llama.cpp.

- Blocks: every encoder (Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against libggml's own
  ``ggml_quantize_chunk`` (the function llama-quantize calls) on the same float32 data: byte-identical
  blocks, edge cases included (all-zero, constant, -0.0, half-integers, outliers, 1e-30 magnitudes).
- Round trips: decoding with the type table gives the expected error per type, and hypothesis
  checks error bounds over shapes, magnitudes and degenerate blocks; NaN/Inf and fp16 overflow fail.
- Files: tiny random-weight GGUFs quantized by ``llama_cpp.llama_model_quantize`` and by edgesdk give
  the same type per tensor and identical tensor bytes (hence the same dequantized-weight error),
  for every supported file type, row lengths that need fallbacks, and F16/BF16/Q8_0 inputs; the
  output runs in llama.cpp and in edgesdk; metadata is copied; the CLI reports and fails cleanly;
  an interrupted write leaves no file.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesdk._errors import ModelFormatError, ModelNotFoundError, QuantizationError
from edgesdk.llm._gguf import GGUFFile
from edgesdk.quant import FILE_TYPES, encode_blocks, kquantize, quant_type, quantize_gguf
from edgesdk.quant._gguf_quantize import plan

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python is not installed")

TYPES = ["Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


# --------------------------------------------------------------------------- libggml reference


def _ggml():
    import llama_cpp

    path = os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so")
    if not os.path.exists(path):
        pytest.skip("libggml-base.so is not shipped with this llama-cpp-python")
    lib = ctypes.CDLL(path)
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return f


def ggml_blocks(x: np.ndarray, name: str) -> np.ndarray:
    """llama.cpp's blocks for float32 rows x (no importance matrix: its reference quantizers)."""
    t = quant_type(name)
    x = np.ascontiguousarray(x, np.float32)
    n, k = x.shape
    out = np.zeros((n, k // t.block * t.nbytes), np.uint8)
    _ggml()(t.code, x.ctypes.data, out.ctypes.data, 0, n, k, None)
    return out


def _cases(rng) -> dict[str, np.ndarray]:
    g = rng.standard_normal((16, 1024)).astype(np.float32)
    sparse = g * (rng.random(g.shape) < 0.05)  # mostly +-0.0: the sign of a zero d/m must match too
    outlier = g.copy()
    outlier[:, ::97] *= 300
    return {
        "normal": g,
        "scaled": g * 0.02,
        "heavy": rng.standard_t(1.5, g.shape).astype(np.float32),
        "positive": np.abs(g),
        "negative": -np.abs(g),
        "zeros": np.zeros_like(g),
        "neg-zeros": -np.zeros_like(g),
        "constant": np.full_like(g, 0.37),
        "neg-constant": np.full_like(g, -0.37),
        "sparse": sparse,
        "outliers": outlier,
        "integers": rng.integers(-3, 4, g.shape).astype(np.float32),
        "half-integers": (rng.integers(-8, 8, g.shape) + 0.5).astype(np.float32),
        "tiny": g * 1e-30,
        "large": g * 1e3,
        "one-hot": np.eye(16, 1024, dtype=np.float32) * 3,
    }


@needs_llama
@pytest.mark.parametrize("name", TYPES)
def test_blocks_equal_llama_cpp(name):
    for case, x in _cases(np.random.default_rng(0)).items():
        ours, ref = encode_blocks(x, name), ggml_blocks(x, name)
        nb = quant_type(name).nbytes
        bad = (ours.reshape(-1, nb) != ref.reshape(-1, nb)).any(axis=1)
        assert not bad.any(), f"{name}/{case}: {bad.sum()} of {bad.size} blocks differ from llama.cpp's"


@needs_llama
def test_real_weights_equal_llama_cpp():
    """Tensors of a real Q4_K_M file, dequantized, re-encoded by both: the same blocks."""
    from conftest import hub_path

    g = GGUFFile(hub_path("gemma3-270m"))
    for name in ("blk.0.ffn_down.weight", "blk.3.attn_output.weight", "blk.5.attn_q.weight"):
        t = g.tensors[name]
        x = quant_type(t.tensor_type).dequantize(np.asarray(t.data)[:128]).reshape(128, int(t.shape[0]))
        for q in ("Q4_K", "Q6_K", "Q5_0", "Q8_0") if x.shape[1] % 256 == 0 else ("Q5_0", "Q8_0"):
            assert np.array_equal(encode_blocks(x, q), ggml_blocks(x, q)), f"{name} -> {q}"


# --------------------------------------------------------------------------- round trips

# Relative RMS error on standard normal weights (measured: Q4_K 0.0715, Q5_K 0.0362, Q6_K 0.0178,
# Q4_0 0.0861, Q4_1 0.0783, Q5_0 0.0428, Q5_1 0.0379, Q8_0 0.0054), with a few % of margin.
GAUSS_REL_RMS = {"Q4_K": 0.074, "Q5_K": 0.038, "Q6_K": 0.0185, "Q4_0": 0.089, "Q4_1": 0.081, "Q5_0": 0.045, "Q5_1": 0.040, "Q8_0": 0.0056}
# Worst |error| per block as a fraction of the block's max |x| (the 32-element types: half a step plus
# the clipped side, d = amax/8 or range/15...; K-quants also quantize their sub-block scales against
# the super-block's), plus an absolute floor where fp16 scales underflow (max code x max sub-scale x
# twice fp16's smallest subnormal).
MAX_REL = {"Q4_K": 0.25, "Q5_K": 0.15, "Q6_K": 0.12, "Q4_0": 0.13, "Q4_1": 0.08, "Q5_0": 0.07, "Q5_1": 0.04, "Q8_0": 0.005}
FLOOR = {"Q4_K": 15 * 63, "Q5_K": 31 * 63, "Q6_K": 32 * 128, "Q4_0": 8, "Q4_1": 16, "Q5_0": 16, "Q5_1": 32, "Q8_0": 127}


def _decode(raw, name, shape):
    return quant_type(name).dequantize(raw).reshape(shape)


@pytest.mark.parametrize("name", TYPES)
def test_gaussian_round_trip(name):
    x = np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32)
    y = _decode(encode_blocks(x, name), name, x.shape)
    rel = float(np.sqrt(((y - x) ** 2).sum() / (x**2).sum()))
    assert rel < GAUSS_REL_RMS[name], f"{name}: relative RMS error {rel:.4f}"
    assert rel > GAUSS_REL_RMS[name] * 0.8  # not lossless: a decoder that ignores the blocks would not get here


def test_more_bits_less_error():
    x = np.random.default_rng(2).standard_normal((16, 512)).astype(np.float32)
    err = {n: float(np.abs(_decode(encode_blocks(x, n), n, x.shape) - x).mean()) for n in ("Q4_K", "Q5_K", "Q6_K", "Q8_0")}
    assert err["Q4_K"] > err["Q5_K"] > err["Q6_K"] > err["Q8_0"]


def _check_bound(x, name):
    t = quant_type(name)
    y = _decode(encode_blocks(x, name), name, x.shape)
    assert np.isfinite(y).all()
    xb, yb = x.reshape(-1, t.block), y.reshape(-1, t.block)
    amax = np.abs(xb).max(axis=1)
    bound = MAX_REL[name] * amax + 2 * FLOOR[name] * 2.0**-24
    worst = np.abs(yb - xb).max(axis=1)
    i = int(np.argmax(worst - bound))
    assert (worst <= bound).all(), f"{name}: block {i} error {worst[i]:.3g} > {bound[i]:.3g} (max|x| {amax[i]:.3g})"


def _mixed_blocks(rng, rows, k):
    """Neighbouring 32-element blocks of very different sizes, with zero and constant ones among them."""
    shape = (rows, k // 32, 1)
    x = rng.standard_normal((rows, k // 32, 32)) * 10.0 ** rng.integers(-3, 2, shape) * (rng.random(shape) < 0.8)
    return (x + (rng.random(shape) < 0.1)).reshape(rows, k)


@st.composite
def weights(draw):
    rows = draw(st.integers(1, 3))
    k = 256 * draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10.0 ** draw(st.floats(-8, 3))
    pattern = draw(st.sampled_from(["normal", "heavy", "uniform", "positive", "negative", "constant", "zeros", "sparse", "outlier", "mixed-blocks"]))
    rng = np.random.default_rng(seed)
    x = {
        "normal": lambda: rng.standard_normal((rows, k)),
        "heavy": lambda: np.clip(rng.standard_t(1.2, (rows, k)), -50, 50),
        "uniform": lambda: rng.uniform(-1, 1, (rows, k)),
        "positive": lambda: rng.uniform(0, 1, (rows, k)),
        "negative": lambda: -rng.uniform(0, 1, (rows, k)),
        "constant": lambda: np.full((rows, k), rng.standard_normal()),
        "zeros": lambda: np.zeros((rows, k)),
        "sparse": lambda: rng.standard_normal((rows, k)) * (rng.random((rows, k)) < 0.03),
        "outlier": lambda: rng.standard_normal((rows, k)) * np.where(rng.random((rows, k)) < 0.002, 40, 1),
        "mixed-blocks": lambda: _mixed_blocks(rng, rows, k),
    }[pattern]()
    return (x * scale).astype(np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=weights(), name=st.sampled_from(TYPES))
def test_error_bounds(x, name):
    _check_bound(x, name)


@pytest.mark.parametrize("name", TYPES)
def test_degenerate_blocks(name):
    k = 512
    zero = encode_blocks(np.zeros((2, k), np.float32), name)
    assert not _decode(zero, name, (2, k)).any()
    for c in (0.37, -0.37, 1e-3, -250.0):
        _check_bound(np.full((2, k), c, np.float32), name)
    tiny = np.random.default_rng(3).standard_normal((2, k)).astype(np.float32) * 1e-30
    assert np.abs(_decode(encode_blocks(tiny, name), name, tiny.shape)).max() < 1e-6  # not garbage: ~0


@pytest.mark.parametrize("name", TYPES)
def test_bad_input_is_refused(name):
    x = np.random.default_rng(4).standard_normal((2, 256)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 17] = bad
        with pytest.raises(QuantizationError, match="NaN or Inf"):
            encode_blocks(y, name)
    with pytest.raises(QuantizationError, match="overflows fp16"):
        encode_blocks(x * 1e9, name)
    with pytest.raises(QuantizationError, match="multiple of"):
        encode_blocks(x[:, :240], name)
    with pytest.raises(QuantizationError, match="floating-point"):
        encode_blocks(x.astype(np.int32), name)


def test_kquantize_tensor_runs_in_the_kernels():
    from edgesdk import kernels
    from edgesdk.quant import to_gguf_bytes

    rng = np.random.default_rng(5)
    w = rng.standard_normal((48, 512)).astype(np.float32)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    for name in ("Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q5_0"):
        qt = kquantize(w, name)
        qname, raw = to_gguf_bytes(qt)
        assert qname == name and np.array_equal(raw.reshape(-1), encode_blocks(w, name).reshape(-1))
        want = x @ _decode(raw, name, w.shape).T
        got = kernels.matmul(x, qt)
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max(), name


# --------------------------------------------------------------------------- recipe


def _names(n_layer, untied=False, qkv=False):
    out = [("token_embd.weight", (256, 1000), "F32"), ("output_norm.weight", (256,), "F32")]
    if untied:
        out.append(("output.weight", (256, 1000), "F32"))
    for i in range(n_layer):
        out += [
            (f"blk.{i}.attn_norm.weight", (256,), "F32"),
            (f"blk.{i}.ffn_down.weight", (512, 256), "F32"),
            (f"blk.{i}.attn_output.weight", (256, 256), "F32"),
        ]
        out += (
            [(f"blk.{i}.attn_qkv.weight", (256, 768), "F32")]
            if qkv
            else [(f"blk.{i}.attn_q.weight", (256, 256), "F32"), (f"blk.{i}.attn_v.weight", (256, 128), "F32")]
        )
    return out


def test_recipe_q4_k_m():
    p = {t.name: t.dst for t in plan(_names(16), "Q4_K_M")}
    more = [i for i in range(16) if p[f"blk.{i}.ffn_down.weight"] == "Q6_K"]
    assert more == [0, 1, 4, 7, 10, 13, 14, 15]  # first and last eighth, every third between
    assert [i for i in range(16) if p[f"blk.{i}.attn_v.weight"] == "Q6_K"] == more
    assert p["token_embd.weight"] == "Q6_K"  # tied: treated as the output head
    assert p["output_norm.weight"] == p["blk.0.attn_norm.weight"] == "F32"
    assert {p[f"blk.{i}.attn_q.weight"] for i in range(16)} == {"Q4_K"}
    untied = {t.name: t.dst for t in plan(_names(4, untied=True, qkv=True), "Q4_K_M")}
    assert untied["token_embd.weight"] == "Q4_K" and untied["output.weight"] == "Q6_K"
    assert [untied[f"blk.{i}.attn_qkv.weight"] for i in range(4)] == ["Q4_K", "Q4_K", "Q6_K", "Q6_K"]  # n/8 = 0


def test_recipe_counts_layers_in_numeric_order():
    """blk.10 sorts after blk.9 (llama.cpp orders by layer number): the file order does not matter."""
    names = _names(16)
    a = {t.name: t.dst for t in plan(names, "Q4_K_M")}
    b = {t.name: t.dst for t in plan(sorted(names), "Q4_K_M")}
    assert a == b


def test_recipe_fallbacks_and_other_types():
    t = [
        ("token_embd.weight", (320, 1000), "F32"),
        ("blk.0.attn_q.weight", (320, 256), "F32"),
        ("blk.0.ffn_down.weight", (80, 320), "F32"),
        ("blk.0.attn_v.weight", (320, 128), "F32"),
        ("blk.0.ffn_gate_inp.weight", (320, 8), "F32"),
        ("rope_freqs.weight", (32,), "F32"),
    ]
    p = {x.name: x for x in plan(t, "Q4_K_M")}
    assert p["token_embd.weight"].dst == "Q8_0"
    assert p["blk.0.attn_q.weight"].dst == "Q5_0" and "Q4_K -> Q5_0" in p["blk.0.attn_q.weight"].note
    assert p["blk.0.attn_v.weight"].dst == "Q8_0"  # Q6_K (layer 0 of 1) -> Q8_0
    assert p["blk.0.ffn_down.weight"].dst == "F16"
    assert p["blk.0.ffn_gate_inp.weight"].dst == "F32" and p["rope_freqs.weight"].dst == "F32"
    assert {x.dst for x in plan(_names(2), "Q8_0")} == {"Q8_0", "F32"}
    assert {x.name: x.dst for x in plan(_names(2), "Q4_0")}["token_embd.weight"] == "Q6_K"
    moe = {x.name: x.dst for x in plan(_names(2), "Q4_K_M", n_expert=8)}
    assert moe["blk.1.attn_v.weight"] == "Q8_0" and moe["blk.1.attn_output.weight"] == "Q5_K"
    big = {x.name: x.dst for x in plan(_names(80), "Q4_K_M", arch="llama", n_head=64, n_head_kv=8)}
    assert big["blk.20.attn_v.weight"] == "Q5_K" and big["blk.1.attn_v.weight"] == "Q6_K"  # 70B: no Q4_K attn_v
    with pytest.raises(QuantizationError, match="Q4_K_M"):
        plan(t, "Q3_K_XL")


@needs_llama
def test_file_type_codes_are_llama_cpp_s():
    import llama_cpp

    for name, (code, _) in FILE_TYPES.items():
        assert getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}") == code, name


# --------------------------------------------------------------------------- files, against llama.cpp


def _write(path, arch="llama", layers=2, **kw):
    from test_architectures import write_model

    return write_model(path, arch, layers=layers, types={}, **kw)


def llama_quantize(src, dst, ftype: int, requantize=False):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.allow_requantize = ftype, 2, requantize
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), p) == 0
    return str(dst)


def _floats(t) -> np.ndarray:
    return quant_type(t.tensor_type).dequantize(np.asarray(t.data))


def compare_files(ours, ref, source):
    """Per tensor: same type, and our dequantized-weight RMS error vs the source <= 1.02x llama.cpp's.
    Returns the tensors whose bytes differ (llama.cpp's algorithm reproduced: none)."""
    a, b, s = GGUFFile(ours).tensors, GGUFFile(ref).tensors, GGUFFile(source).tensors
    assert list(a) == list(s) and set(b) == set(s)
    differ = []
    for name in s:
        assert a[name].tensor_type.name == b[name].tensor_type.name, name
        assert [int(d) for d in a[name].shape] == [int(d) for d in b[name].shape], name
        x = _floats(s[name])
        e_ours = np.sqrt(np.mean((_floats(a[name]) - x) ** 2))
        e_ref = np.sqrt(np.mean((_floats(b[name]) - x) ** 2))
        assert e_ours <= 1.02 * e_ref + 1e-12, f"{name}: RMS error {e_ours:.3g} vs llama.cpp's {e_ref:.3g}"
        if not np.array_equal(np.asarray(a[name].data).view(np.uint8).reshape(-1), np.asarray(b[name].data).view(np.uint8).reshape(-1)):
            differ.append(name)
    return differ


MODELS = {  # the recipe's branches: layer counts for "use more bits", tied/untied, fused QKV, fallbacks
    "llama-2": dict(layers=2),
    "llama-8": dict(layers=8),
    "phi3-untied-qkv": dict(arch="phi3", layers=4, untied=True),
    "gemma3-6": dict(arch="gemma3", layers=6),
    "llama-d320": dict(layers=8, D=320),  # rows of 320: Q4_K -> Q5_0, Q6_K -> Q8_0, tied embeddings Q8_0
    "llama-ff80": dict(layers=4, FF=80),  # rows of 80: ffn_down -> F16
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    import test_architectures as ta

    d = tmp_path_factory.mktemp("kq")
    out = {}
    for label, kw in MODELS.items():
        kw = dict(kw)
        dims = {k: kw.pop(k) for k in ("D", "FF") if k in kw}
        saved = {k: getattr(ta, k) for k in dims}
        try:
            for k, v in dims.items():
                setattr(ta, k, v)
            out[label] = _write(d / f"{label}.gguf", **kw)
        finally:
            for k, v in saved.items():
                setattr(ta, k, v)
    return out


@needs_llama
@pytest.mark.parametrize("label", list(MODELS))
def test_q4_k_m_file_equals_llama_cpp(label, sources, tmp_path):
    src = sources[label]
    ref = llama_quantize(src, tmp_path / "ref.gguf", FILE_TYPES["Q4_K_M"][0])
    report = quantize_gguf(src, tmp_path / "ours.gguf", "Q4_K_M")
    assert compare_files(tmp_path / "ours.gguf", ref, src) == []
    assert {t.dst for t in report.tensors} >= {"Q4_K", "F32"}


@needs_llama
@pytest.mark.parametrize("target", [t for t in FILE_TYPES if t != "Q4_K_M"])
def test_other_file_types_equal_llama_cpp(target, sources, tmp_path):
    src = sources["llama-d320" if target in ("Q4_K_S", "Q5_K_M") else "llama-2"]
    ref = llama_quantize(src, tmp_path / "ref.gguf", FILE_TYPES[target][0])
    quantize_gguf(src, tmp_path / "ours.gguf", target)
    assert compare_files(tmp_path / "ours.gguf", ref, src) == []


@needs_llama
@pytest.mark.parametrize("kind,ftype", [("F16", 1), ("BF16", 32), ("Q8_0", 7)])
def test_f16_bf16_q8_0_inputs(kind, ftype, sources, tmp_path):
    """Inputs llama.cpp converted itself; from a quantized one it requantizes (allow_requantize)."""
    inp = llama_quantize(sources["llama-2"], tmp_path / f"in-{kind}.gguf", ftype)
    assert GGUFFile(inp).tensors["blk.0.attn_q.weight"].tensor_type.name == kind
    ref = llama_quantize(inp, tmp_path / "ref.gguf", FILE_TYPES["Q4_K_M"][0], requantize=kind == "Q8_0")
    report = quantize_gguf(inp, tmp_path / "ours.gguf", "Q4_K_M")
    assert compare_files(tmp_path / "ours.gguf", ref, inp) == []
    assert any("requantized" in w for w in report.warnings) == (kind == "Q8_0")


@needs_llama
def test_output_runs_in_llama_cpp_and_edgesdk(sources, tmp_path):
    from test_architectures import CTX, _prompt, edgesdk_run, llama_cpp_run

    from edgesdk.llm import LLM

    out = str(tmp_path / "ours.gguf")
    quantize_gguf(sources["llama-2"], out, "Q4_K_M")
    ids = _prompt()
    logits, tokens = llama_cpp_run(out, ids)  # (the file's tensors equal llama.cpp's own: see above)
    assert np.isfinite(logits).all() and np.ptp(logits) > 0
    llm = LLM(out, n_ctx=CTX)
    try:
        got, got_tokens = edgesdk_run(llm, ids)
    finally:
        llm.close()
    assert np.abs(got - logits).max() < 0.03 * np.abs(logits).max()  # int8 activations on both sides
    assert got_tokens == tokens


def test_metadata_is_copied(sources, tmp_path):
    src = sources["gemma3-6"]
    quantize_gguf(src, tmp_path / "o.gguf", "Q6_K")
    a, b = GGUFFile(src).meta, GGUFFile(tmp_path / "o.gguf").meta
    assert b.pop("general.file_type") == 18 and b.pop("general.quantization_version") == 2
    a.pop("general.file_type", None)
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])) if isinstance(a[k], np.ndarray) else a[k] == b[k], k


def test_report(sources, tmp_path):
    rep = quantize_gguf(sources["llama-d320"], tmp_path / "o.gguf", "q4_k_m")
    kinds = rep.by_kind()
    assert kinds["ffn_down.weight"]["types"] == {"Q6_K": 4, "Q4_K": 4}
    assert 0.06 < max(kinds["attn_output.weight"]["errors"]) < 0.08  # Q4_K on Gaussian weights
    text = rep.summary()
    assert "Q4_K_M" in text and "rel RMS" in text and "fallback: attn_q.weight (8 tensors)" in text
    assert rep.bytes_out < rep.bytes_in / 4


# --------------------------------------------------------------------------- errors, CLI, atomic write


def test_bad_inputs(tmp_path, sources):
    with pytest.raises(ModelNotFoundError):
        quantize_gguf(tmp_path / "missing.gguf", tmp_path / "o.gguf", "Q4_K_M")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelFormatError, match="GGUF"):
        quantize_gguf(junk, tmp_path / "o.gguf", "Q4_K_M")
    with pytest.raises(ModelFormatError):
        quantize_gguf(tmp_path, tmp_path / "o.gguf", "Q4_K_M")
    with pytest.raises(QuantizationError, match="unknown GGUF target type 'Q3_XYZ'"):
        quantize_gguf(sources["llama-8"], tmp_path / "o.gguf", "Q3_XYZ")
    with pytest.raises(QuantizationError, match="different file"):
        quantize_gguf(sources["llama-8"], sources["llama-8"], "Q8_0")
    assert not (tmp_path / "o.gguf").exists()


def test_interrupted_write_leaves_no_file(sources, tmp_path):
    out = tmp_path / "o.gguf"

    def stop(i, n, name):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_gguf(sources["llama-8"], out, "Q4_K_M", progress=stop)
    assert os.listdir(tmp_path) == []
    out.write_bytes(b"previous model")  # an existing output survives a failed run untouched
    with pytest.raises(KeyboardInterrupt):
        quantize_gguf(sources["llama-8"], out, "Q4_K_M", progress=stop)
    assert out.read_bytes() == b"previous model" and os.listdir(tmp_path) == ["o.gguf"]


def test_cli(sources, tmp_path, capsys):
    from edgesdk.cli import main

    out = tmp_path / "o.gguf"
    assert main(["quantize", "--to", "Q4_K_M", sources["llama-8"], str(out)]) == 0
    text = capsys.readouterr().out
    assert "Q4_K_M" in text and "ffn_down.weight" in text and "Q6_K x4, Q4_K x4" in text and out.exists()
    assert main(["quantize", "--to", "Q8_0", sources["llama-2"], "-o", str(tmp_path / "o8.gguf"), "--json"]) == 0
    assert '"target": "Q8_0"' in capsys.readouterr().out
    for argv, message in [
        (["--to", "Q9_K", sources["llama-8"], str(out)], "unknown GGUF target type 'Q9_K'; choose one of: Q4_0"),
        (["--to", "Q4_K_M", str(tmp_path / "nope.gguf"), str(out)], "no such file"),
        (["--to", "Q4_K_M", __file__, str(out)], "not a GGUF file"),
        (["--to", "Q4_K_M", sources["llama-8"]], "needs an output"),
        (["--to", "Q4_K_M", sources["llama-8"], str(out), "--calibration", "d"], "--calibration apply to --for npu"),
        (["--for", "npu", "m.onnx", "-o", "x.onnx", "--eval-text", "t.txt"], "--eval-text apply to GGUF"),
        (["--for", "npu", "m.onnx", "-o", "x.onnx"], "needs --calibration"),
        (["--to", "Q4_K_M", "m.onnx", "x.gguf"], "use --for npu"),
    ]:
        assert main(["quantize", *argv]) == 1, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):  # argparse: --to and --for are mutually exclusive, one is required
        main(["quantize", "--to", "Q4_K_M", "--for", "npu", sources["llama-8"], str(out)])
    with pytest.raises(SystemExit):
        main(["quantize", sources["llama-8"], str(out)])
    capsys.readouterr()
