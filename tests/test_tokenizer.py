"""The GGUF tokenizer against llama.cpp (llama-cpp-python, vocab-only), token for token.

Real vocabularies: SmolLM2-135M (byte-level BPE, ``smollm`` pre-tokenizer) and Gemma 3 270M
(SentencePiece, 262,144 pieces). Derived files reuse a real vocabulary with other metadata (every
BPE pre-tokenizer, SPM with a space prefix, phi-3's stripping rule, added user-defined tokens), so
each code path is checked against llama.cpp on a realistic vocabulary, not on a toy one.
"""

from __future__ import annotations

import ctypes
import random
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import hub_path, smollm2_path
from edgesdk._errors import GenerationError, UnsupportedModelError
from edgesdk.llm._gguf import GGUFFile
from edgesdk.llm._tokenizer import _PRE, Tokenizer, _byte_decoder

llama_cpp = pytest.importorskip("llama_cpp")

DATA = Path(__file__).parent / "data"
MULTILINGUAL = (DATA / "tokenizer" / "multilingual.txt").read_text(encoding="utf-8")

SPECIALS = [
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<eos>",
    "<pad>",
    "<unused12>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<table>",
    "</s>",
    "<s>",
    "<h1>",
    "<0x41>",
    "<start_of_image>",
    "[multimodal]",
]
CASES = [
    "",
    "a",
    " ",
    "  ",
    "\n",
    "\t",
    "\r",
    "é",
    "你",
    "🎉",
    "'",
    "1",
    "▁",
    "<",
    "Hello world",
    "Hello, world! How are you?",
    "  leading spaces",
    "trailing spaces   ",
    " \t mixed \t\t whitespace \n\n\n",
    "a  b   c    d     e" + " " * 40 + "f",
    "tabs\tand\t\ttabs\t\t\t",
    "line\r\nwindows\r\nendings\r\n",
    "lone\rcarriage\r",
    "\n\n\nmany\n\n\n\n\nnewlines\n",
    "\u00a0nbsp\u2003em\u3000ideographic\u2028sep\u0085nel",
    "\x00nul\x1cfs\x1f\x7f",
    "don't I'm we'll they've you'd it's I'LL IT'S 'tis",
    "numbers 1 22 333 4444 55555 1234567890 3.14 ٣٤٥ ²³ ⅛ Ⅻ",
    "x" * 1500,
    "zqxjkvw" * 200,
    "ab" * 700 + "ç" * 300,
    "\U0001f600" * 400,
    "𓀀𓀁𓀂𓀃" * 100,
    "\U000e0041\U0010fffd\U000f0000" * 50,
    "你好" * 300 + "世界",
    "a\u0301e\u0301o\u0308 combining",
    "👨‍👩‍👧‍👦👍🏽🏳️‍🌈🇺🇸1️⃣❤️‍🔥🧑🏻‍💻",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<bos><bos>text<eos>",
    "<|im_start|>user\n12<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn><end_of_turn>",
    "<<bos>>",
    "<h1>Title</h1><table><tr><td>x</td></tr></table>",
    "<s>strike</s> <b>bold</b>",
    "<unused0><unused1>x<unused6241>",
    "<0x41><0xE4><0xBD><0xA0>",
    "<|endoftext|><|endoftext|>",
    "text</s>more",
    "▁▁ leading escaped",
    " <start_of_turn> spaced ",
    "def f(x):\n    return x ** 2  # square\n\nclass A:\n\tpass\n",
    'int main(void) { printf("%d\\n", 42); return 0; }',
]


_smollm2_path = smollm2_path


def _pair(path: str) -> SimpleNamespace:
    ref = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    t0 = time.perf_counter()
    g = GGUFFile(path)
    t1 = time.perf_counter()
    tok = Tokenizer(g)
    return SimpleNamespace(
        path=path, tok=tok, ref=ref, vocab=llama_cpp.llama_model_get_vocab(ref.model), gguf=g, build_s=time.perf_counter() - t1, parse_s=t1 - t0
    )


@pytest.fixture(scope="module")
def smollm2():
    return _pair(_smollm2_path())


@pytest.fixture(scope="module")
def gemma3():
    return _pair(hub_path("gemma3-270m"))  # assembled from its chunk wheels once per session


@pytest.fixture(params=["smollm2", "gemma3"])
def model(request):
    return request.getfixturevalue(request.param)


def ref_encode(m, text: str, add_bos: bool = True) -> list[int]:
    return m.ref.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)


