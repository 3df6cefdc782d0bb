"""``edgesdk serve``: a real uvicorn server on loopback, driven by the official ``openai`` client
(unchanged), raw httpx for what that client will not send, and edgesdk's own hybrid client.

Every answer is checked against the same Session called directly (greedy, so they must be equal),
and usage against the engine's own GenerationStats.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import free_port, smollm2_path, wait_http_ready

import edgesdk

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from edgesdk.serve import BackgroundServer

MODEL = "smollm2"
CHAT = [{"role": "user", "content": "Name a colour."}]
LONG = {"max_tokens": 1500, "ignore_eos": True}  # far longer than any test waits for: only a cancel ends it early
TRIP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["city", "days"],
    "properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer", "minimum": 1, "maximum": 30}},
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city"], "properties": {"city": {"type": "string", "maxLength": 20}}},
    },
}


@pytest.fixture(scope="module")
def adapter_path(tmp_path_factory):
    from test_lora import write_adapter  # random LoRA pairs for every projection, written with gguf-py

    return write_adapter(tmp_path_factory.mktemp("serve") / "tiny-lora.gguf", smollm2_path(), "llama", seed=1)


@pytest.fixture(scope="module")
def session(adapter_path):
    s = edgesdk.Session(smollm2_path(), adapters={"tiny": adapter_path}, backend_options={"cpu": {"n_ctx": 2048}})
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(session):
    with BackgroundServer(session, model_id=MODEL, queue_size=4, max_tokens=16) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    # max_retries=0: a 429 or 5xx must surface here, not be retried away.
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def direct(session, prompt, **kw) -> str:
    """What the Session itself generates (greedy), for comparison with the server's answer."""
    return str(session.generate(prompt, **kw))


def chat_body(**kw) -> dict:
    return {"model": MODEL, "messages": CHAT, "temperature": 0, **kw}


# --- OpenAI API through the official client -----------------------------------------------------


def test_models(client):
    assert [m.id for m in client.models.list()] == [MODEL, f"{MODEL}:tiny"]
    assert client.models.retrieve(MODEL).owned_by == "edgesdk"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_chat_answer_and_usage_are_the_engine_s(client, session):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    stats = session.runner.last_stats
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == MODEL and choice.message.role == "assistant"
    assert choice.finish_reason == ("length" if stats.stop_reason == "max_tokens" else "stop")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (stats.prompt_tokens, stats.generated_tokens)
    assert r.usage.total_tokens == stats.prompt_tokens + stats.generated_tokens
    assert r.usage.prompt_tokens_details.cached_tokens == stats.cached_tokens
    assert choice.message.content == direct(session, CHAT, max_tokens=12)


def test_streaming_equals_the_whole_answer(client, session):
    kw = {"model": MODEL, "messages": CHAT, "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    stats = session.runner.last_stats
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == stats.generated_tokens


def test_completions_endpoint(client, session):
    prompt = "The capital of France is"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    assert r.usage.prompt_tokens == session.runner.last_stats.prompt_tokens
    assert r.choices[0].text == direct(session, prompt, max_tokens=8)
    streamed = "".join(c.choices[0].text for c in client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_stop_seed_and_sampling_options(client, session):
    prompt = "The capital of France is"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stop=["."])
    assert r.choices[0].finish_reason == "stop" and "." not in r.choices[0].text
    assert r.choices[0].text == direct(session, prompt, max_tokens=8, stop=["."])
    kw = {"model": MODEL, "messages": CHAT, "max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "seed": 3}
    first = client.chat.completions.create(**kw).choices[0].message.content
    assert client.chat.completions.create(**kw).choices[0].message.content == first
    assert first == direct(session, CHAT, max_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    # max_completion_tokens is the newer name of max_tokens
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3


def test_json_schema_output_validates(client):
    rf = {"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP}}
    msgs = [{"role": "user", "content": "Plan a trip to Rome for 3 days. Answer in JSON."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, temperature=0, response_format=rf)
    jsonschema.validate(json.loads(r.choices[0].message.content), TRIP)
    streamed = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=40, temperature=0, response_format=rf, stream=True)
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in streamed if c.choices)), TRIP)


def test_incomplete_structured_output_is_an_error_never_a_success(client):
    rf = {"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP}}
    kw = {"model": MODEL, "messages": CHAT, "max_tokens": 3, "temperature": 0, "response_format": rf}  # too few for any valid trip
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(**kw)
    err = e.value.body
    assert err["code"] == "structured_output_incomplete" and isinstance(err["partial"], str)
    with pytest.raises(openai.APIError, match="max_tokens"):
        list(client.chat.completions.create(**kw, stream=True))


def test_tool_call_and_the_turn_after_it(client):
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=64, temperature=0, tools=[WEATHER], tool_choice=forced, parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # the call and its result go back as OpenAI messages; the model then answers in text
    msgs += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}]
    after = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0, tools=[WEATHER], tool_choice="none")
    assert after.choices[0].finish_reason in ("stop", "length") and not after.choices[0].message.tool_calls
    streamed = list(
        client.chat.completions.create(
            model=MODEL, messages=msgs[:1], max_tokens=64, temperature=0, tools=[WEATHER], tool_choice=forced, parallel_tool_calls=False, stream=True
        )
    )
    deltas = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert deltas and deltas[0].function.name == "get_weather" and streamed[-1].choices[0].finish_reason == "tool_calls"


