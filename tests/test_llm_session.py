"""GGUF models through the public API: edgesdk.Session, the cpu backend plugin and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

import edgesdk
from edgesdk._errors import GenerationError

from test_llm import DATA, model_path


@pytest.fixture(scope="module")
def session():
    s = edgesdk.Session(model_path(), backend_options={"cpu": {"n_ctx": 512}})
    yield s
    s.close()


def test_session_places_gguf_on_cpu_backend(session):
    assert session.device.backend == "cpu" and session.device.kind == "cpu"
    assert session.runner.llm.n_ctx == 512


def test_session_generate_and_stream(session):
    assert "Paris" in session.generate("The capital of France is", max_tokens=4)
    pieces = list(session.generate_stream([{"role": "user", "content": "Hi"}], temperature=0.7, top_p=0.9, seed=1, max_tokens=5))
    assert pieces and all(isinstance(p, str) for p in pieces)
    st = session.runner.last_stats
    assert st.generated_tokens <= 5 and st.prompt_tokens > 10 and st.ttft_s > 0


def test_session_run_returns_logits(session):
    ids = session.runner.tokenizer.encode("Hello world")
    out = session.run({"input_ids": np.array([ids], np.int64)})
    logits = out["logits"]
    assert logits.shape == (1, len(ids), 49152) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[0], session.runner.llm.logits(ids), rtol=0, atol=1e-4)


def test_session_run_is_thread_safe(session):
    import threading

    tok = session.runner.tokenizer
    feeds = [{"input_ids": np.array([tok.encode(t)], np.int64)} for t in ("Hello there", "The capital of France is")]
    want = [session.run(f)["logits"] for f in feeds]
    got = {}

    def work(j):
        got[j] = session.run(feeds[j % 2])["logits"]

    threads = [threading.Thread(target=work, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(got[j], want[j % 2]) for j in range(4))


def test_draft_session_speculation(session):
    with edgesdk.Session(model_path(), backend_options={"cpu": {"n_ctx": 512}}) as draft:
        plain = session.generate("Count: one, two, three,", max_tokens=5)
        assert session.generate("Count: one, two, three,", max_tokens=5, draft=draft) == plain
        assert session.runner.last_stats.speculative == "draft"
        with pytest.raises(GenerationError):
            session.generate("x", draft=session)


def test_bad_backend_option():
    from edgesdk._errors import PlacementError

    with pytest.raises(PlacementError, match="n_ctxx"):
        # require the device: otherwise placement moves on to the next device that reads GGUF (PoCL, a cpu-kind device).
        edgesdk.Session(model_path(), require="cpu:0", backend_options={"cpu": {"n_ctxx": 5}})


def test_cli_generate_and_perplexity(capsys):
    from edgesdk.cli import main

    assert main(["generate", model_path(), "The capital of France is", "--raw", "-n", "3", "--n-ctx", "64"]) == 0
    out, err = capsys.readouterr()
    assert "Paris" in out and "tok/s" in err
    assert main(["perplexity", model_path(), str(DATA / "tinyshakespeare-4k.txt"), "--n-ctx", "64", "--max-chunks", "1"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("perplexity: ") and "1 chunks of 64 tokens" in out
