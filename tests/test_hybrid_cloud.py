"""Cloud faults on loopback: the user always gets a device answer, and the audit log says why.

The faults (down, slow, HTTP 500, malformed JSON, connection reset mid-stream) come from the
scripted loopback server in hybrid_faults.py, which serves a bounded number of requests and is
stopped by the fixture; the transport's own fault cases are in test_hybrid_http.py. The happy
path against a real serving engine is in test_hybrid_engine.py.
"""

import json

import pytest

import edgesdk
from edgesdk.hybrid import CloudError, DeviceState, OpenAICompatible, Orchestrator, Policy

from conftest import free_port, hub_path
from hybrid_faults import FaultServer, chunk, sse_body, sse_reply


@pytest.fixture(scope="module")
def device():
    return edgesdk.Session(hub_path("smollm2-135m"))


@pytest.fixture
def fault():
    servers = []

    def make(mode, **kw):
        servers.append(FaultServer(mode, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _orch(device, url, tmp_path, **policy):
    cloud = OpenAICompatible(url, model="m", timeout_s=0.5, retries=1, backoff_s=0.01)
    pol = Policy(privacy="strict", **policy)
    return Orchestrator(device, cloud, pol, audit_log=tmp_path / "audit.jsonl", max_tokens=12, state_fn=lambda: DeviceState(battery_percent=5, on_battery=True))


@pytest.mark.parametrize("mode,kind", [("down", "connection"), ("slow", "timeout"), ("500", "http"), ("malformed", "malformed")])
def test_cloud_fault_falls_back_to_device(device, fault, tmp_path, mode, kind):
    url = f"http://127.0.0.1:{free_port()}" if mode == "down" else fault(mode).url
    o = _orch(device, url, tmp_path, min_battery_percent=20)
    ans = o.generate("Name one planet.")
    assert ans.route == "device" and ans.text.strip()
    assert any(f"cloud {kind}" in r for r in ans.reasons), ans.reasons
    rec = o.audit.records()[-1]
    assert rec["route"] == "device" and any(f"cloud {kind}" in r for r in rec["reasons"])
    assert rec["sent"] == "Name one planet." and len(rec["sent_sha256"]) == 64


def test_retries_are_bounded_and_breaker_opens(device, fault, tmp_path):
    srv = fault("500", max_requests=20)
    o = _orch(device, srv.url, tmp_path, min_battery_percent=20)
    for _ in range(3):
        o.generate("Hi")
    assert len(srv.requests) == 6  # 3 calls x (1 try + 1 retry), then the breaker is open
    ans = o.generate("Hi")
    assert len(srv.requests) == 6 and "circuit breaker open" in " ".join(ans.reasons)


def test_stream_reset_midway_still_answers_on_device(device, fault, tmp_path):
    srv = fault("reset")
    o = _orch(device, srv.url, tmp_path, min_battery_percent=20)
    stream = o.generate_stream("Name one planet.")
    text = "".join(stream)
    assert text.startswith("Partial cloud ") and "[cloud connection lost; answering on the device]" in text
    assert stream.answer.route == "device" and any("cloud connection" in r for r in stream.answer.reasons)
    assert o.audit.records()[-1]["route"] == "device"


def test_private_request_never_reaches_the_cloud(device, fault, tmp_path):
    srv = fault("500")
    o = _orch(device, srv.url, tmp_path, min_battery_percent=20)
    ans = o.generate("Email anna@example.com the card 4111 1111 1111 1111")
    assert ans.route == "device" and "contains private data: card, email" in ans.reasons
    assert ans.escalate().reasons[0] == "escalation refused"
    assert srv.requests == []
    assert all(r["sent"] is None for r in o.audit.records())


def test_redact_mode_sends_placeholders_only(device, fault, tmp_path):
    srv = fault("500")
    o = Orchestrator(
        device,
        OpenAICompatible(srv.url, model="m", timeout_s=0.5, retries=0),
        Policy(privacy="redact", min_battery_percent=20),
        audit_log=tmp_path / "a.jsonl",
        max_tokens=8,
        state_fn=lambda: DeviceState(5, True),
    )
    o.generate("Write to anna@example.com about 10.0.0.7")
    body = json.dumps(srv.requests)
    assert "anna@example.com" not in body and "10.0.0.7" not in body and "[EMAIL_1]" in body and "[IP_1]" in body
    assert o.audit.records()[-1]["sent"] == "Write to [EMAIL_1] about [IP_1]"


def test_offline_and_blocked(device, tmp_path):
    from edgesdk.hybrid import Guardrails

    o = Orchestrator(device, None, Policy(), Guardrails(blocked_topics=("weapons",)), audit_log=tmp_path / "a.jsonl", max_tokens=8)
    ans = o.generate("Say hello.")
    assert ans.route == "device" and "no cloud configured" in ans.reasons
    blocked = o.generate("how to build weapons")
    assert blocked.route == "blocked" and o.audit.records()[-1]["route"] == "blocked"
    with pytest.raises(edgesdk.EdgeSDKError):
        o.generate("   ")


def test_api_key_from_env_never_logged(monkeypatch, caplog, fault):
    srv = fault("500")
    c = OpenAICompatible(srv.url, model="m", api_key_env="EDGE_TEST_KEY", timeout_s=0.5, retries=0)
    with pytest.raises(CloudError, match="EDGE_TEST_KEY"):
        c.chat([{"role": "user", "content": "x"}])
    monkeypatch.setenv("EDGE_TEST_KEY", "sk-secret-123")
    with pytest.raises(CloudError) as ei:
        c.chat([{"role": "user", "content": "x"}])
    assert "sk-secret-123" not in str(ei.value) and "sk-secret-123" not in caplog.text
    assert "sk-secret-123" not in repr(vars(c))


def test_chat_cli_shows_where_each_answer_came_from(tmp_path):
    import subprocess
    import sys

    hub_path("smollm2-135m")
    log = tmp_path / "audit.jsonl"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgesdk.cli",
            "chat",
            "smollm2-135m",
            "--max-tokens",
            "8",
            "--audit-log",
            str(log),
            "--cloud",
            f"http://127.0.0.1:{free_port()}",
        ],
        input="Say hi\nmail me at a@b.io\n/cloud\n/quit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "[device] default: on the device" in p.stderr
    assert "[device] contains private data: email" in p.stderr
    assert "[device] escalation refused" in p.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["route"] for r in records] == ["device", "device", "device"] and all(r["sent"] is None for r in records)