def test_adapter_per_request(client, session):
    r = client.chat.completions.create(model=f"{MODEL}:tiny", messages=CHAT, max_tokens=8, temperature=0)
    assert r.choices[0].message.content == direct(session, CHAT, max_tokens=8, adapter="tiny")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model=f"{MODEL}:nope", messages=CHAT, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="adapter_scale"):
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2, extra_body={"adapter_scale": 0.5})


def test_three_concurrent_clients(server, session):
    questions = ["Name a colour.", "Name a fruit.", "Name an animal."]
    answers: dict[str, str] = {}

    def ask(q):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        answers[q] = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=8, temperature=0).choices[0].message.content

    before = server.status["completed"]
    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert server.status["completed"] == before + 3
    assert answers == {q: direct(session, [{"role": "user", "content": q}], max_tokens=8) for q in questions}


# --- what the official client will not send -----------------------------------------------------


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", b"{not json", None),
        ("/v1/chat/completions", b"[1, 2]", None),
        ("/v1/chat/completions", {"model": MODEL}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages"),
        ("/v1/chat/completions", {"messages": CHAT}, "model"),
        ("/v1/chat/completions", chat_body(temperature="hot"), "temperature"),
        ("/v1/chat/completions", chat_body(temperature=3), "temperature"),
        ("/v1/chat/completions", chat_body(max_tokens=-1), "max_tokens"),
        ("/v1/chat/completions", chat_body(max_tokens=True), "max_tokens"),
        ("/v1/chat/completions", chat_body(top_p=0), "top_p"),
        ("/v1/chat/completions", chat_body(seed=1.5), "seed"),
        ("/v1/chat/completions", chat_body(stop=[""]), "stop"),
        ("/v1/chat/completions", chat_body(stream="yes"), "stream"),
        ("/v1/chat/completions", chat_body(stream_options={"include_usage": True}), "stream_options"),
        ("/v1/chat/completions", chat_body(n=2), "n"),
        ("/v1/chat/completions", chat_body(presence_penalty=0.5), "presence_penalty"),
        ("/v1/chat/completions", chat_body(logprobs=True), "logprobs"),
        ("/v1/chat/completions", chat_body(frobnicate=1), "frobnicate"),
        ("/v1/chat/completions", chat_body(tools="get_weather"), "tools"),
        ("/v1/chat/completions", chat_body(tool_choice="required"), "tool_choice"),
        ("/v1/chat/completions", chat_body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "other"}}), "tool_choice"),
        ("/v1/chat/completions", chat_body(response_format={"type": "xml"}), "response_format"),
        ("/v1/chat/completions", chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "response_format"),
        ("/v1/chat/completions", chat_body(max_tokens=4000), None),  # beyond the context: context_length_exceeded
        ("/v1/completions", {"model": MODEL, "prompt": 5}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": ["one", "two"]}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "echo": True}, "echo"),
    ],
)
def test_malformed_request_is_400_with_an_openai_error(http, path, body, param):
    r = http.post(path, content=body) if isinstance(body, bytes) else http.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"] and err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_unknown_routes_and_methods_get_openai_errors(http, server):
    for r, status in ((http.get("/v1/nothing"), 404), (http.get("/v1/chat/completions"), 405)):
        assert r.status_code == status and r.json()["error"]["message"]
    assert http.get("/health").json()["status"] == "ok"


def paced(session, monkeypatch, seconds_per_piece=0.02):
    """Slows ``session``'s streams so a generation holds its slot for as long as a test needs
    (1500 tokens take over 30 s), however fast the machine decodes."""
    real = session.generate_stream

    def generate_stream(*args, **kwargs):
        inner = real(*args, **kwargs)
        try:
            for piece in inner:
                yield piece
                time.sleep(seconds_per_piece)
        finally:
            inner.close()

    monkeypatch.setattr(session, "generate_stream", generate_stream)


