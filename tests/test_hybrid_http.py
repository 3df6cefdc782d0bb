"""The cloud transport against the scripted loopback server (hybrid_faults.py): SSE oddities of
real servers, Retry-After, deadlines, the half-open circuit breaker under threads, keep-alive,
proxies from the environment, base-URL query strings, TLS, and errors that say what went wrong.
No model is loaded here; the orchestrator's side is in test_hybrid_cloud.py."""

import email.utils
import itertools
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesdk.hybrid import CircuitBreaker, CloudError, OpenAICompatible, V2Client
from edgesdk.hybrid._http import SSEEvent, iter_lines, parse_retry_after, parse_sse

from conftest import free_port
from hybrid_faults import FaultServer, chunk, completion, held, json_reply, response, sequence, sse_body, sse_reply

HELLO = (chunk("Hello"), chunk(", "), chunk("world", "stop"), "data: [DONE]\n\n")
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def serve():
    servers = []

    def make(reply, **kw):
        servers.append(FaultServer(reply, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def client(url, **kw):
    return OpenAICompatible(url, model="m", **{"timeout_s": 2, "retries": 0, "backoff_s": 0, **kw})


# -- the SSE reader -------------------------------------------------------------------------------

SPEC_STREAM = (
    "\ufeff: a comment first\r\n"
    "retry: 3000\r\n"
    "id: 7\n"
    "event: message\n"
    'data: {"a":\n'
    "data:1}\r\n"
    "\r"
    "event: ping\n"
    "data\n"
    "\n"
    ":keep-alive\n\n"
    "event: only-a-name\n\n"
    "data: last, without its blank line"
)


def test_sse_parser_follows_the_format():
    events = list(parse_sse(iter_lines([SPEC_STREAM.encode()])))
    assert events == [
        SSEEvent('{"a":\n1}', "message", "7"),
        SSEEvent("", "ping", "7"),
        SSEEvent("last, without its blank line", "message", "7"),
    ]


def test_line_splitting_keeps_unicode_line_separators():
    # str.splitlines() would cut here; JSON may carry U+2028 unescaped.
    text = 'data: {"t": "a\u2028b\u0085c"}\n\n'
    assert [e.data for e in parse_sse(iter_lines([text.encode()]))] == ['{"t": "a\u2028b\u0085c"}']


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(SPEC_STREAM.encode())), max_size=12))
def test_sse_events_do_not_depend_on_how_bytes_arrive(cuts):
    raw = SPEC_STREAM.encode()
    bounds = [0, *sorted(cuts), len(raw)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(parse_sse(iter_lines(pieces))) == list(parse_sse(iter_lines([raw])))


# -- SSE against the loopback server ---------------------------------------------------------------

STREAMS_THAT_WORK = {
    "azure_opens_with_empty_choices": sse_body({"choices": [], "prompt_filter_results": [{"prompt_index": 0}]}, *HELLO),
    "no_done_after_finish_reason": sse_body(*HELLO[:3]),
    "keepalive_comments": sse_body(": ping\n\n", HELLO[0], ":\n\n", *HELLO[1:]),
    "multi_line_data": sse_body('data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "Hello, world"}}]}\n\n', chunk(None, "stop"), "data: [DONE]\n\n"),
    "crlf_line_endings": sse_body(*HELLO, eol="\r\n"),
    "cr_line_endings": sse_body(*HELLO, eol="\r"),
    "event_and_id_fields": sse_body("id: 1\nevent: message\n", HELLO[0], "event: ping\ndata: not json\n\n", "retry: 10\nid: 2\n", *HELLO[1:]),
    "role_only_first_delta": sse_body({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, *HELLO),
    "one_byte_at_a_time": None,  # HELLO with CRLFs, sent byte by byte so every boundary is split
    "json_answer_to_a_stream_request": None,
}


@pytest.mark.parametrize("case", sorted(STREAMS_THAT_WORK))
def test_stream_oddities_are_read(serve, case):
    if case == "one_byte_at_a_time":
        reply = sse_reply(sse_body(*HELLO, eol="\r\n"), piece=1)
    elif case == "json_answer_to_a_stream_request":
        reply = json_reply(200, completion())
    else:
        reply = sse_reply(STREAMS_THAT_WORK[case])
    stream = client(serve(reply).url).chat_stream(MESSAGES)
    assert "".join(stream) == "Hello, world"
    assert stream.reply.text == "Hello, world" and stream.reply.model == "m"


def test_stream_usage_is_reported(serve):
    usage = {"prompt_tokens": 5, "completion_tokens": 3}
    srv = serve(sse_reply(sse_body(*HELLO[:3], {"choices": [], "usage": usage}, HELLO[3])))
    stream = client(srv.url).chat_stream(MESSAGES)
    list(stream)
    assert (stream.reply.tokens_in, stream.reply.tokens_out) == (5, 3)
    assert srv.seen[0].headers["accept"] == "text/event-stream" and srv.requests[0]["stream"] is True


STREAMS_THAT_FAIL = {
    "ends_without_done_or_finish_reason": (sse_reply(sse_body(chunk("Hel"))), "connection", "ended before the answer was complete"),
    "error_event": (sse_reply(sse_body(HELLO[0], 'event: error\ndata: {"error": {"message": "model overloaded"}}\n\n')), "http", "model overloaded"),
    "error_in_data": (sse_reply(sse_body(HELLO[0], {"error": {"message": "context length exceeded"}})), "http", "context length exceeded"),
    "not_json": (sse_reply(sse_body("data: {oops\n\n")), "malformed", "stream event is not JSON"),
    "choices_not_a_list": (sse_reply(sse_body({"choices": {"delta": "x"}})), "malformed", "not a list"),
    "html_page": (sse_reply(b"<html><body>Gateway login</body></html>", content_type="text/html"), "malformed", "expected an event stream"),
    "reset_midway": (sse_reply(sse_body(HELLO[0]), reset=True), "connection", "reset the connection"),
}


@pytest.mark.parametrize("case", sorted(STREAMS_THAT_FAIL))
def test_broken_streams_raise_in_words(serve, case):
    reply, kind, words = STREAMS_THAT_FAIL[case]
    c = client(serve(reply).url)
    with pytest.raises(CloudError) as ei:
        list(c.chat_stream(MESSAGES))
    assert ei.value.kind == kind and words in str(ei.value), str(ei.value)
    assert c.http.breaker._failures == 1  # a broken answer counts against the server


# -- connections, proxies, URLs --------------------------------------------------------------------


def test_connections_are_kept_alive_and_base_query_is_kept(serve):
    srv = serve(sequence(json_reply(200, completion()), json_reply(200, completion()), sse_reply(sse_body(*HELLO))))
    c = client(srv.url + "/openai/deployments/gpt-4o/?api-version=2024-06-01")
    assert c.chat(MESSAGES).text == c.chat(MESSAGES).text == "Hello, world"
    assert "".join(c.chat_stream(MESSAGES)) == "Hello, world"
    assert srv.targets == ["/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01"] * 3
    assert srv.connections == 1  # one pooled keep-alive connection served all three
    assert c.http.url == srv.url + "/openai/deployments/gpt-4o"  # what audits show: no query (it may hold a key)


def test_bare_host_gets_v1_and_v2_keeps_query(serve):
    srv = serve(sequence(json_reply(200, completion()), json_reply(200, {"name": "x"})))
    client(srv.url).chat(MESSAGES)
    V2Client(srv.url + "?tenant=a", timeout_s=2, retries=0).model_metadata("x")
    assert srv.targets == ["/v1/chat/completions", "/v2/models/x?tenant=a"]


def test_proxy_comes_from_the_environment(serve, monkeypatch):
    srv = serve(json_reply(200, completion()))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", srv.url)
    assert client("http://cloud.example.invalid:8080").chat(MESSAGES).text == "Hello, world"
    assert srv.targets == ["http://cloud.example.invalid:8080/v1/chat/completions"]  # absolute form: sent via the proxy


# -- Retry-After and the deadline ------------------------------------------------------------------


def test_parse_retry_after_forms():
    now = 1_700_000_000.0
    assert parse_retry_after("3", lambda: now) == 3.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), lambda: now) == pytest.approx(90)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), lambda: now) == 0.0
    assert parse_retry_after("-4", lambda: now) == 0.0
    for junk in (None, "", "soon", "inf", "nan"):
        assert parse_retry_after(junk, lambda: now) is None


