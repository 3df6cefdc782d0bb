"""Every described architecture against llama.cpp, on tiny random-weight GGUFs written here with gguf-py.

Each architecture is written twice and each file run by llama.cpp (llama-cpp-python, f32 KV cache)
and by edgesdk:

- ``f32``: every tensor F32, so both sides do exact float arithmetic: the numpy reference's logits
  must agree to 1e-4 of their range at every position and 32 greedy tokens must be identical. This
  pins the architecture's semantics (norm placement, RoPE, window, activation, scales).
- ``mix``: the tensor types of a real Q4_K_M file (Q8_0 embeddings, Q5_0/Q8_0 attention, Q4_K/Q6_K).
  llama.cpp quantizes activations to 8 bits per block, as edgesdk's int8 kernels do (with an fp16
  rather than f32 block scale for the 32-element types, so not bit for bit): the kernels, with and
  without the fused C loop, must agree to 3 % of the logits' range and give the same 32 greedy
  tokens; the fused C loop with exact activations must agree with the numpy reference to 1e-4.

Layers with a window of 6 keys and a 48-token prompt make the sliding-window layers actually slide.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgesdk._errors import ModelFormatError, UnsupportedModelError
from edgesdk.llm import ARCHITECTURES, LLM
from edgesdk.llm._tokenizer import _byte_decoder
from gguf_blocks import random_blocks

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")

D, NH, NKV, HD, FF, CTX, WINDOW = 256, 4, 2, 64, 256, 128, 6
N_PROMPT, N_GREEDY = 48, 32

# Per-architecture variations of the file: what llama.cpp and edgesdk must both read from it.
ARCH_CASES = {
    "llama": dict(layers=2),
    "llama3-rope-freqs": dict(arch="llama", layers=2, rope_freqs=True),
    "mistral-spm": dict(arch="llama", layers=2, spm=True),
    "qwen2": dict(layers=2),
    "qwen3": dict(layers=2),
    "phi3": dict(layers=2, untied=True),
    "gemma3": dict(layers=6),
}
# Block types per matrix, as llama.cpp's Q4_K_M mixes them (random blocks: gguf-py has no K-quantizer).
MIX = {
    "token_embd": "Q8_0",
    "output": "Q8_0",
    "attn_q": "Q5_0",
    "attn_k": "Q5_0",
    "attn_v": "Q8_0",
    "attn_qkv": "Q8_0",
    "attn_output": "Q4_K",
    "ffn_gate": "Q5_0",
    "ffn_up": "Q5_0",
    "ffn_down": "Q6_K",
}


def _tokens() -> list[str]:
    by_byte = {b: c for c, b in _byte_decoder().items()}
    # One merge ("a b" -> "ab"): llama.cpp refuses a BPE vocabulary without merges.
    return [by_byte[b] for b in range(256)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "ab"]


# A SentencePiece vocabulary as Mistral/Llama 2 GGUFs have it: <unk> <s> </s>, 256 byte tokens, scored pieces.
_SPM_PIECES = [
    "\u2581",
    "\u2581t",
    "\u2581a",
    "he",
    "\u2581the",
    "in",
    "er",
    "\u2581w",
    "on",
    "at",
    "\u2581c",
    "\u2581cat",
    "\u2581s",
    "st",
    "en",
    "\u2581is",
    "\u2581on",
    "\u2581mat",
] + list("abcdefghijklmnopqrstuvwxyz.,!")


def _spm_vocab() -> tuple[list[str], list[int], list[float]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + _SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(_SPM_PIECES)
    scores = [0.0] * 259 + [-float(i) for i in range(len(_SPM_PIECES))]
    return tokens, types, scores


def write_model(
    path,
    arch: str,
    layers: int,
    untied: bool = False,
    rope_freqs: bool = False,
    seed: int = 0,
    drop: str | None = None,
    types: dict | None = None,
    spm: bool = False,
) -> str:
    """A random-weight GGUF of ``arch``: matrices of the types in ``types`` (kind -> type; F32 if
    absent, the default is :data:`MIX`), ``drop``: a tensor or metadata key left out, to test the
    error; ``spm``: a SentencePiece vocabulary (Mistral-style llama) instead of byte-level BPE."""
    types = MIX if types is None else types
    import gguf

    q = gguf.GGMLQuantizationType
    spec = ARCHITECTURES[arch]
    rng = np.random.default_rng(seed)
    vocab = len(_spm_vocab()[0] if spm else _tokens())
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(CTX)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_rope_freq_base(10000.0 if spec.sliding_window is None else 1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(HD)
    if spec.sliding_window is not None and drop != f"{arch}.attention.sliding_window":
        w.add_sliding_window(WINDOW)
    w.add_vocab_size(vocab)
    if spm:
        tokens, ttypes, scores = _spm_vocab()
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(ttypes)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(_tokens())
        w.add_token_types([1] * 256 + [3, 3, 3, 1])
        w.add_token_merges(["a b"])
        w.add_eos_token_id(258)
        w.add_bos_token_id(256)
        w.add_add_bos_token(False)

    def add(name, shape, scale=0.3, offset=0.0):
        if name == drop:
            return
        kind = name.split(".")[2] if name.startswith("blk.") else name.split(".")[0]
        qtype = types.get(kind, "F32") if len(shape) == 2 else "F32"
        if qtype == "F32":
            w.add_tensor(name, (rng.standard_normal(shape) * scale + offset).astype(np.float32))
        elif qtype in ("Q8_0", "Q5_0"):
            a = (rng.standard_normal(shape) * scale).astype(np.float32)
            w.add_tensor(name, gguf.quants.quantize(a, q[qtype]), raw_dtype=q[qtype])
        else:
            w.add_tensor(name, random_blocks(qtype, shape, rng, scale), raw_dtype=q[qtype])

    add("token_embd.weight", (vocab, D), 1.0)
    if untied:
        add("output.weight", (vocab, D), 0.5)
    add("output_norm.weight", (D,), offset=1.0, scale=0.1)
    if rope_freqs:  # Llama 3.x: low frequencies stretched, high ones kept
        w.add_tensor("rope_freqs.weight", np.geomspace(1.0, 8.0, HD // 2).astype(np.float32))
    qkv_rows = {"attn_q": NH * HD, "attn_k": NKV * HD, "attn_v": NKV * HD, "attn_qkv": (NH + 2 * NKV) * HD}
    for i in range(layers):
        blk = f"blk.{i}."
        for n in ("attn_norm", "ffn_norm") + (("post_attention_norm", "post_ffw_norm") if spec.post_norms else ()):
            add(blk + n + ".weight", (D,), offset=1.0, scale=0.1)
        if spec.qk_norm:
            add(blk + "attn_q_norm.weight", (HD,), offset=1.0, scale=0.1)
            add(blk + "attn_k_norm.weight", (HD,), offset=1.0, scale=0.1)
        for n in spec.qkv:
            add(blk + n + ".weight", (qkv_rows[n], D), scale=0.05)
            if spec.attn_bias:
                add(blk + n + ".bias", (qkv_rows[n],), scale=0.5)
        add(blk + "attn_output.weight", (D, NH * HD), scale=0.15)
        for n in spec.gate_up:
            add(blk + n + ".weight", (FF * (3 - len(spec.gate_up)), D), scale=0.15)
        add(blk + "ffn_down.weight", (D, FF), scale=0.15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _prompt(seed: int = 1) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, 256, N_PROMPT)]


class Greedy(list):
    """Greedy tokens, with the reference's top-2 logit margin at each step (a share of that step's
    largest |logit|)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.margins: list[float] = []


