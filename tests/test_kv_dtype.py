"""KV-cache storage types (``kv_dtype``): "f32", "f16" (IEEE half) and "q8_0" (llama.cpp's 8-bit blocks).

Both forward passes store the same bits for the same keys/values (the encoders are checked bit
for bit, C against numpy) and read them back exactly as float32, so the numpy reference and the
fused C loop (every attention path this CPU runs, the portable one included) agree as they do with
an f32 cache, up to the keys themselves: numpy's and the kernels' projections differ in the last
float bits, which now and then lands on the other side of a rounding step of the stored type (one
half ulp, one Q8_0 code). Measured on the tiny models here, max logit error relative to the
logits' range, gemma3 / llama: numpy vs C f32 6e-7 / 6e-7, f16 2e-6 / 3e-5, q8_0 6e-7 / 2e-5 (up to
6e-5 on other prompts); each stored type against the f32 cache (numpy): f16 1.6e-5 / 3.3e-4, q8_0
4.4e-4 / 3.3e-3 (the random 2-layer llama is the more sensitive one).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import test_architectures as arch_tests
from conftest import smollm2_path
from test_architectures import CTX, HD, NKV, WINDOW, write_model

from edgesdk._errors import GenerationError, PlacementError
from edgesdk.llm import LLM
from edgesdk.llm._model import DEFAULT_KV_DTYPE, KV_DTYPES, Q8_0_BLOCK, KVCache, encode_kv
from edgesdk.llm._weights import kernel_impl

QUANTIZED = ("f16", "q8_0")
# numpy reference vs fused C loop, both with exact activations, relative to the logits' range.
AGREE = {"f32": 1e-4, "f16": 1e-4, "q8_0": 1e-3}
# against the f32 cache, same pass (numpy): what storing costs on the tiny models.
VS_F32 = {"f16": 2e-3, "q8_0": 2e-2}


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _cllm():
    if importlib.util.find_spec("edgesdk._cllm") is None or kernel_impl() != "c":
        pytest.skip("the fused C loop (edgesdk._cllm) or the kernels are unavailable")
    from edgesdk import _cllm

    return _cllm


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny block-quantized files (the fused loop needs packed weights): gemma3 slides a window of 6."""
    d = tmp_path_factory.mktemp("kv")
    return {"gemma3": write_model(d / "gemma3.gguf", "gemma3", layers=6), "llama": write_model(d / "llama.gguf", "llama", layers=2)}


IDS = [int(t) for t in np.random.default_rng(5).integers(0, 256, 80)]  # > EXACT_ROWS: numpy's batched attention too


def _run(path, impl, kv_dtype, monkeypatch, ids=IDS, steps=6):
    """Logits of a prefill of ``ids`` then ``steps`` one-token decode steps (teacher-forced), and the cache."""
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "1" if impl == "c" else "0")
    llm = LLM(path, impl=impl, activations="f32", n_ctx=CTX, kv_dtype=kv_dtype)
    try:
        assert (llm.model.fused is not None) == (impl == "c")
        cache = llm.model.new_cache(CTX)
        assert cache.kv_dtype == kv_dtype
        out = [llm.model.forward(ids[:-steps], cache, logits="all")]
        out += [llm.model.forward([t], cache)[None] for t in ids[-steps:]]
        return np.concatenate(out), cache
    finally:
        llm.close()


_reference: dict = {}


def _numpy_ref(models, arch, kv_dtype, monkeypatch):
    if (arch, kv_dtype) not in _reference:
        _reference[arch, kv_dtype] = _run(models[arch], "numpy", kv_dtype, monkeypatch)
    return _reference[arch, kv_dtype]


def _same_stored(a: KVCache, b: KVCache, n: int) -> None:
    """Two caches of the same keys computed by different passes: mostly the same bits, else one step
    of the stored type apart (a half ulp at the keys' scale; one code). Measured: >= 98 % of halves
    and 99.9 % of codes equal."""
    for ka, kb in zip(a.k + a.v, b.k + b.v):
        x, y = ka[:, :n], kb[:, :n]
        if a.kv_dtype == "f16":
            xf, yf = x.astype(np.float32), y.astype(np.float32)
            assert np.abs(xf - yf).max() <= 2.0**-10 * np.abs(xf).max() and (x == y).mean() > 0.95
        elif a.kv_dtype == "q8_0":
            codes = np.abs(x["qs"].astype(np.int32) - y["qs"].astype(np.int32))
            assert codes.max() <= 1 and (codes == 0).mean() > 0.99
            assert np.abs(x["d"].view(np.int16).astype(np.int32) - y["d"].view(np.int16).astype(np.int32)).max() <= 1