def _cloud_first(device, url, tmp_path, **policy):
    """An orchestrator whose device is on low battery, so every allowed request goes to the cloud first."""
    cloud = OpenAICompatible(url, model="m", timeout_s=2, retries=0)
    return Orchestrator(
        device,
        cloud,
        Policy(min_battery_percent=20, **policy),
        audit_log=tmp_path / "a.jsonl",
        max_tokens=12,
        state_fn=lambda: DeviceState(battery_percent=5, on_battery=True),
    )


def test_blocking_and_streaming_route_charge_and_explain_alike(device, fault, tmp_path):
    usage = {"prompt_tokens": 10, "completion_tokens": 20}
    body = sse_body(chunk("Hello, "), chunk("world", "stop"), {"choices": [], "usage": usage}, "data: [DONE]\n\n")
    srv = fault(sse_reply(body))
    o = _cloud_first(device, srv.url, tmp_path, privacy="allow", price_in_per_1k=1.0, price_out_per_1k=1.0)
    ans = o.generate("Name one planet.")
    assert (ans.route, ans.text) == ("cloud", "Hello, world")
    assert o._spent == pytest.approx(0.030)  # the server's token counts, not an estimate
    stream = o.generate_stream("Name one planet.")
    assert "".join(stream) == "Hello, world"
    assert (stream.answer.route, stream.answer.text, stream.answer.reasons) == (ans.route, ans.text, ans.reasons)
    assert o._spent == pytest.approx(0.060)
    assert [r["route"] for r in o.audit.records()] == ["cloud", "cloud"]


def test_cost_is_estimated_when_the_server_reports_no_usage(device, fault, tmp_path):
    srv = fault(sse_reply(sse_body(chunk("Hello, world", "stop"))))
    o = _cloud_first(device, srv.url, tmp_path, privacy="allow", price_in_per_1k=1.0, price_out_per_1k=1.0)
    assert o.generate("Name one planet.").route == "cloud"
    assert o._spent == pytest.approx((len("Name one planet.") // 4 + 1 + len("Hello, world") // 4 + 1) / 1000)


def test_placeholder_split_across_stream_pieces_is_restored(device, fault, tmp_path):
    srv = fault(sse_reply(sse_body(chunk("Sent to [EMA"), chunk("IL_1"), chunk("] today.", "stop"))))
    o = _cloud_first(device, srv.url, tmp_path, privacy="redact")
    stream = o.generate_stream("Write to anna@example.com")
    pieces = list(stream)
    assert "".join(pieces) == stream.answer.text == "Sent to anna@example.com today."
    assert "anna@example.com" not in json.dumps(srv.requests)


def test_stream_without_done_or_finish_reason_falls_back_to_device(device, fault, tmp_path):
    srv = fault(sse_reply(sse_body(chunk("Half an ans"))))
    o = _cloud_first(device, srv.url, tmp_path, privacy="allow")
    ans = o.generate("Name one planet.")
    assert ans.route == "device" and ans.text.strip() and "Half an ans" not in ans.text
    assert any("ended before the answer was complete" in r for r in ans.reasons), ans.reasons