def assert_greedy_matches(got: list[int], want: Greedy, err: float, types: str, what: str) -> None:
    """f32 passes: every token equals llama.cpp's. int8 ("mix") passes: equal up to the first step
    where the reference's choice is a near-tie (margin within twice the logits' measured error
    ``err``): there int8 arithmetic may pick the other token, legitimately, and the continuations
    part. Clear choices must all agree."""
    k = len(want) if types == "f32" else next((i for i, m in enumerate(want.margins) if m < 2 * err), len(want))
    assert list(got[:k]) == list(want[:k]) and (types != "f32" or len(got) == len(want)), f"{what}: {got} vs {want}"


def llama_cpp_run(path: str, ids: list[int]) -> tuple[np.ndarray, Greedy]:
    """llama.cpp's logits at every prompt position and its N_GREEDY greedy tokens."""
    from llama_ref import llama

    ref = llama(
        model_path=path, n_ctx=CTX, n_batch=CTX, logits_all=True, n_threads=2, verbose=False, type_k=0, type_v=0
    )  # f32 KV cache (f16 by default): compare the architecture, not storage
    try:
        ref.eval(ids)
        logits = np.array(ref.scores[: len(ids)], np.float32)
        out = Greedy()
        for _ in range(N_GREEDY):
            step = np.asarray(ref.scores[ref.n_tokens - 1], np.float32)
            t = int(np.argmax(step))
            top2 = np.partition(step, -2)[-2:]
            out.append(t)
            out.margins.append(float((top2[1] - top2[0]) / np.abs(step).max()))
            ref.eval([t])
        return logits, out
    finally:
        ref.close()