@pytest.mark.parametrize("simd", ["auto", "portable"])
@pytest.mark.parametrize("arch", ["gemma3", "llama"])
@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_numpy_and_fused_loop_agree(models, arch, kv_dtype, simd, monkeypatch):
    from edgesdk import kernels

    lib = _cllm().lib
    ref, ref_cache = _numpy_ref(models, arch, kv_dtype, monkeypatch)
    try:
        kernels.set_simd(simd)
        code = getattr(lib, "LLM_KV_" + kv_dtype.upper())
        if simd == "portable":
            assert _cllm().ffi.string(lib.llm_attend_path(kernels._path_needs(), code)) == b"portable"
        got, cache = _run(models[arch], "c", kv_dtype, monkeypatch)
    finally:
        kernels.set_simd("auto")
    err = _rel(got, ref)
    assert err < AGREE[kv_dtype], f"{arch}/{kv_dtype}/{simd}: fused loop vs numpy {err:.2e}"
    assert cache.nbytes == ref_cache.nbytes
    _same_stored(ref_cache, cache, len(IDS))


@pytest.mark.parametrize("kv_dtype", QUANTIZED)
def test_close_to_the_f32_cache(models, kv_dtype, monkeypatch):
    for arch in models:
        want, _ = _numpy_ref(models, arch, "f32", monkeypatch)
        got, _ = _numpy_ref(models, arch, kv_dtype, monkeypatch)
        err = _rel(got, want)
        assert 0 < err < VS_F32[kv_dtype], f"{arch}/{kv_dtype}: {err:.2e} from the f32 cache"


