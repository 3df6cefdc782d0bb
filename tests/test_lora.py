"""LoRA adapters in llama.cpp's GGUF format, per request, on tiny random-weight models written with gguf-py.

Bases come from :func:`test_architectures.write_model`; adapters are random ``<tensor>.lora_a`` /
``.lora_b`` pairs written here. An adapted model must equal the adapter merged into the base weights
(an F32 base rewritten with W + s B A: the numpy reference's exact arithmetic), equal llama.cpp with
the same adapter (llama-cpp-python ``lora_path``/``lora_scale``, at test_architectures' tolerances
and with its greedy tokens), switch per request without reloading and without reusing keys/values,
and refuse a bad adapter with a typed error naming the file and the tensor.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
import test_architectures as arch_tests
from conftest import smollm2_path
from test_architectures import CTX, MIX, PASSES, TOLERANCE, _prompt, _rel, write_model

import edgesdk
from edgesdk._errors import (
    GenerationError,
    ModelFormatError,
    ModelLoadError,
    UnsupportedModelError,
)
from edgesdk.llm import LLM, GGUFFile
from edgesdk.llm._lora import lora_scale
from edgesdk.llm._weights import kernel_impl

RANK, ALPHA, SCALE = 4, 8.0, 0.7
# The projections a forward pass adapts (and, when the base has one, the untied LM head).
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")


# --- writing adapters --------------------------------------------------------------------------


def adapter_tensors(base: str, *, rank: int = RANK, seed: int = 0, embed: bool = False, names=None) -> dict[str, np.ndarray]:
    """Random ``lora_a``/``lora_b`` (numpy order) for ``names`` of ``base`` (default: every projection
    and an untied output head; ``embed``: the token embedding too, whose pair llama.cpp stores flipped)."""
    g = GGUFFile(base)
    if names is None:
        names = [n for n in g.tensors if n == "output.weight" or (n.startswith("blk.") and n.endswith(".weight") and n.split(".")[2] in PROJECTIONS)]
        names += ["token_embd.weight"] if embed else []
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        k, n = (int(x) for x in g.tensors[name].shape)
        a_shape, b_shape = ((n, rank), (k, rank)) if name == "token_embd.weight" else ((rank, k), (n, rank))
        out[name + ".lora_a"] = (rng.standard_normal(a_shape) * 0.1).astype(np.float32)
        out[name + ".lora_b"] = (rng.standard_normal(b_shape) * 0.05).astype(np.float32)
    g.close()
    return out


def write_gguf(path, arch: str, tensors: dict, meta: dict, types: dict | None = None) -> str:
    """A GGUF of ``arch`` holding ``tensors`` (F32, or ``types[name]``) and the metadata ``meta`` (key -> value)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_array(key, value)
    for name, a in tensors.items():
        qtype = (types or {}).get(name, "F32")
        if qtype == "F32":
            w.add_tensor(name, a)
        else:
            q = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(name, gguf.quants.quantize(a, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def adapter_meta(alpha: float = ALPHA) -> dict:
    return {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": alpha}


def write_adapter(path, base: str, arch: str, *, tensors=None, alpha: float = ALPHA, types=None, **kw) -> str:
    return write_gguf(path, arch, adapter_tensors(base, **kw) if tensors is None else tensors, adapter_meta(alpha), types)


def write_merged(path, base: str, tensors: dict, scale: float, alpha: float = ALPHA) -> str:
    """The F32 ``base`` with the adapter merged into its weights: W + s B A (the embedding: W + s A B^T).

    An adapted token embedding of a tied model gets its own copy of the old table as output.weight:
    the adapter changes the lookup, not the LM head."""
    import gguf

    r = gguf.GGUFReader(base)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(path), arch)
    for name, f in r.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            w.add_key_value(name, f.contents(), f.types[0], f.types[-1] if len(f.types) > 1 else None)
    names = {t.name for t in r.tensors}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, "merge into an F32 base only"
        W = np.array(t.data, np.float32)
        a, b = tensors.get(t.name + ".lora_a"), tensors.get(t.name + ".lora_b")
        if a is not None:
            s = np.float32(lora_scale(alpha, b.shape[1], scale))
            if t.name == "token_embd.weight":
                if "output.weight" not in names:
                    w.add_tensor("output.weight", W.copy())
                W = W + s * (a @ b.T)
            else:
                W = W + s * (b @ a)
        w.add_tensor(t.name, W.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# --- running -----------------------------------------------------------------------------------


def adapted_run(llm: LLM, ids, adapter=None, scale: float = SCALE):
    """test_architectures.edgesdk_run (prompt logits, greedy tokens) with ``adapter`` bound to its cache."""
    new_cache = llm.model.new_cache

    def bound(n_ctx=None):
        cache = new_cache(n_ctx)
        llm.model.set_adapter(cache, llm.adapters[adapter] if adapter else None, scale)
        return cache

    llm.model.new_cache = bound
    try:
        return arch_tests.edgesdk_run(llm, ids)
    finally:
        del llm.model.new_cache


def _open(path, impl, act, fused, monkeypatch, **kw) -> LLM:
    if impl == "c" and kernel_impl() != "c":
        pytest.skip("kernels unavailable")
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "1" if fused else "0")
    llm = LLM(path, impl=impl, activations=act, n_ctx=CTX, kv_dtype="f32", **kw)
    if impl == "c" and fused and importlib.util.find_spec("edgesdk._cllm") is not None:
        assert llm.model.fused is not None
    return llm


def _run(path, ids, impl, act, fused, monkeypatch, adapter_path=None, scale=SCALE):
    llm = _open(path, impl, act, fused, monkeypatch, adapters={"a": adapter_path} if adapter_path else None)
    try:
        return adapted_run(llm, ids, "a" if adapter_path else None, scale)
    finally:
        llm.close()


def llama_cpp_lora_run(path, ids, lora_path, scale):
    """test_architectures.llama_cpp_run (same llama.cpp settings) with the adapter applied by llama.cpp."""
    import llama_cpp

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llama_cpp, "Llama", functools.partial(llama_cpp.Llama, lora_path=lora_path, lora_scale=scale))
        return arch_tests.llama_cpp_run(path, ids)


# Bases whose projections cover separate and fused Q|K|V / gate|up, tied and untied heads (phi3:
# output and token_embd adapted), biases, QK-norm and Gemma's sandwich norms, window and embed scale.
LORA_CASES = {"llama": dict(layers=2), "phi3": dict(layers=2, untied=True), "qwen2": dict(layers=2), "gemma3": dict(layers=6)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Per (architecture, base types): base, adapter (+ its tensors) and the merged F32 file."""
    d = tmp_path_factory.mktemp("lora")
    out = {}
    for name, kw in LORA_CASES.items():
        for types in ("f32", "mix"):
            base = write_model(d / f"{name}-{types}.gguf", name, types=MIX if types == "mix" else {}, **kw)
            tensors = adapter_tensors(base, embed=kw.get("untied", False), seed=len(out))
            adapter = write_adapter(d / f"{name}-{types}-lora.gguf", base, name, tensors=tensors)
            merged = write_merged(d / f"{name}-merged.gguf", base, tensors, SCALE) if types == "f32" else None
            out[name, types] = base, adapter, tensors, merged
    return out


# --- the adapter's arithmetic --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LORA_CASES))
def test_equals_the_merged_weights(files, name, monkeypatch):
    base, adapter, _, merged = files[name, "f32"]
    ids = _prompt()
    want_logits, want_tokens = _run(merged, ids, "numpy", "f32", False, monkeypatch)
    got_logits, got_tokens = _run(base, ids, "numpy", "f32", False, monkeypatch, adapter)
    assert _rel(got_logits, want_logits) < 1e-5
    assert got_tokens == want_tokens
    plain, _ = _run(base, ids, "numpy", "f32", False, monkeypatch)
    assert _rel(plain, want_logits) > 1e-2  # the adapter does change the output


def test_embedding_adapter_of_a_tied_model_adapts_the_lookup_only(tmp_path, monkeypatch):
    base = write_model(tmp_path / "g.gguf", "gemma3", layers=6, types={})
    tensors = adapter_tensors(base, names=["token_embd.weight", "blk.0.attn_q.weight"])
    adapter = write_adapter(tmp_path / "a.gguf", base, "gemma3", tensors=tensors)
    merged = write_merged(tmp_path / "m.gguf", base, tensors, SCALE)
    ids = _prompt()
    want, _ = _run(merged, ids, "numpy", "f32", False, monkeypatch)
    got, _ = _run(base, ids, "numpy", "f32", False, monkeypatch, adapter)
    assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("simd", ["auto", "portable"])
@pytest.mark.parametrize("name", sorted(LORA_CASES))
def test_fused_loop_equals_the_numpy_reference(files, name, simd, monkeypatch):
    """The C loop's low-rank terms (AVX2 and portable) against numpy's, both exact, on packed weights."""
    from edgesdk import kernels

    if importlib.util.find_spec("edgesdk._cllm") is None:
        pytest.skip("edgesdk._cllm is not built")
    base, adapter, _, _ = files[name, "mix"]
    ids = _prompt()
    ref, ref_tokens = _run(base, ids, "numpy", "f32", False, monkeypatch, adapter)
    try:
        kernels.set_simd(simd)
        got, tokens = _run(base, ids, "c", "f32", True, monkeypatch, adapter)
    finally:
        kernels.set_simd("auto")
    assert _rel(got, ref) < 1e-4
    assert tokens == ref_tokens


def test_fused_rows_do_not_depend_on_the_call(files, monkeypatch):
    """The C loop takes rows LORA_ROWS at a time through A; a token's logits are the same bits in a
    call of any length (what keeps speculative verification identical to plain decoding)."""
    if importlib.util.find_spec("edgesdk._cllm") is None:
        pytest.skip("edgesdk._cllm is not built")
    base, adapter, _, _ = files["phi3", "mix"]
    llm = _open(base, "c", "int8", True, monkeypatch, adapters={"a": adapter})
    ids = _prompt()[:23]

    def logits(chunks):
        cache = llm.model.new_cache(CTX)
        llm.model.set_adapter(cache, llm.adapters["a"], SCALE)
        bounds = np.cumsum([0] + chunks)
        return np.concatenate([llm.model.forward(ids[a:b], cache, logits="all") for a, b in zip(bounds[:-1], bounds[1:])])

    whole = logits([23])
    for chunks in ([1] * 23, [2, 3, 5, 6, 7], [4, 4, 4, 4, 7]):
        np.testing.assert_array_equal(logits(chunks), whole)
    llm.close()


@pytest.mark.parametrize("types", ["F16", "BF16", "Q8_0"])
def test_tensor_types_read_as_their_values(tmp_path, types, monkeypatch):
    """An F16/BF16/Q8_0 adapter computes exactly as the F32 adapter of its dequantized values."""
    import gguf

    base = write_model(tmp_path / "b.gguf", "llama", layers=2, types={})
    rank = 32  # Q8_0 rows of lora_b are whole 32-value blocks
    tensors = adapter_tensors(base, rank=rank)
    q = gguf.GGMLQuantizationType[types]
    rounded = {n: gguf.quants.dequantize(gguf.quants.quantize(a, q), q).astype(np.float32) for n, a in tensors.items()}
    typed = write_adapter(tmp_path / "t.gguf", base, "llama", tensors=tensors, types=dict.fromkeys(tensors, types))
    plain = write_adapter(tmp_path / "f.gguf", base, "llama", tensors=rounded)
    ids = _prompt()
    got, _ = _run(base, ids, "numpy", "f32", False, monkeypatch, typed)
    want, _ = _run(base, ids, "numpy", "f32", False, monkeypatch, plain)
    np.testing.assert_array_equal(got, want)


def test_alpha_zero_means_the_scale_as_is(tmp_path, monkeypatch):
    """llama.cpp: without alpha, B A is multiplied by the request's scale alone (not scale / rank)."""
    base = write_model(tmp_path / "b.gguf", "llama", layers=2, types={})
    tensors = adapter_tensors(base)
    zero = write_adapter(tmp_path / "z.gguf", base, "llama", tensors=tensors, alpha=0.0)
    # alpha = rank gives s = scale * rank / rank: the same multiplier.
    same = write_adapter(tmp_path / "r.gguf", base, "llama", tensors=tensors, alpha=float(RANK))
    ids = _prompt()[:8]
    got, _ = _run(base, ids, "numpy", "f32", False, monkeypatch, zero)
    want, _ = _run(base, ids, "numpy", "f32", False, monkeypatch, same)
    np.testing.assert_array_equal(got, want)


# --- against llama.cpp ---------------------------------------------------------------------------


@needs_llama_cpp
@pytest.mark.parametrize("types", ["f32", "mix"])
@pytest.mark.parametrize("name", sorted(LORA_CASES))
def test_matches_llama_cpp(files, name, types, monkeypatch):
    base, adapter, _, _ = files[name, types]
    ids = _prompt()
    want_logits, want_tokens = llama_cpp_lora_run(base, ids, adapter, SCALE)
    plain, _ = arch_tests.llama_cpp_run(base, ids)
    assert _rel(plain, want_logits) > 1e-2  # llama.cpp did apply the adapter
    for impl, act, fused in PASSES[types]:
        got_logits, got_tokens = _run(base, ids, impl, act, fused, monkeypatch, adapter)
        err = _rel(got_logits, want_logits)
        assert err < TOLERANCE[types], f"{name}/{types} {impl}/{act}/fused={fused}: {err:.2e} of the logits' range from llama.cpp"
        arch_tests.assert_greedy_matches(got_tokens, want_tokens, err, types, f"{name}/{types} {impl}/{act}/fused={fused}")


# --- per request -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory):
    d = tmp_path_factory.mktemp("switch")
    base = write_model(d / "base.gguf", "llama", layers=2)
    return base, {"a": write_adapter(d / "a.gguf", base, "llama", seed=1), "b": write_adapter(d / "b.gguf", base, "llama", seed=2)}


def _generate(llm: LLM, ids, adapter=None, scale=1.0):
    # Sampled (seeded), hot: a random tiny model's logits span ~100, so greedy (or temperature 1)
    # decoding repeats one token whatever the adapter; at 25 every logit moves the samples.
    text = llm.generate(ids, max_tokens=12, ignore_eos=True, temperature=25.0, seed=0, adapter=adapter, adapter_scale=scale)
    return str(text), llm.last_stats.cached_tokens


@pytest.mark.parametrize("impl", ["numpy", "c"])
def test_switching_per_request(two_adapters, impl, monkeypatch):
    """a, b, a at another scale, none, a: each as a model opened for it alone, the base never reloaded,
    the prompt's keys/values reused only by a request with the same adapter and scale."""
    base, paths = two_adapters
    ids = _prompt()[:20]
    requests = [("a", 1.0), ("a", 1.0), ("b", 1.0), ("a", 0.5), (None, 1.0), (None, 1.0), ("a", 1.0)]
    want = {}
    for ad, sc in set(requests):
        llm = _open(base, impl, "int8", True, monkeypatch, adapters=paths)
        want[ad, sc] = _generate(llm, ids, ad, sc)[0]
        llm.close()
    assert len(set(want.values())) == len(want)  # every adapter/scale generates something else

    llm = _open(base, impl, "int8", True, monkeypatch, adapters=paths)
    weights = [lin._qt if lin._qt is not None else lin._raw for L in llm.model.layers for lin in L.linears]
    got = [_generate(llm, ids, ad, sc) for ad, sc in requests]
    assert [text for text, _ in got] == [want[r] for r in requests]
    assert [cached for _, cached in got] == [0, len(ids) - 1, 0, 0, 0, len(ids) - 1, 0]
    assert [lin._qt if lin._qt is not None else lin._raw for L in llm.model.layers for lin in L.linears] == weights
    llm.close()


def test_speculative_decoding_keeps_the_adapted_output(two_adapters, monkeypatch):
    """Verification runs on the adapted cache: greedy output with an adapter is the same with prompt lookup."""
    base, paths = two_adapters
    ids = _prompt()[:20] * 2  # repeats give prompt lookup drafts to verify
    llm = _open(base, "c", "int8", True, monkeypatch, adapters=paths)
    plain = llm.generate(ids, max_tokens=16, ignore_eos=True, adapter="b")
    spec = llm.generate(ids, max_tokens=16, ignore_eos=True, adapter="b", speculative="prompt_lookup")
    assert llm.last_stats.drafted_tokens > 0 and str(spec) == str(plain)
    llm.close()


def test_scoring_uses_the_base_model(two_adapters, monkeypatch):
    """logits()/perplexity() score with the base model whatever the conversation's adapter is."""
    base, paths = two_adapters
    ids = _prompt()[:16]
    llm = _open(base, "numpy", "f32", False, monkeypatch, adapters=paths)
    before = llm.logits(ids)
    llm.generate(ids, max_tokens=2, adapter="a")
    np.testing.assert_array_equal(llm.logits(ids), before)
    adapted, _ = adapted_run(llm, ids, "a", 1.0)
    assert _rel(adapted, before) > 1e-2
    llm.close()


def test_session_adapters(two_adapters):
    base, paths = two_adapters
    s = edgesdk.Session(base, adapters=paths, backend_options={"cpu": {"n_ctx": CTX}})
    try:
        assert s.device.backend == "cpu" and set(s.runner.llm.adapters) == {"a", "b"}
        ids = _prompt()[:10]
        texts = {ad: str(s.generate(ids, max_tokens=8, ignore_eos=True, temperature=25.0, seed=0, adapter=ad)) for ad in ("a", "b", None)}
        assert len(set(texts.values())) == 3
        with pytest.raises(GenerationError, match="unknown adapter 'c'.*a, b"):
            s.generate(ids, max_tokens=4, adapter="c")
    finally:
        s.close()


def test_opencl_refuses_adapters_so_the_cpu_backend_runs_them(two_adapters):
    from backends.opencl import OpenCLBackend

    _, paths = two_adapters
    model = type("M", (), {"format": "gguf", "info": {}})()
    device = type("D", (), {"id": "opencl:0.0"})()
    sup = OpenCLBackend().check(model, device, edgesdk.SessionOptions(adapters=paths))
    assert not sup.ok and "LoRA" in sup.reason and "cpu" in sup.reason


def test_a_forward_pass_without_adapters_is_refused(two_adapters):
    from edgesdk.llm._model import Transformer

    base, paths = two_adapters

    class NoAdapters:  # another backend's forward pass: no adapter_targets()/set_adapter()
        def __init__(self, g):
            self.inner = Transformer(g, impl="numpy")
            self.cfg, self.impl, self.new_cache = self.inner.cfg, "numpy", self.inner.new_cache

    with pytest.raises(GenerationError, match="cannot apply LoRA adapters"):
        LLM(base, model_factory=NoAdapters, adapters=paths)


# --- bad adapters ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_base(two_adapters):
    return two_adapters[0]


def _load_error(base, adapter, err=ModelLoadError) -> str:
    with pytest.raises(err) as info:
        LLM(base, impl="numpy", adapters={"x": adapter})
    assert info.value.path == str(adapter)  # the error names the adapter file, not the base
    return info.value.cause


def test_wrong_base_shapes(tmp_path, llama_base):
    with pytest.MonkeyPatch.context() as mp:  # the same architecture with a wider feed-forward
        mp.setattr(arch_tests, "FF", 2 * arch_tests.FF)
        wide = write_model(tmp_path / "wide.gguf", "llama", layers=2)
    adapter = write_adapter(tmp_path / "a.gguf", wide, "llama", names=["blk.1.ffn_down.weight"])
    cause = _load_error(llama_base, adapter, ModelFormatError)
    assert "blk.1.ffn_down.weight.lora_a" in cause and "wrong base model" in cause


def test_rank_of_a_and_b_disagree(tmp_path, llama_base):
    t = adapter_tensors(llama_base, names=["blk.0.attn_k.weight"])
    t["blk.0.attn_k.weight.lora_a"] = t["blk.0.attn_k.weight.lora_a"][:2]
    cause = _load_error(llama_base, write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors=t), ModelFormatError)
    assert "blk.0.attn_k.weight.lora_a" in cause and "rank 4" in cause


def test_wrong_architecture(tmp_path, llama_base):
    adapter = write_adapter(tmp_path / "a.gguf", llama_base, "qwen2")
    assert "'qwen2'" in _load_error(llama_base, adapter, UnsupportedModelError)


def test_missing_lora_b(tmp_path, llama_base):
    t = adapter_tensors(llama_base, names=["blk.1.attn_q.weight", "blk.0.ffn_up.weight"])
    del t["blk.0.ffn_up.weight.lora_b"]
    cause = _load_error(llama_base, write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors=t), ModelFormatError)
    assert "blk.0.ffn_up.weight.lora_b" in cause and "missing" in cause