def edgesdk_run(llm: LLM, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    model = llm.model
    cache = model.new_cache(CTX)
    logits = model.forward(ids, cache, logits="all")
    out, last = [], logits[-1]
    for _ in range(N_GREEDY):
        t = int(np.argmax(last))
        out.append(t)
        last = model.forward([t], cache)
    return logits, out


CASES = [(name, types) for name in sorted(ARCH_CASES) for types in ("f32", "mix")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{t}" for n, t in CASES])
def case(request, tmp_path_factory):
    name, types = request.param
    kw = dict(ARCH_CASES[name])
    arch = kw.pop("arch", name)
    path = write_model(tmp_path_factory.mktemp("arch") / f"{name}-{types}.gguf", arch, types=MIX if types == "mix" else {}, **kw)
    ids = _prompt()
    return name, types, path, ids, llama_cpp_run(path, ids)


def _run(path, ids, impl, act, fused, monkeypatch):
    from edgesdk.llm._weights import kernel_impl

    if impl == "c" and kernel_impl() != "c":
        pytest.skip("kernels unavailable")
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "1" if fused else "0")
    llm = LLM(path, impl=impl, activations=act, n_ctx=CTX, kv_dtype="f32")
    try:
        if fused and importlib.util.find_spec("edgesdk._cllm") is not None:
            assert llm.model.fused is not None
        return edgesdk_run(llm, ids)
    finally:
        llm.close()


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# (impl, activations, fused loop) per file kind: the passes whose arithmetic is llama.cpp's there.
PASSES = {"f32": [("numpy", "f32", False)], "mix": [("c", "int8", True), ("c", "int8", False)]}
TOLERANCE = {"f32": 1e-4, "mix": 0.03}


def test_matches_llama_cpp(case, monkeypatch):
    name, types, path, ids, (want_logits, want_tokens) = case
    for impl, act, fused in PASSES[types]:
        got_logits, got_tokens = _run(path, ids, impl, act, fused, monkeypatch)
        err = _rel(got_logits, want_logits)
        assert err < TOLERANCE[types], f"{name}/{types} {impl}/{act}/fused={fused}: logits differ from llama.cpp by {err:.2e} of their range"
        assert_greedy_matches(got_tokens, want_tokens, err, types, f"{name}/{types} {impl}/{act}/fused={fused}")
    if types == "mix":  # the fused C loop's primitives against the numpy reference's, both exact
        ref, _ = _run(path, ids, "numpy", "f32", False, monkeypatch)
        got, _ = _run(path, ids, "c", "f32", True, monkeypatch)
        assert _rel(got, ref) < 1e-4
        assert _rel(ref, want_logits) < 0.05  # the exact pass is near llama.cpp too (which rounds activations)


def test_spm_vocabulary_tokenizes_like_llama_cpp(tmp_path):
    """A Mistral-style file (llama architecture, SentencePiece vocabulary): text to ids as llama.cpp."""
    import llama_cpp

    path = write_model(tmp_path / "m.gguf", "llama", layers=2, spm=True)
    llm = LLM(path, impl="numpy", n_ctx=CTX, kv_dtype="f32")
    ref = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    try:
        for text in ["the cat is on the mat.", " leading space", "</s>x<s>", "naïve café ✓", "tab\there\n\nnew"]:
            ids = llm.tokenizer.encode(text, add_bos=False)
            assert [ref.token_bos()] + ids == ref.tokenize(text.encode(), add_bos=True, special=True), text
            assert llm.tokenizer.decode(ids).encode() == ref.detokenize(ids, special=True), text
    finally:
        ref.close()
        llm.close()


def test_every_architecture_has_a_case():
    assert {ARCH_CASES[c].get("arch", c) for c in ARCH_CASES} == set(ARCHITECTURES)


def test_sliding_window_changes_the_output(tmp_path):
    """The window is honoured, not ignored: the same weights without it give other logits."""
    path = write_model(tmp_path / "g.gguf", "gemma3", layers=6)
    llm = LLM(path, impl="numpy", activations="f32", n_ctx=CTX, kv_dtype="f32")
    ids = _prompt()
    windowed = llm.logits(ids)[-1]
    llm.model.cfg = type(llm.model.cfg)(**{**_fields(llm.model.cfg), "layers": (type(llm.model.cfg.layers[0])(),) * 6})
    for L in llm.model.layers:
        L.plan = llm.model.cfg.layers[0]
    llm.model.fused = None
    assert np.abs(llm.logits(ids)[-1] - windowed).max() > 1e-3
    llm.close()


def _fields(cfg) -> dict:
    import attrs

    return {f.name: getattr(cfg, f.name) for f in attrs.fields(type(cfg))}


def test_config_reads_the_description(tmp_path):
    cfg = LLM(write_model(tmp_path / "g.gguf", "gemma3", layers=6), impl="numpy").config
    assert [p.window for p in cfg.layers] == [WINDOW] * 5 + [0]
    assert cfg.ropes == ((1e6, 1.0), (10000.0, 1.0)) and [p.rope for p in cfg.layers] == [1] * 5 + [0]
    assert cfg.embed_scale == pytest.approx(16.0) and cfg.features >= {"qk_norm", "post_norms", "gelu_tanh", "sliding_window"}


def test_unknown_architecture_lists_the_supported(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="'mamba' is not supported; supported: .*gemma3"):
        LLM(str(tmp_path / "x.gguf"))


@pytest.mark.parametrize("drop", ["blk.1.attn_q_norm.weight", "blk.0.post_ffw_norm.weight"])
def test_missing_tensor_is_named(tmp_path, drop):
    with pytest.raises(ModelFormatError, match=drop.replace(".", r"\.")):
        LLM(write_model(tmp_path / "g.gguf", "gemma3", layers=6, drop=drop), impl="numpy")


def test_missing_metadata_is_named(tmp_path):
    path = write_model(tmp_path / "g.gguf", "gemma3", layers=6, drop="gemma3.attention.sliding_window")
    with pytest.raises(ModelFormatError, match="gemma3.attention.sliding_window"):
        LLM(path, impl="numpy")


def test_opencl_refuses_what_it_does_not_implement(tmp_path):
    from edgesdk.llm._runner import gguf_refusal

    model = type("M", (), {"info": {"architecture": "gemma3", "features": sorted(ARCHITECTURES["gemma3"].features)}})()
    why = gguf_refusal(model, implements=("attn_bias",))
    assert why and "qk_norm" in why and "gelu_tanh" in why and "gemma3" in why
    assert gguf_refusal(model) is None


@pytest.fixture
def small_rings(monkeypatch):
    """Rings of window + 16 positions (forward calls of <= 16 tokens), so a 100-token prompt wraps them."""
    from edgesdk.llm import _model

    monkeypatch.setattr(_model, "MAX_ROWS", 16)
    return _model


@pytest.mark.parametrize("impl,act", [("numpy", "f32"), ("c", "f32")])
def test_sliding_window_ring_matches_full_cache(tmp_path, small_rings, impl, act):
    """Windowed layers keep only a ring of keys: logits equal a cache holding every position, and a
    prefix reuse reaching behind the ring recomputes instead of reading overwritten keys."""
    from edgesdk.llm._weights import kernel_impl

    if impl == "c" and kernel_impl() != "c":
        pytest.skip("kernels unavailable")
    path = write_model(tmp_path / "g.gguf", "gemma3", layers=6)
    ids = [int(t) for t in np.random.default_rng(3).integers(0, 256, 100)]
    llm = LLM(path, impl=impl, activations=act, n_ctx=CTX, kv_dtype="f32")
    cache = llm.model.new_cache(CTX)
    assert cache.caps == [WINDOW + 16] * 5 + [CTX]
    ring = llm.model.forward(ids, cache, logits="all")
    full = llm.model.new_cache(CTX)
    full.caps = [CTX] * 6
    full.k = [np.zeros((NKV, CTX, HD), np.float32) for _ in range(6)]
    full.v = [np.zeros((NKV, CTX, HD), np.float32) for _ in range(6)]
    want = llm.model.forward(ids, full, logits="all")
    assert _rel(ring, want) < 1e-5
    # Going back 60 positions needs keys the rings overwrote: the cache empties rather than lie.
    cache.truncate(40)
    assert len(cache) == 0
    cache = llm.model.new_cache(CTX)
    llm.model.forward(ids[:50], cache)
    cache.truncate(45)  # 5 back: still inside every ring
    assert len(cache) == 45
    assert _rel(llm.model.forward(ids[45:50], cache, logits="all"), want[45:50]) < 1e-5
    llm.close()


@pytest.mark.parametrize("name", ["gemma3", "llama"])
def test_prompt_logits_identical_at_any_thread_count(name, tmp_path, monkeypatch):
    """A prompt chunk's attention runs over (token, head) pairs on the kernels' pool in the fused
    loop; every pair computes alone, so the logits' bits do not depend on the threads."""
    if importlib.util.find_spec("edgesdk._cllm") is None:
        pytest.skip("fused loop not built")
    kw = dict(ARCH_CASES[name])
    path = write_model(tmp_path / f"{name}.gguf", kw.pop("arch", name), types=MIX, **kw)
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "1")
    ids = _prompt()
    out = []
    for threads in (1, 2):
        llm = LLM(path, impl="c", activations="int8", n_ctx=CTX, threads=threads)
        try:
            assert llm.model.fused is not None
            out.append(llm.model.forward(ids, llm.model.new_cache(CTX), logits="all"))
        finally:
            llm.close()
    np.testing.assert_array_equal(out[0], out[1])