def test_queue_full_is_429_with_retry_after_and_disconnect_cancels(session, monkeypatch):
    paced(session, monkeypatch)
    with BackgroundServer(session, model_id=MODEL, queue_size=0) as tiny, httpx.Client(base_url=tiny.url, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=chat_body(stream=True, **LONG)) as running:
            assert running.status_code == 200
            first = next(running.iter_lines())
            assert '"error"' not in first, first  # a generation that failed at once would free the slot
            wait_for(lambda: tiny.status["running"] == 1)  # it is generating: the one slot is taken
            busy = c.post("/v1/chat/completions", json=chat_body(max_tokens=2))
            assert busy.status_code == 429 and int(busy.headers["Retry-After"]) >= 1
            assert busy.json()["error"]["code"] == "queue_full"
        # leaving the block hangs up mid-stream
        wait_for(lambda: tiny.status["cancelled"] == 1)
        stats = session.runner.last_stats
        assert stats.stop_reason == "cancelled" and stats.generated_tokens < LONG["max_tokens"]
        assert tiny.status["rejected"] == 1 and tiny.status["running"] == 0
        assert c.post("/v1/chat/completions", json=chat_body(max_tokens=2)).status_code == 200  # the slot is free again


def test_a_client_that_gives_up_waiting_cancels_its_generation(server, session):
    before = server.status["cancelled"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=chat_body(**LONG), timeout=httpx.Timeout(30, read=0.5))
    wait_for(lambda: server.status["cancelled"] == before + 1)
    assert session.runner.last_stats.stop_reason == "cancelled"


# --- edgesdk's own clients and command line -----------------------------------------------------


def test_hybrid_openai_compatible_client(server, session):
    """One device serving another on a LAN: the hybrid tier's cloud client against this server."""
    from edgesdk.hybrid import OpenAICompatible

    cloud = OpenAICompatible(server.url, MODEL, timeout_s=60)
    reply = cloud.chat(CHAT, max_tokens=8, temperature=0)
    stats = session.runner.last_stats
    assert (reply.tokens_in, reply.tokens_out, reply.model) == (stats.prompt_tokens, stats.generated_tokens, MODEL)
    assert "".join(cloud.chat_stream(CHAT, max_tokens=8, temperature=0)) == reply.text
    assert reply.text == direct(session, CHAT, max_tokens=8)


def test_import_needs_no_starlette_and_a_missing_one_names_the_extra():
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "import edgesdk, edgesdk.cli, edgesdk.errors, edgesdk.serve\n"
        "edgesdk.cli.build_parser().parse_args(['serve', 'm.gguf', '--adapter', 'a=b.gguf'])\n"
        "assert 'uvicorn' not in sys.modules\n"
        "try:\n    edgesdk.serve.create_app\n"
        "except edgesdk.errors.MissingDependencyError as e:\n    print(e.package)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "edgesdk[serve]"


def test_cli_serves_and_shuts_down_gracefully_on_sigterm(tmp_path):
    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgesdk.cli", "serve", smollm2_path(), "--port", str(port), "--model-name", MODEL, "--n-ctx", "512", "--queue", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_http_ready(f"http://127.0.0.1:{port}/health", proc, timeout=90), (tmp_path / "serve.log").read_text()
            body = chat_body(stream=True, max_tokens=48, ignore_eos=True)
            with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30) as r:
                lines = r.iter_lines()
                next(lines)
                proc.send_signal(signal.SIGTERM)  # mid-stream: the answer still completes
                rest = [line for line in lines if line]
            assert rest[-1] == "data: [DONE]"
            assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_api_key_is_required_when_set(session):
    with BackgroundServer(session, model_id=MODEL, api_key="s3cret") as keyed:
        with httpx.Client(base_url=keyed.url, timeout=30) as c:
            r = c.get("/v1/models")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/health").status_code == 200
        good = openai.OpenAI(base_url=keyed.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data][0] == MODEL


def test_default_max_tokens_shrinks_to_the_context(session):
    """A request without max_tokens gets what the context has room for; an explicit excess is a 400."""
    with BackgroundServer(session, model_id=MODEL, max_tokens=4096) as big, httpx.Client(base_url=big.url, timeout=60) as c:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "stop": ["\n", "."], "temperature": 0}
        ok = c.post("/v1/chat/completions", json=body)
        assert ok.status_code == 200, ok.text
        too_many = c.post("/v1/chat/completions", json={**body, "max_tokens": 4096})
        assert too_many.status_code == 400 and "context" in too_many.json()["error"]["message"]