@pytest.mark.parametrize("name", ["blk.7.attn_q.weight", "output.weight", "output_norm.bias"])
def test_a_tensor_the_base_lacks(tmp_path, llama_base, name):
    t = adapter_tensors(llama_base, names=["blk.0.attn_q.weight"])
    t[name + ".lora_a"], t[name + ".lora_b"] = t["blk.0.attn_q.weight.lora_a"], t["blk.0.attn_q.weight.lora_b"]
    cause = _load_error(llama_base, write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors=t), ModelFormatError)
    assert f"{name}.lora_a" in cause


@pytest.mark.parametrize(
    "meta,err,says",
    [
        ({"general.type": "model"}, ModelFormatError, "general.type"),
        ({"general.type": "adapter", "adapter.type": "control_vector"}, UnsupportedModelError, "control_vector"),
        ({**adapter_meta(), "adapter.alora.invocation_tokens": [1, 2]}, UnsupportedModelError, "activated"),
    ],
)
def test_not_a_plain_lora(tmp_path, llama_base, meta, err, says):
    path = write_gguf(tmp_path / "a.gguf", "llama", adapter_tensors(llama_base, names=["blk.0.attn_q.weight"]), meta)
    assert says in _load_error(llama_base, path, err)


def test_unexpected_and_non_finite_tensors(tmp_path, llama_base):
    t = adapter_tensors(llama_base, names=["blk.0.attn_q.weight"])
    path = write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors={**t, "blk.0.attn_q.weight": t["blk.0.attn_q.weight.lora_a"]})
    assert "'blk.0.attn_q.weight'" in _load_error(llama_base, path, ModelFormatError)
    t["blk.0.attn_q.weight.lora_b"][3, 1] = np.nan
    path = write_adapter(tmp_path / "b.gguf", llama_base, "llama", tensors=t)
    assert "blk.0.attn_q.weight.lora_b" in _load_error(llama_base, path, ModelFormatError)