@pytest.mark.parametrize("status,header", [(429, "1"), (503, "date")])
def test_retry_after_is_honoured(serve, status, header):
    value = email.utils.formatdate(time.time() + 2, usegmt=True) if header == "date" else header
    srv = serve(sequence(json_reply(status, {"error": {"message": "slow down"}}, {"Retry-After": value}), json_reply(200, completion())))
    t0 = time.monotonic()
    assert client(srv.url, retries=1).chat(MESSAGES).text == "Hello, world"
    assert time.monotonic() - t0 >= 0.9 and len(srv.seen) == 2  # backoff_s=0: only the server's ask made us wait


def test_retry_after_over_the_cap_ends_the_request_at_once(serve):
    srv = serve(json_reply(429, {"error": {"message": "quota exceeded"}}, {"Retry-After": "120"}))
    t0 = time.monotonic()
    with pytest.raises(CloudError) as ei:
        client(srv.url, retries=3, max_retry_after_s=5).chat(MESSAGES)
    assert time.monotonic() - t0 < 1 and len(srv.seen) == 1
    msg = str(ei.value)
    assert ei.value.status == 429 and "quota exceeded" in msg and "retry after 120 s" in msg and "max_retry_after_s=5" in msg


def test_retry_after_counts_against_the_deadline(serve):
    srv = serve(json_reply(503, {"error": "warming up"}, {"Retry-After": "3"}))
    t0 = time.monotonic()
    with pytest.raises(CloudError, match="would pass the 1 s deadline"):
        client(srv.url, retries=3, deadline_s=1).chat(MESSAGES)
    assert time.monotonic() - t0 < 1 and len(srv.seen) == 1