def ref_piece(m, token_id: int, special: bool = True) -> bytes:
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(m.vocab, token_id, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(m.vocab, token_id, buf, len(buf), 0, special)
    return buf.raw[:n]


def ref_decode(m, ids, special: bool = True) -> bytes:
    # llama-cpp-python's own detokenize() truncates pieces longer than 32 bytes; token_to_piece does not.
    return b"".join(ref_piece(m, i, special) for i in ids)


def mismatches(m, texts):
    bad = []
    for s in texts:
        for add_bos in (True, False):
            want = ref_encode(m, s, add_bos)
            got = m.tok.encode(s, add_bos=None if add_bos else False)
            if got != want:
                bad.append((s[:80], add_bos, want[:24], got[:24]))
    return bad


# --- token ids ---------------------------------------------------------------------------------


def test_corpus_matches_llama_cpp(model):
    lines = MULTILINGUAL.splitlines(keepends=True)
    texts = CASES + lines + [MULTILINGUAL, MULTILINGUAL.replace("\n", "\r\n"), "".join(SPECIALS), " ".join(SPECIALS)]
    assert mismatches(model, texts) == []


def test_long_mixed_text_matches_llama_cpp(model):
    rng = random.Random(7)
    parts = MULTILINGUAL.split() + SPECIALS + CASES[14:40]
    text = "".join(rng.choice(parts) + rng.choice([" ", "  ", "\n", "", "\t", "\r\n"]) for _ in range(1500))
    assert len(text) > 20_000
    assert mismatches(model, [text]) == []


_pieces = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8", max_codepoint=0x2FFF), max_size=16),
    st.sampled_from(SPECIALS + [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\r", "\u2581", "'s", "'LL", "123", "1234"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(_pieces, max_size=8).map("".join))
def test_random_text_matches_llama_cpp(model, text):
    for add_bos in (True, False):
        assert model.tok.encode(text, add_bos=None if add_bos else False) == ref_encode(model, text, add_bos)


# --- vocabulary metadata -----------------------------------------------------------------------


def test_token_attributes_match_llama_cpp(model):
    tok, vocab = model.tok, model.vocab
    n = tok.vocab_size
    assert n == llama_cpp.llama_vocab_n_tokens(vocab)
    attrs = np.array([llama_cpp.llama_vocab_get_attr(vocab, i) for i in range(n)])
    assert np.array_equal(attrs, tok._attr)
    eog = {i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert tok.stop_ids == eog
    assert tok.special_ids == {i for i in range(n) if attrs[i] & 9}  # CONTROL | UNKNOWN
    assert tok.bos_id == llama_cpp.llama_vocab_bos(vocab) and tok.eos_id == llama_cpp.llama_vocab_eos(vocab)
    assert tok.add_bos == llama_cpp.llama_vocab_get_add_bos(vocab)
    assert tok.add_eos == llama_cpp.llama_vocab_get_add_eos(vocab)


def test_token_pieces_match_llama_cpp(model):
    tok = model.tok
    for i in range(tok.vocab_size):
        assert tok.token_bytes(i) == ref_piece(model, i, True), i
        assert tok.decode([i], skip_special=True) == ref_piece(model, i, False).decode("utf-8", "replace"), i


def test_metadata_arrays_are_released(model):
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores"):
        assert key not in model.gguf.meta
    assert len(model.tok.fingerprint) == 64


def test_known_shapes(smollm2, gemma3):
    assert smollm2.tok.encode("<|im_start|>user\n12<|im_end|>") == [1, 4093, 198, 33, 34, 2]
    assert smollm2.tok.stop_ids >= {0, 2} and not smollm2.tok.add_bos
    g = gemma3.tok
    assert g.vocab_size == 262144 and g.add_bos and g.bos_id == 2
    ids = g.encode("<start_of_turn>user\nHi<end_of_turn>\n")
    assert ids[:2] == [2, 105] and g.tokens[ids[2]] == "user" and 106 in ids and 107 in ids and {1, 106} <= g.stop_ids


# --- decoding ----------------------------------------------------------------------------------


def test_decode_round_trip(model):
    tok = model.tok
    agreed = 0
    for s in CASES + MULTILINGUAL.splitlines(keepends=True) + [MULTILINGUAL]:
        ids = tok.encode(s, add_bos=False)
        ref = ref_decode(model, ids)
        assert tok.decode(ids) == ref.decode("utf-8", "replace")
        assert tok.decode(ids, skip_special=True) == ref_decode(model, ids, special=False).decode("utf-8", "replace")
        if ref == s.encode():
            assert tok.decode(ids) == s
            agreed += 1
    assert agreed > len(CASES)  # nearly all of them round-trip (not "▁", which llama.cpp also turns into a space)


def test_stream_decode_equals_whole_decode(model):
    tok = model.tok
    for s in CASES + [MULTILINGUAL]:
        ids = tok.encode(s)
        for skip in (True, False):
            dec = tok.stream_decoder(skip_special=skip)
            pieces = [dec.push(i) for i in ids] + [dec.flush()]
            assert "".join(pieces) == tok.decode(ids, skip_special=skip)


def test_stream_never_splits_a_character_across_byte_tokens(gemma3):
    tok = gemma3.tok
    # Characters the 262k vocabulary has no piece for: SentencePiece spells them as <0xXX> byte tokens.
    rare = [chr(c) for c in range(0x13000, 0x13400) if len(tok.encode(chr(c), add_bos=False)) >= 3][:20]
    assert len(rare) >= 5
    text = "x" + "y".join(rare)
    ids = tok.encode(text, add_bos=False)
    assert any(tok.tokens[i].startswith("<0x") for i in ids)
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces) and "".join(pieces) + dec.flush() == text
    assert "".join(pieces) == ref_decode(gemma3, ids).decode()


def test_user_defined_tokens_survive_skip_special(gemma3):
    tok = gemma3.tok
    table, h1, turn = (tok.tokens.ids[t] for t in ("<table>", "<h1>", "<start_of_turn>"))
    assert {table, h1} <= tok.user_defined_ids and not {table, h1} & tok.special_ids and turn in tok.special_ids
    ids = tok.encode("<start_of_turn><h1>Title</h1>\n<table>", add_bos=False)
    assert ids[0] == turn and h1 in ids and table in ids
    dec = tok.stream_decoder(skip_special=True)
    assert "".join(dec.push(i) for i in ids) + dec.flush() == "<h1>Title</h1>\n<table>"
    assert tok.decode(ids, skip_special=True) == "<h1>Title</h1>\n<table>"


# --- derived vocabularies: every other code path, still against llama.cpp -------------------------


def _write_gguf(path, meta: dict, tokens, types, scores=None, merges=None):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for k, v in (
        ("block_count", 1),
        ("context_length", 64),
        ("embedding_length", 8),
        ("feed_forward_length", 8),
        ("head_count", 1),
        ("head_count_kv", 1),
        ("layer_norm_rms_eps", 1e-5),
        ("rope_dimension_count", 8),
    ):
        getattr(w, f"add_{k}")(v)
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    if scores is not None:
        w.add_token_scores([float(s) for s in scores])
    if merges is not None:
        w.add_token_merges(merges)
    for key, value in meta.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


@pytest.fixture(scope="module")
def smollm2_vocab():
    g = GGUFFile(_smollm2_path())
    return g.meta["tokenizer.ggml.tokens"], g.meta["tokenizer.ggml.token_type"], g.meta["tokenizer.ggml.merges"]


SAMPLE = CASES + MULTILINGUAL.splitlines(keepends=True) + ["<think>plan</think><tool_call>{}</tool_call>", "x <think> y"]


# One name per distinct llama.cpp configuration (regexes, ignore_merges, add_bos); the other names in
# _PRE are aliases of these.
@pytest.mark.parametrize("pre", ["default", "gpt-2", "smollm", "llama-bpe", "dbrx", "qwen2"])
def test_every_bpe_pre_tokenizer_matches_llama_cpp(pre, smollm2_vocab, tmp_path):
    tokens, types, merges = smollm2_vocab
    extra = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
    path = _write_gguf(
        tmp_path / f"{pre}.gguf",
        {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2},
        tokens + extra,
        list(types) + [4] * len(extra),
        merges=merges,
    )
    m = _pair(path)
    rng = random.Random(pre)
    noise = "".join(rng.choice("ab1 2\t\n\r'sS!?$+<=>^~|`.,-_ éü٣²你🎉\u00a0") for _ in range(3000))
    assert mismatches(m, SAMPLE + [noise, MULTILINGUAL]) == []
    if pre in ("llama3", "llama-bpe"):  # ignore_merges: a pre-token found in the vocabulary is one token
        assert m.tok.add_bos and m.tok._ignore_merges
    think = m.tok._vocab["<think>"]
    ids = m.tok.encode("<think>plan</think><|im_end|>", add_bos=False)
    assert ids[0] == think and think in m.tok.user_defined_ids
    dec = m.tok.stream_decoder(skip_special=True)
    assert "".join(dec.push(i) for i in ids) + dec.flush() == "<think>plan</think>"


PRE_ALIASES = {
    "default": [],
    "gpt-2": ["gpt2", "phi-2", "mpt", "olmo"],
    "smollm": ["starcoder", "refact", "command-r"],
    "llama-bpe": ["llama3", "llama-v3"],
    "dbrx": ["smaug-bpe"],
    "qwen2": ["stablelm2", "deepseek-r1-qwen"],
}


def test_pre_tokenizer_aliases_share_a_tested_configuration():
    assert set(_PRE) == set(PRE_ALIASES) | {a for names in PRE_ALIASES.values() for a in names}
    for rep, names in PRE_ALIASES.items():
        assert all(_PRE[a] == _PRE[rep] for a in names), rep


def test_ignore_merges_changes_the_tokens(smollm2_vocab, tmp_path):
    """A pre-token that is itself in the vocabulary but that the merges cannot build any more."""
    tokens, types, merges = smollm2_vocab
    word = "Ġhello"
    merges = [m for m in merges if m.replace(" ", "") != word]
    outs = {}
    for pre in ("llama-bpe", "dbrx"):  # the same regex; only llama-bpe ignores merges
        path = _write_gguf(
            tmp_path / f"{pre}.gguf",
            {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.bos_token_id": 1},
            tokens,
            types,
            merges=merges,
        )
        m = _pair(path)
        outs[pre] = m.tok.encode("say hello", add_bos=False)
        assert outs[pre] == ref_encode(m, "say hello", False)
    assert outs["llama-bpe"][-1] == tokens.index(word) and len(outs["dbrx"]) > len(outs["llama-bpe"])


@pytest.fixture(scope="module")
def gemma3_vocab(gemma3):
    g = GGUFFile(gemma3.path)
    return (g.meta["tokenizer.ggml.tokens"], g.meta["tokenizer.ggml.token_type"], g.meta["tokenizer.ggml.scores"])


@pytest.mark.parametrize("variant", ["space_prefix", "phi3_rstrip"])
def test_spm_variants_match_llama_cpp(variant, gemma3_vocab, tmp_path):
    """SentencePiece with the space prefix (LLaMA 1/2 style: also after every special token) and with
    phi-3's rule that special tokens swallow the whitespace after them."""
    tokens, types, scores = gemma3_vocab
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.add_space_prefix": True}
    extra = []
    if variant == "phi3_rstrip":  # llama.cpp's phi-3 rule needs these four tokens in the vocabulary
        meta["general.name"] = "Phi-3 mini (tokenizer test)"
        extra = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    m = _pair(_write_gguf(tmp_path / f"{variant}.gguf", meta, tokens + extra, list(types) + [3] * len(extra), scores=list(scores) + [0.0] * len(extra)))
    assert m.tok._add_space_prefix
    chat = [
        "<start_of_turn>  \n user <end_of_turn> \t\nx",
        "a<h1> b </h1>  c",
        "<|user|>\n Hi <|end|>\n<|assistant|>  x",
        "<s> a </s>  b <unk>  c<|endoftext|>  d",
    ]
    assert mismatches(m, SAMPLE + chat) == []
    if extra:
        assert m.tok.encode("<|user|>\n  Hi", add_bos=False)[1:] == m.tok.encode("<|user|>Hi", add_bos=False)[1:]


def test_spm_score_ties_merge_leftmost_first(tmp_path):
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "a", "b", "ab", "ba", "aba", "bab", "<tag>"]
    types = [2, 3, 3] + [6] * 256 + [1] * 7 + [4]
    scores = [0.0] * 259 + [-1.0, -2.0, -2.0, -1.0, -1.0, -0.5, -0.5, 0.0]  # "ab" and "ba" tie
    m = _pair(_write_gguf(tmp_path / "ties.gguf", {"tokenizer.ggml.model": "llama", "tokenizer.ggml.add_space_prefix": False}, pieces, types, scores=scores))
    texts = ["aba", "bab", "abab", "babab", "aaabbb", "a b", "zz", "<tag>ab<tag>ba", "é", ""]
    assert mismatches(m, texts) == []
    assert m.tok.encode("abab", add_bos=False) == [m.tok.tokens.ids[t] for t in ("aba", "b")]


# --- errors and speed --------------------------------------------------------------------------


def test_bad_input(smollm2):
    tok = smollm2.tok
    for bad in (b"bytes", None, 12, ["a"]):
        with pytest.raises(GenerationError):
            tok.encode(bad)
    with pytest.raises(GenerationError):
        tok.encode("lone \ud800 surrogate")
    with pytest.raises(GenerationError):
        tok.token_bytes(tok.vocab_size)
    with pytest.raises(GenerationError):
        tok.decode([-1])


@pytest.mark.parametrize("model_name,pre", [("bert", None), ("t5", None), ("rwkv", None), ("gpt2", "no-such-pre")])
def test_unsupported_tokenizers_are_refused(model_name, pre, tmp_path):
    meta = {"tokenizer.ggml.model": model_name}
    if pre:
        meta["tokenizer.ggml.pre"] = pre
    by_byte = {b: c for c, b in _byte_decoder().items()}
    path = _write_gguf(tmp_path / "t.gguf", meta, [by_byte[b] for b in range(256)], [1] * 256, merges=[])
    with pytest.raises(UnsupportedModelError) as e:
        Tokenizer(GGUFFile(path))
    msg = str(e.value)
    assert ("'gpt2'" in msg and "'llama'" in msg) if pre is None else ("no-such-pre" in msg and "smollm" in msg)


def test_gemma_vocab_build_and_encode_speed(gemma3):
    # Targets are ~0.3 s each on these machines; the bounds leave room for a loaded 2-core box.
    assert gemma3.build_s < 2.0, gemma3.build_s
    words = MULTILINGUAL.split() + CASES[14:30]
    rng = random.Random(3)
    text = " ".join(rng.choice(words) for _ in range(4000))[:20_000]
    t0 = time.perf_counter()
    ids = gemma3.tok.encode(text)
    dt = time.perf_counter() - t0
    assert dt < 1.5, dt
    assert ids == ref_encode(gemma3, text)


def test_token_text_is_the_vocabulary_spelling(smollm2, gemma3):
    assert gemma3.tok.token_text(gemma3.tok.bos_id) == "<bos>" and gemma3.tok.token_text(None) == ""
    word = gemma3.tok.encode(" the", add_bos=False)[-1]
    assert gemma3.tok.token_text(word) == "\u2581the" and gemma3.tok.decode([word]) == " the"
    assert smollm2.tok.token_text(smollm2.tok.encode(" the", add_bos=False)[0]) == "Ġthe"
    with pytest.raises(GenerationError):
        smollm2.tok.token_text(-1)


# --- the compact vocabulary ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=300, unique=True), st.lists(st.text(max_size=6), max_size=30))
def test_vocab_maps_every_token_both_ways(tokens, probes):
    import pickle

    from edgesdk.llm._vocab import Vocab

    v = Vocab(tokens)
    assert len(v) == len(v.ids) == len(tokens) and list(v) == tokens
    assert all(v.get(t) == i and v.ids[t] == i and t in v for i, t in enumerate(tokens))
    index = {t: i for i, t in enumerate(tokens)}
    for p in probes:
        assert v.get(p) == index.get(p)
        if p not in index:
            assert p not in v.ids
            with pytest.raises(KeyError):
                v.ids[p]
    for bad in (-1, len(tokens)):
        with pytest.raises(IndexError):
            v[bad]
    assert list(pickle.loads(pickle.dumps(v))) == tokens


def test_vocab_names_a_duplicate_token_and_tolerates_hash_collisions():
    from edgesdk.llm._vocab import Vocab

    with pytest.raises(ValueError, match=r"duplicate token 'b' \(ids 1 and 3\)"):
        Vocab(["a", "b", "c", "b"])

    class Same(str):  # distinct texts, one hash: the byte comparison keeps them apart
        def __hash__(self):
            return 7

    tokens = [Same(t) for t in ("x", "y", "z", "\u2581w")]
    v = Vocab(tokens)
    assert [v.get(Same(t)) for t in ("x", "y", "z", "\u2581w", "q")] == [0, 1, 2, 3, None]


def test_gemma_vocabulary_is_compact(gemma3):
    """262k tokens: ~30 MB as a list of str + dict; the blob and table hold them in a few MB."""
    assert len(gemma3.tok.tokens) == 262144 and gemma3.tok.tokens.nbytes < 10e6


def test_a_repeated_or_non_string_vocabulary_is_a_model_format_error(tmp_path):
    import gguf

    from edgesdk._errors import ModelFormatError

    meta = {"tokenizer.ggml.model": "llama"}
    dup = _write_gguf(tmp_path / "dup.gguf", meta, ["<unk>", "<s>", "</s>", "a", "a"], [2, 3, 3, 1, 1], scores=[0.0] * 5)
    with pytest.raises(ModelFormatError, match=r"duplicate token 'a' \(ids 3 and 4\) in the vocabulary"):
        Tokenizer(GGUFFile(dup))
    ints = tmp_path / "ints.gguf"
    w = gguf.GGUFWriter(str(ints), "llama")
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array("tokenizer.ggml.tokens", [1, 2, 3])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.tokens is not a string array"):
        Tokenizer(GGUFFile(ints))
