"""Gemma 3 270M Q4_K_M (the ``gemma3-270m`` hub model, from its chunk wheels) against llama.cpp.

The same file runs in llama-cpp-python (f32 KV cache, 2 threads) and in edgesdk's cpu backend on the
same token ids. Both quantize activations to 8 bits per block, but not with identical rounding
everywhere (GELU through an fp16 table in llama.cpp, summation order), and this model turns those
last bits into logit differences of a few percent of their range. So greedy decoding is compared
teacher-forced along llama.cpp's tokens: at every step edgesdk's first choice must be llama.cpp's,
unless llama.cpp's token is within a near-tie margin of it. Perplexity must agree to 1 %.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import hub_path

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")

DATA = Path(__file__).parent / "data"
N_CTX = 512
PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    [{"role": "user", "content": "List three colors of the rainbow."}],
]
NEAR_TIE = 0.5  # logits; llama.cpp's choice may lose to another token by at most this much


@pytest.fixture(scope="module")
def path():
    return hub_path("gemma3-270m")


@pytest.fixture(scope="module")
def session(path):
    import edgesdk

    s = edgesdk.Session(path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(path):
    from llama_ref import llama

    ref = llama(model_path=path, n_ctx=N_CTX, n_batch=N_CTX, logits_all=True, n_threads=2, verbose=False, type_k=0, type_v=0)
    yield ref
    ref.close()


def llama_greedy(ref, ids: list[int], n: int) -> list[int]:
    ref.reset()
    ref.eval(ids)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(ref.scores[ref.n_tokens - 1])))
        ref.eval(out[-1:])
    return out


def test_config_from_the_description(session):
    cfg = session.runner.llm.config
    assert (cfg.arch.name, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == ("gemma3", 18, 640, 4, 1, 256)
    assert [p.window for p in cfg.layers] == ([512] * 5 + [0]) * 3
    assert cfg.ropes == ((1e6, 1.0), (10000.0, 1.0)) and cfg.embed_scale == pytest.approx(640**0.5)
    assert session.runner.device_id == "cpu:0"


def test_chat_prompt_uses_gemmas_template(session, reference):
    llm = session.runner.llm
    assert llm.tokenizer.chat_template is None  # the file has none: the architecture's built-in one is used
    text = llm.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    ids = llm.prompt_ids([{"role": "user", "content": "Hi"}])
    assert ids == reference.tokenize(llm.apply_chat_template([{"role": "user", "content": "Hi"}]).encode(), add_bos=False, special=True)
    assert ids[0] == llm.tokenizer.bos_id and ids.count(llm.tokenizer.bos_id) == 1


@pytest.mark.parametrize("prompt", PROMPTS, ids=["text", "code", "chat"])
def test_greedy_tokens_match_llama_cpp(session, reference, prompt):
    llm = session.runner.llm
    ids = llm.prompt_ids(prompt)
    want = llama_greedy(reference, ids, 24)
    logits = llm.model.forward(ids + want, llm.model.new_cache(N_CTX), logits=len(ids) - 1)[:-1]  # teacher-forced
    ref_logits = np.array(reference.scores[len(ids) - 1 : len(ids) + len(want) - 1])
    assert np.abs(logits - ref_logits).max() < 0.1 * np.abs(ref_logits).max()
    ours = logits.argmax(-1)
    rows = np.arange(len(want))
    assert np.all(logits[rows, want] >= logits.max(-1) - NEAR_TIE), (ours.tolist(), want)
    assert (ours == np.array(want)).mean() >= 0.75
    # and free-running generation follows llama.cpp up to the first near-tie
    first_tie = next((int(i) for i in rows if ours[i] != want[i]), len(want))
    got = llm.tokenizer.encode(session.generate(ids, max_tokens=first_tie, ignore_eos=True), add_bos=False)
    assert llm.tokenizer.decode(got) == llm.tokenizer.decode(want[:first_tie])


def test_perplexity_within_one_percent_of_llama_cpp(session, reference):
    from edgesdk.llm._perplexity import perplexity_from_logits

    text = (DATA / "tinyshakespeare-4k.txt").read_text(encoding="utf-8")
    n_ctx, chunks = 256, 3
    llm = session.runner.llm
    ours = llm.perplexity(text, n_ctx=n_ctx, max_chunks=chunks)
    tokens = llm.tokenizer.encode(text, add_bos=False)

    def score(chunk, first):
        reference.reset()
        reference.eval(list(chunk))
        return np.array(reference.scores[first : len(chunk)], np.float32)

    theirs = perplexity_from_logits(tokens, n_ctx, score, bos_id=llm.tokenizer.bos_id, max_chunks=chunks)
    assert ours.chunks == theirs.chunks == chunks
    assert abs(ours.ppl / theirs.ppl - 1) < 0.01, (ours.ppl, theirs.ppl)