def test_deadline_bounds_all_attempts_together(serve):
    srv = serve("slow")
    t0 = time.monotonic()
    with pytest.raises(CloudError) as ei:
        client(srv.url, timeout_s=5, retries=5, deadline_s=0.6).chat(MESSAGES)
    assert ei.value.kind == "timeout" and time.monotonic() - t0 < 1.5


def test_client_error_is_final_and_keeps_the_breaker_closed(serve):
    srv = serve(json_reply(400, {"error": {"message": "max_tokens is too large: 99999"}}))
    c = client(srv.url, retries=3)
    for _ in range(4):
        with pytest.raises(CloudError) as ei:
            c.chat(MESSAGES)
    assert ei.value.kind == "http" and "HTTP 400 Bad Request" in str(ei.value) and "max_tokens is too large: 99999" in str(ei.value)
    assert len(srv.seen) == 4 and c.http.breaker.state == "closed" and c.available


# -- errors in words -------------------------------------------------------------------------------


def test_refused_connection():
    with pytest.raises(CloudError, match="refused the connection") as ei:
        client(f"http://127.0.0.1:{free_port()}").chat(MESSAGES)
    assert ei.value.kind == "connection"


def test_read_timeout_names_the_phase(serve):
    with pytest.raises(CloudError, match=r"sent nothing for 0.3 s \(read timeout\)") as ei:
        client(serve("slow").url, timeout_s=0.3).chat(MESSAGES)
    assert ei.value.kind == "timeout"


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full accept queue")
def test_connect_timeout_names_the_phase():
    # A listener whose accept queue is full: Linux drops further SYNs, so connecting hangs.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    fillers = []
    try:
        for _ in range(3):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(sock.getsockname())
            fillers.append(f)
        timeout = httpx.Timeout(5, connect=0.3)
        with pytest.raises(CloudError, match=r"took over 0.3 s \(connect timeout\)"):
            client(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout_s=timeout).chat(MESSAGES)
    finally:
        for f in fillers:
            f.close()
        sock.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl not on PATH to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            d / "key.pem",
            "-out",
            d / "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx, str(d / "cert.pem")


