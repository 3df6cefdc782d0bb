"""The forward pass against an independent float64 implementation, on tiny random GGUF models.

The models are written here with ``gguf.GGUFWriter`` and cover what the real fixture does not:
an untied F16 output head, mixed block types inside the fused Q/K/V projection, no fused C path,
the qwen2 architecture (neox RoPE, Q/K/V biases), and K-quant / Q5 / IQ4_NL weights (random blocks,
since gguf-py has no K-quant quantizer; its dequantizer is the reference).
The reference dequantizes with ``gguf.quants`` (not edgesdk code) and follows llama.cpp's layout.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from edgesdk.llm import LLM
from edgesdk.llm._tokenizer import _byte_decoder
from gguf_blocks import random_blocks

D, NH, NKV, HD, FF, CTX = 256, 4, 2, 64, 256, 64
KQUANT = {"attn_q": "Q4_K", "attn_k": "Q5_K", "attn_v": "Q6_K", "ffn_gate": "Q2_K", "ffn_up": "Q3_K", "ffn_down": "Q6_K", "attn_output": "IQ4_NL"}


def _tokens() -> list[str]:
    by_byte = {b: c for c, b in _byte_decoder().items()}
    return [by_byte[b] for b in range(256)] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _write(path, *, tied: bool, mixed: bool, arch: str = "llama", seed: int = 0, head_count: int = NH, kquant: bool = False):
    import gguf

    q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(seed)
    vocab = len(_tokens())
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(CTX)
    w.add_embedding_length(D)
    w.add_feed_forward_length(FF)
    w.add_head_count(head_count)
    w.add_head_count_kv(NKV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HD)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(_tokens())
    w.add_token_types([1] * 256 + [3, 3, 3])
    w.add_token_merges([])
    w.add_eos_token_id(258)
    w.add_bos_token_id(256)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    ref = {}

    def add(name, shape, qtype, scale=0.3):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype in (q.F32, q.F16):
            data = a.astype(np.float16 if qtype == q.F16 else np.float32)
            w.add_tensor(name, data)
            ref[name] = data.astype(np.float64)
        else:
            kind = name.split(".")[2] if name.startswith("blk.") else ""
            if kquant and kind in KQUANT:
                qtype = q[KQUANT[kind]]
                packed = random_blocks(qtype.name, shape, rng, scale)
            else:
                packed = gguf.quants.quantize(a, qtype)
            w.add_tensor(name, packed, raw_dtype=qtype)
            ref[name] = gguf.quants.dequantize(packed, qtype).astype(np.float64).reshape(shape)

    add("token_embd.weight", (vocab, D), q.Q8_0, 1.0)
    if not tied:
        add("output.weight", (vocab, D), q.F16)
    add("output_norm.weight", (D,), q.F32, 0.1)
    for i in range(2):
        add(f"blk.{i}.attn_norm.weight", (D,), q.F32, 0.1)
        add(f"blk.{i}.ffn_norm.weight", (D,), q.F32, 0.1)
        if arch == "qwen2":
            for n, rows in (("q", NH * HD), ("k", NKV * HD), ("v", NKV * HD)):
                add(f"blk.{i}.attn_{n}.bias", (rows,), q.F32, 0.5)
        add(f"blk.{i}.attn_q.weight", (NH * HD, D), q.Q4_0)
        add(f"blk.{i}.attn_k.weight", (NKV * HD, D), q.Q4_0)
        add(f"blk.{i}.attn_v.weight", (NKV * HD, D), q.Q8_0 if mixed else q.Q4_0)
        add(f"blk.{i}.attn_output.weight", (D, NH * HD), q.Q4_1)
        add(f"blk.{i}.ffn_gate.weight", (FF, D), q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (FF, D), q.Q4_1)
        add(f"blk.{i}.ffn_down.weight", (D, FF), q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path), ref


def _reference_logits(ref, ids, arch: str = "llama") -> np.ndarray:
    """Float64 forward, all positions. llama: RoPE on adjacent pairs (llama.cpp's GGUF layout);
    qwen2: RoPE on the two halves of each head ("neox") and Q/K/V biases."""
    ids = np.asarray(ids)
    T = len(ids)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w

    pos = np.arange(T)[:, None]
    inv = 1.0 / 10000.0 ** (np.arange(HD // 2) * 2.0 / HD)
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)

    def rope(x):  # (T, H, HD)
        first, second = (slice(0, HD // 2), slice(HD // 2, HD)) if arch == "qwen2" else (slice(0, HD, 2), slice(1, HD, 2))
        a, b = x[..., first].copy(), x[..., second].copy()
        out = np.empty_like(x)
        out[..., first] = a * cos[:, None] - b * sin[:, None]
        out[..., second] = a * sin[:, None] + b * cos[:, None]
        return out

    def proj(h, i, n):
        y = h @ ref[f"blk.{i}.attn_{n}.weight"].T
        return y + ref[f"blk.{i}.attn_{n}.bias"] if arch == "qwen2" else y

    x = ref["token_embd.weight"][ids]
    for i in range(2):
        p = lambda n, i=i: ref[f"blk.{i}.{n}.weight"]  # noqa: E731
        h = rms(x, p("attn_norm"))
        qh = rope(proj(h, i, "q").reshape(T, NH, HD))
        kh = rope(proj(h, i, "k").reshape(T, NKV, HD))
        vh = proj(h, i, "v").reshape(T, NKV, HD)
        o = np.empty((T, NH, HD))
        for head in range(NH):
            kv = head // (NH // NKV)
            s = qh[:, head] @ kh[:, kv].T / np.sqrt(HD)
            s[np.triu_indices(T, 1)] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, head] = (s / s.sum(-1, keepdims=True)) @ vh[:, kv]
        x = x + o.reshape(T, -1) @ p("attn_output").T
        h = rms(x, p("ffn_norm"))
        g = h @ p("ffn_gate").T
        x = x + (g / (1 + np.exp(-g)) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    head = ref.get("output.weight", ref["token_embd.weight"])
    return rms(x, ref["output_norm.weight"]) @ head.T


@pytest.fixture(
    scope="module",
    params=[dict(tied=False, mixed=True), dict(tied=True, mixed=False), dict(tied=True, mixed=False, arch="qwen2"), dict(tied=True, mixed=False, kquant=True)],
    ids=["llama-untied-f16-mixed", "llama-tied-uniform", "qwen2-tied-bias", "llama-kquants"],
)
def tiny(request, tmp_path_factory):
    kind = {"arch": "llama", **request.param}
    path, ref = _write(tmp_path_factory.mktemp("tiny") / "tiny.gguf", **kind)
    return path, ref, kind


@pytest.mark.parametrize("impl,act,tol", [("numpy", "f32", 1e-4), ("c", "f32", 1e-4), ("c", "int8", 0.1)])
def test_forward_matches_float64_reference(tiny, impl, act, tol):
    from edgesdk.llm._weights import kernel_impl

    if impl == "c" and kernel_impl() != "c":
        pytest.skip("kernels unavailable")
    path, ref, kind = tiny
    llm = LLM(path, impl=impl, activations=act, kv_dtype="f32")
    ids = llm.tokenizer.encode("Hello, tiny model! 123")
    want = _reference_logits(ref, ids, kind["arch"])
    got = llm.logits(ids)
    assert np.abs(got - want).max() <= tol * np.abs(want).max()
    if impl == "c" and kind["tied"] and importlib.util.find_spec("edgesdk._cllm") and os.environ.get("EDGESDK_LLM_FUSED") != "0":
        assert llm.model.fused is not None  # fully block-quantized: the fused C layer loop ran
    if kind["mixed"]:
        assert llm.model.fused is None and llm.model.lm_head._qt is None


def test_tiny_generation_and_chat(tiny):
    path, _, _ = tiny
    llm = LLM(path)
    assert llm.config.n_head_kv == NKV and llm.config.tied_embeddings == tiny[2]["tied"]
    text = llm.generate([{"role": "user", "content": "hi"}], max_tokens=5, ignore_eos=True)
    assert isinstance(text, str) and llm.last_stats.generated_tokens == 5
    assert llm.generate("abcabcabcabc", max_tokens=6, speculative="prompt_lookup") == llm.generate("abcabcabcabc", max_tokens=6)


def test_tensor_dims_must_match_metadata(tmp_path):
    from edgesdk._errors import ModelFormatError

    path, _ = _write(tmp_path / "bad.gguf", tied=True, mixed=False, head_count=8)
    with pytest.raises(ModelFormatError, match="attn_k.weight"):
        LLM(path)


def test_placement_names_each_type_a_backend_lacks(tmp_path):
    """A backend that computes fewer types refuses with each missing type and the tensors using it."""
    import types

    from edgesdk._modelfile import _probe_gguf
    from edgesdk.llm._runner import gguf_refusal

    path, _ = _write(tmp_path / "k.gguf", tied=True, mixed=False, kquant=True)
    model = types.SimpleNamespace(info=_probe_gguf(path, os.path.getsize(path)))
    assert gguf_refusal(model) is None  # the CPU runtime computes every type of the table
    why = gguf_refusal(model, computes=("Q4_0", "Q4_1", "Q8_0", "F16", "F32"))
    assert (
        "does not compute IQ4_NL (attn_output), Q2_K (ffn_gate), Q3_K (ffn_up), Q4_K (attn_q), Q5_K (attn_k), Q6_K (attn_v, ffn_down)" in why
        and "it computes: F32, F16, Q4_0, Q4_1, Q8_0" in why
    )
    model.info["tensor_kinds"]["IQ2_XXS"] = ["ffn_up"]
    assert "IQ2_XXS (ffn_up) are not supported by edgesdk" in gguf_refusal(model)