def test_norm_vectors_are_ignored(tmp_path, llama_base):
    t = adapter_tensors(llama_base, names=["blk.0.attn_q.weight"])
    path = write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors={**t, "blk.0.attn_norm.weight": np.ones(256, np.float32)})
    llm = LLM(llama_base, impl="numpy", adapters={"x": path})
    assert set(llm.adapters["x"].pairs) == {"blk.0.attn_q.weight"}
    llm.close()


def test_corrupt_and_truncated_files(tmp_path, llama_base):
    """Truncations at 46 points and 150 corrupted header bytes: a typed error naming the file, never a crash."""
    path = write_adapter(tmp_path / "a.gguf", llama_base, "llama", names=["blk.0.attn_q.weight", "blk.1.ffn_down.weight"])
    with open(path, "rb") as f:
        good = f.read()
    bad = tmp_path / "bad.gguf"
    rng = np.random.default_rng(0)
    header = good.find(b"blk.1.ffn_down.weight.lora_b") + 64  # through the last tensor info
    cases = [good[:n] for n in sorted({0, 3, 4, 8, 20, 24, *rng.integers(0, len(good) - 1, 40).tolist()})]
    for _ in range(150):
        b = bytearray(good)
        at = int(rng.integers(0, header))
        b[at] = int(rng.integers(0, 256)) if rng.random() < 0.5 else b[at] ^ 0xFF
        cases.append(bytes(b))
    n_refused = 0
    for data in cases:
        bad.write_bytes(data)
        try:
            llm = LLM(llama_base, impl="numpy", adapters={"x": str(bad)})
        except ModelLoadError as exc:
            assert exc.path == str(bad)
            n_refused += 1
        else:  # a flip in a value (alpha, a name's letter the loader still accepts...) may leave a valid file
            llm.close()
    assert n_refused > len(cases) // 2