def test_tls_is_verified(serve, self_signed, caplog):
    ctx, cert = self_signed
    srv = serve(json_reply(200, completion()), tls=ctx)
    with pytest.raises(CloudError, match="certificate of 127.0.0.1:.* not trusted") as ei:
        client(srv.url, retries=2).chat(MESSAGES)
    assert ei.value.kind == "tls"
    assert client(srv.url, ca_file=cert).chat(MESSAGES).text == "Hello, world"
    assert client(srv.url, verify_tls=False).chat(MESSAGES).text == "Hello, world"
    assert "verification is OFF" in caplog.text


# -- the circuit breaker under threads ---------------------------------------------------------------


def test_half_open_admits_exactly_one_trial():
    now = [0.0]
    b = CircuitBreaker(threshold=1, cooldown_s=10, clock=lambda: now[0])
    b.failure()
    now[0] = 10.0
    start = threading.Barrier(16)
    admitted, refused = [], []

    def call():
        start.wait()
        try:
            b.acquire("srv")
            admitted.append(1)
        except CloudError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 1 and len(refused) == 15
    assert all("trial request is in flight" in r for r in refused)
    b.failure()  # the trial failed: open again for a whole cooldown
    assert b.state == "open" and "next trial in 10 s" in b.refusal
    now[0] = 20.0
    b.acquire()
    b.success()
    assert b.state == "closed" and b.allow()


def test_concurrent_calls_during_the_trial_fail_fast(serve):
    srv = serve(sequence(json_reply(500, {"error": "down"}), held(json_reply(200, completion()))), max_requests=20)
    c = client(srv.url, breaker=CircuitBreaker(threshold=1, cooldown_s=0.2))
    with pytest.raises(CloudError):
        c.chat(MESSAGES)
    assert c.http.breaker.state == "open" and not c.available
    time.sleep(0.25)
    trial = {}
    t = threading.Thread(target=lambda: trial.update(reply=c.chat(MESSAGES)))
    t.start()
    for _ in range(500):  # until the trial is parked at the server
        if len(srv.seen) == 2:
            break
        time.sleep(0.01)
    errors = []

    def other():
        t0 = time.monotonic()
        try:
            c.chat(MESSAGES)
        except CloudError as exc:
            errors.append((exc.kind, str(exc), time.monotonic() - t0))

    others = [threading.Thread(target=other) for _ in range(6)]
    for o in others:
        o.start()
    for o in others:
        o.join()
    assert len(errors) == 6 and all(k == "circuit_open" and "trial request is in flight" in m and dt < 0.5 for k, m, dt in errors)
    assert len(srv.seen) == 2 and not c.available
    srv.gate.set()
    t.join(5)
    assert trial["reply"].text == "Hello, world" and c.http.breaker.state == "closed"
    assert c.chat(MESSAGES).text == "Hello, world" and len(srv.seen) == 3


def test_abandoned_trial_stream_frees_the_slot(serve):
    srv = serve(sequence(json_reply(500, {"error": "down"}), sse_reply(sse_body(*HELLO))))
    c = client(srv.url, breaker=CircuitBreaker(threshold=1, cooldown_s=0))
    with pytest.raises(CloudError):
        c.chat(MESSAGES)
    stream = c.chat_stream(MESSAGES)
    assert next(stream) == "Hello" and not c.available  # the trial is in flight
    stream.close()
    assert c.http.breaker.state == "half-open" and c.available  # hung up: no verdict, the next caller may try


def test_api_key_error_is_not_held_against_the_server(serve, monkeypatch):
    monkeypatch.delenv("EDGE_TEST_KEY", raising=False)
    c = OpenAICompatible(serve("ok").url, model="m", api_key_env="EDGE_TEST_KEY", breaker=CircuitBreaker(threshold=1))
    with pytest.raises(CloudError, match="EDGE_TEST_KEY"):
        c.chat(MESSAGES)
    assert c.available
    monkeypatch.setenv("EDGE_TEST_KEY", "sk-test")
    assert c.chat(MESSAGES).text == "Hello, world"


def test_status_error_reads_plain_text_bodies(serve):
    srv = serve(lambda s, seen, conn: conn.sendall(response(503, b"  upstream\n  connect error  ")) or False)
    with pytest.raises(CloudError, match=r"HTTP 503 Service Unavailable from 127.0.0.1:\d+: upstream connect error$"):
        client(srv.url).chat(MESSAGES)