def test_encoders_give_numpy_bits():
    """The C loop's row encoder (llm_kv_encode) against numpy's, bit for bit: every finite half,
    the midpoints between neighbours (ties to even) and their neighbours, subnormals, overflow;
    Q8_0 blocks at every scale, all-zero blocks and codes exactly halfway (roundf: away from zero)."""
    _lib = _cllm()
    ffi, lib = _lib.ffi, _lib.lib

    def c_encode(x, kv_dtype):
        code = getattr(lib, "LLM_KV_" + kv_dtype.upper())
        rb = lib.llm_kv_row_bytes(code, x.shape[1])
        out = np.zeros((x.shape[0], rb), np.uint8)
        for i in range(x.shape[0]):
            assert lib.llm_kv_encode(code, ffi.from_buffer("float[]", x[i]), x.shape[1], ffi.from_buffer("char[]", out[i], require_writable=True)) == 0
        return out

    rng = np.random.default_rng(0)
    halves = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mid = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)
    x = np.concatenate(
        [
            halves.astype(np.float32),
            mid,
            np.nextafter(mid, np.float32(np.inf)),
            np.nextafter(mid, np.float32(0)),
            np.float32([65504, 65519.996, 65520, 1e6, np.inf, 1e-30, 1e-45, 2.0**-25]),
            (rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 5, 20000)).astype(np.float32),
        ]
    )
    x = np.concatenate([x, -x])
    x = np.ascontiguousarray(x[: len(x) // 256 * 256].reshape(-1, 256))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(c_encode(x, "f16"), encode_kv(x, "f16").view(np.uint8).reshape(x.shape[0], -1))
    ties = np.arange(32, dtype=np.float32) - 15.5
    ties[0] = 127.0  # d = 1: every other code is k + 0.5
    q = np.concatenate(
        [rng.standard_normal((512, 32)) * 10.0 ** rng.integers(-6, 6, (512, 1)), np.zeros((3, 32)), [ties, -ties, ties * 0.003, ties * 1e4, -ties * 1e-4]]
    )
    q = np.ascontiguousarray(q.astype(np.float32).reshape(-1, 64))
    blocks = encode_kv(q, "q8_0")
    assert blocks.dtype == Q8_0_BLOCK and blocks.shape == (q.shape[0], 2)
    np.testing.assert_array_equal(c_encode(q, "q8_0"), blocks.view(np.uint8).reshape(q.shape[0], -1))
    assert list(encode_kv(ties, "q8_0")["qs"][0, :3]) == [127, -15, -14] and encode_kv(ties, "q8_0")["qs"][0, 15] == -1


@pytest.fixture
def small_rings(monkeypatch):
    """Rings of window + 16 positions (forward calls of <= 16 tokens), so a 100-token prompt wraps them."""
    from edgesdk.llm import _model

    monkeypatch.setattr(_model, "MAX_ROWS", 16)
    return _model


@pytest.mark.parametrize("impl", ["numpy", "c"])
@pytest.mark.parametrize("kv_dtype", QUANTIZED)
def test_sliding_window_ring_matches_full_cache(models, small_rings, impl, kv_dtype):
    """The ring keeps its meaning with stored types: a ring and a cache of every position hold the
    same encoded keys, so they give the same logits; truncation still refuses overwritten keys."""
    if impl == "c":
        _cllm()
    ids = [int(t) for t in np.random.default_rng(3).integers(0, 256, 100)]
    llm = LLM(models["gemma3"], impl=impl, activations="f32", n_ctx=CTX, kv_dtype=kv_dtype)
    try:
        cache = llm.model.new_cache(CTX)
        assert cache.caps == [WINDOW + 16] * 5 + [CTX]
        ring = llm.model.forward(ids, cache, logits="all")
        full = llm.model.new_cache(CTX)
        full.caps = [CTX] * 6
        full.k = [np.zeros((a.shape[0], CTX) + a.shape[2:], a.dtype) for a in full.k]
        full.v = [np.zeros((a.shape[0], CTX) + a.shape[2:], a.dtype) for a in full.v]
        want = llm.model.forward(ids, full, logits="all")
        assert _rel(ring, want) < 1e-5
        cache.truncate(40)
        assert len(cache) == 0
        cache = llm.model.new_cache(CTX)
        llm.model.forward(ids[:50], cache)
        cache.truncate(45)
        assert len(cache) == 45
        assert _rel(llm.model.forward(ids[45:50], cache, logits="all"), want[45:50]) < 1e-5
    finally:
        llm.close()


def test_nbytes_follow_the_dtype(models):
    llm = LLM(models["gemma3"], impl="numpy", n_ctx=CTX)
    try:
        sizes = {kv: llm.model.new_cache(CTX, kv).nbytes for kv in KV_DTYPES}
        assert sizes["f32"] == 2 * NKV * HD * 4 * sum(llm.model.new_cache(CTX).caps)
        assert sizes["f16"] * 2 == sizes["f32"]
        assert sizes["q8_0"] * 128 == sizes["f32"] * 34  # 34 bytes per 32 values instead of 128
    finally:
        llm.close()


def test_default_is_f16_on_the_cpu_and_f32_for_other_forward_passes(models):
    llm = LLM(models["llama"], impl="numpy", n_ctx=CTX)
    try:
        assert llm.kv_dtype == DEFAULT_KV_DTYPE == "f16" and llm.cache.kv_dtype == "f16"
    finally:
        llm.close()
    with pytest.raises(GenerationError, match="model_factory"):
        LLM(models["llama"], kv_dtype="q8_0", model_factory=lambda g: None)


def test_bad_values_are_refused(models, tmp_path, monkeypatch):
    for bad in ("bf16", "F16", "", 16):
        with pytest.raises(GenerationError, match="kv_dtype must be one of 'f32', 'f16', 'q8_0'"):
            LLM(models["llama"], kv_dtype=bad)
    llm = LLM(models["llama"], impl="numpy", n_ctx=CTX)
    with pytest.raises(GenerationError, match="'f32', 'f16', 'q8_0', got 'int4'"):
        llm.model.new_cache(CTX, "int4")
    llm.close()
    with pytest.raises(GenerationError, match="model_factory"):
        LLM(models["llama"], kv_dtype="f16", model_factory=lambda g: None)
    # Q8_0 blocks span 32 values of one head: a head_dim of 48 cannot be stored so.
    monkeypatch.setattr(arch_tests, "HD", 48)
    path = write_model(tmp_path / "hd48.gguf", "llama", layers=1, types={})  # F32: K-quant rows need 256
    with pytest.raises(GenerationError, match="head_dim 48 is not a multiple of 32"):
        LLM(path, kv_dtype="q8_0")
    LLM(path, kv_dtype="f16").close()
    if importlib.util.find_spec("edgesdk._cllm") is not None:
        from edgesdk import _cllm

        assert _cllm.lib.llm_kv_row_bytes(_cllm.lib.LLM_KV_Q8_0, 48) == -1 and _cllm.lib.llm_kv_row_bytes(_cllm.lib.LLM_KV_F16, 48) == 96
        assert _cllm.ffi.string(_cllm.lib.llm_attend_path(0, _cllm.lib.LLM_KV_Q8_0)) == b"portable"
        assert _cllm.lib.llm_attend_path(0, 7) == _cllm.ffi.NULL


def test_attention_paths_follow_the_cpu():
    """Half readers need F16C on top of AVX2: allowed AVX2+FMA alone, f16/q8_0 run portable and f32 AVX2."""
    from edgesdk import kernels

    lib = _cllm().lib
    name = lambda mask, kv: _cllm().ffi.string(lib.llm_attend_path(mask, getattr(lib, "LLM_KV_" + kv.upper()))).decode()
    have = kernels._lib.ek_cpu_features()
    avx2 = kernels._lib.ek_cpu_parse(b"avx2,fma")
    f16c = kernels._lib.ek_cpu_parse(b"avx2,fma,f16c")
    if (have & f16c) != f16c:
        assert {name(have, kv) for kv in QUANTIZED} == {"portable"}
        pytest.skip("this CPU has no AVX2+FMA+F16C: only the portable readers can run")
    assert [name(f16c, kv) for kv in KV_DTYPES] == ["avx2", "avx2+f16c", "avx2+f16c"]
    assert [name(avx2, kv) for kv in KV_DTYPES] == ["avx2", "portable", "portable"]


def test_cpu_backend_option_and_cli(models, monkeypatch):
    import edgesdk
    import edgesdk.llm
    from edgesdk.cli import build_parser, main

    opts = edgesdk.SessionOptions(require="cpu:0", backend_options={"cpu": {"kv_dtype": "q8_0", "n_ctx": 64}})
    with edgesdk.Session(models["llama"], opts) as s:
        assert s.runner.llm.kv_dtype == "q8_0" and s.runner.llm.cache.k[0].dtype == Q8_0_BLOCK
    # The backend's load refuses it (placement reports why the required device failed).
    with pytest.raises(PlacementError, match="cpu:0: load failed: GenerationError: kv_dtype must be one of 'f32', 'f16', 'q8_0', got 'fp8'"):
        edgesdk.Session(models["llama"], edgesdk.SessionOptions(require="cpu:0", backend_options={"cpu": {"kv_dtype": "fp8"}}))
    seen = []

    class Recording(edgesdk.llm.LLM):
        def __init__(self, *a, **kw):
            seen.append(kw.get("kv_dtype"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(edgesdk.llm, "LLM", Recording)
    assert main(["generate", models["llama"], "ab", "--raw", "-n", "2", "--n-ctx", "32", "--kv-dtype", "f16", "--require", "cpu:0"]) == 0
    assert seen == ["f16"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", models["llama"], "ab", "--kv-dtype", "bf16"])


def test_smollm2_greedy_text_with_f16():
    """The real model: with exact activations 16 greedy tokens are unchanged with an f16 (and a
    q8_0) cache. With the default int8 activations the raw continuation of this prompt reaches a
    near-tie at token 6 (" United" 0.044 logits above " answer" with the f32 cache) that any
    last-bit change flips, as the fused loop vs numpy glue does (test_llm): there the chat answer is
    unchanged, and teacher-forced every f32-cache token is ranked first or within 0.25 of the top."""
    path = smollm2_path()
    prompt = "The capital of France is"
    texts = {}
    for kv in KV_DTYPES:
        llm = LLM(path, n_ctx=64, kv_dtype=kv, activations="f32")
        texts[kv] = llm.generate(prompt, max_tokens=16)
        llm.close()
    assert texts["f16"] == texts["f32"] and texts["q8_0"] == texts["f32"] and "Paris" in texts["f32"]
    llms = {kv: LLM(path, n_ctx=64, kv_dtype=kv) for kv in ("f32", "f16")}
    try:
        chat = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        answers = {kv: m.generate(chat, max_tokens=12) for kv, m in llms.items()}
        assert answers["f16"] == answers["f32"] and "Paris" in answers["f32"]
        ids = llms["f32"].tokenizer.encode(prompt)
        seq = ids + llms["f32"].tokenizer.encode(llms["f32"].generate(ids, max_tokens=16, ignore_eos=True))[:16]
        a = llms["f16"].logits(seq)[len(ids) - 1 : -1]
        picked = np.asarray(seq[len(ids) :])
        assert np.all(a[np.arange(len(picked)), picked] >= a.max(-1) - 0.25)
    finally:
        for m in llms.values():
            m.close()


@pytest.mark.parametrize("activations", ["f32", "int8"])
@pytest.mark.parametrize("kv_dtype", KV_DTYPES)
def test_prompt_chunks_read_the_cache_as_one_token_does(models, small_rings, kv_dtype, activations, monkeypatch):
    """A prompt chunk attends over float32 copies of the stored keys and values (widen_layer in
    llm_decode.c), one token reads the cache itself: the same values in the same sums, so the
    logits are the same bits, across the ring's wrap too (chunks of 16, window 6)."""
    _cllm()
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "1")
    llm = LLM(models["gemma3"], impl="c", activations=activations, n_ctx=CTX, kv_dtype=kv_dtype)
    try:
        chunked = llm.model.forward(IDS, llm.model.new_cache(CTX), logits="all")
        cache = llm.model.new_cache(CTX)
        one = np.concatenate([llm.model.forward([t], cache)[None] for t in IDS])
    finally:
        llm.close()
    np.testing.assert_array_equal(chunked, one)