def test_missing_file(tmp_path, llama_base):
    _load_error(llama_base, str(tmp_path / "nope.gguf"))


def test_session_names_the_bad_adapter(tmp_path, llama_base):
    t = adapter_tensors(llama_base, names=["blk.0.attn_v.weight"])
    del t["blk.0.attn_v.weight.lora_a"]
    path = write_adapter(tmp_path / "a.gguf", llama_base, "llama", tensors=t)
    # A bad file is the same on every backend: its typed error reaches the app, not a placement refusal.
    with pytest.raises(ModelFormatError, match=r"blk\.0\.attn_v\.weight\.lora_a"):
        edgesdk.Session(llama_base, adapters={"x": path}, prefer="cpu")


def test_adapter_of_another_model_is_refused_at_set_adapter(tmp_path, two_adapters):
    base, paths = two_adapters
    other = write_model(tmp_path / "q.gguf", "qwen2", layers=2)
    llm = LLM(base, impl="numpy", adapters=paths)
    o = LLM(other, impl="numpy")
    with pytest.raises(GenerationError, match="another base model"):
        o.model.set_adapter(o.cache, llm.adapters["a"], 1.0)
    llm.close()
    o.close()


# --- a real base -----------------------------------------------------------------------------------


@needs_llama_cpp
def test_smollm2_with_a_random_adapter(tmp_path, monkeypatch):
    """SmolLM2-135M Q4_1 with a rank-8 adapter of every projection, against llama.cpp with it, as
    test_gemma3 compares a real model: teacher-forced along llama.cpp's greedy tokens, each its
    choice up to a near-tie, and free-running generation follows it up to the first near-tie. The
    fused loop equals the per-layer kernels path, and the adapter does change the logits."""
    from llama_ref import llama
    from test_gemma3 import NEAR_TIE, llama_greedy

    base, scale, n_ctx = smollm2_path(), 0.25, 64  # scale: the adapter moves the logits by ~10 %
    adapter = write_adapter(tmp_path / "smol-lora.gguf", base, "llama", rank=8, seed=3)
    llm = _open(base, "c", "int8", True, monkeypatch, adapters={"a": adapter})
    ids = llm.tokenizer.encode("The capital of France is")
    ref = llama(
        model_path=base, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=2, verbose=False, type_k=0, type_v=0, lora_path=adapter, lora_scale=scale
    )
    try:
        want = llama_greedy(ref, ids, 24)
        ref_logits = np.array(ref.scores[len(ids) - 1 : len(ids) + len(want) - 1])
    finally:
        ref.close()
    cache = llm.model.new_cache(n_ctx)
    llm.model.set_adapter(cache, llm.adapters["a"], scale)
    logits = llm.model.forward(ids + want, cache, logits=len(ids) - 1)[:-1]
    assert _rel(logits, ref_logits) < 0.1
    rows = np.arange(len(want))
    assert np.all(logits[rows, want] >= logits.max(-1) - NEAR_TIE)
    ours = logits.argmax(-1)
    first_tie = next((int(i) for i in rows if ours[i] != want[i]), len(want))
    text = llm.generate(ids, max_tokens=first_tie, ignore_eos=True, adapter="a", adapter_scale=scale)
    assert str(text) == llm.tokenizer.decode(want[:first_tie])
    # The adapter does change the model: ~10 % of the logits' scale (the greedy text may or may not
    # change within 24 tokens, depending on near-ties that differ between SIMD paths).
    plain = llm.model.forward(ids + want, llm.model.new_cache(n_ctx), logits=len(ids) - 1)[:-1]
    assert _rel(logits, plain) > 0.03
    llm.close()
    # Exact activations: int8 ones already differ by ~3 % between the two paths without an adapter.
    exact = []
    for fuse in (True, False):
        llm = _open(base, "c", "f32", fuse, monkeypatch, adapters={"a": adapter})
        exact.append(adapted_run(llm, ids, "a", scale)[0])
        llm.close()
    assert _rel(*exact) < 1e-4
