"""Hybrid routing policy: detectors, redaction, guardrails, circuit breaker — private data never leaves in strict mode."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesdk.hybrid import CircuitBreaker, Guardrails, Policy, RegexDetector, find_private, redact
from edgesdk.hybrid._privacy import iban_ok, luhn_ok

EMAILS = st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?@[a-z]{2,8}\.(com|org|de|io)", fullmatch=True)
CARDS = st.sampled_from(["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004"])
IBANS = st.sampled_from(["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"])
IPS = st.sampled_from(["10.0.0.1", "192.168.178.20", "2001:db8::8a2e:370:7334", "fe80::1"])
PHONES = st.sampled_from(["+1 415 555 2671", "(030) 1234 5678", "+44 20 7946 0958", "555-123-4567"])
PRIVATE = st.one_of(EMAILS, CARDS, IBANS, IPS, PHONES)
FILLER = st.text(alphabet=st.sampled_from(list("abcdefghij klmnop,.!?")), max_size=30)


def test_builtin_detectors_and_checksums():
    text = "anna@example.com, 4111 1111 1111 1111, 4111 1111 1111 1112, DE89 3704 0044 0532 0130 00, DE00 3704 0044 0532 0130 00, 10.1.2.3, 999.1.1.1"
    found = {s.value: s for s in find_private(text)}
    assert found["anna@example.com"].kind == "email" and found["10.1.2.3"].kind == "ip"
    assert (found["4111 1111 1111 1111"].kind, found["4111 1111 1111 1111"].certain) == ("card", True)
    assert (found["DE89 3704 0044 0532 0130 00"].kind, found["DE89 3704 0044 0532 0130 00"].certain) == ("iban", True)
    # Checksum failures are near-misses: kept private (fail closed), but marked unsure.
    assert not found["4111 1111 1111 1112"].certain and not found["DE00 3704 0044 0532 0130 00"].certain
    assert "999.1.1.1" not in found
    # Two card numbers with only a space between are one 32-digit run: it is kept private whole,
    # because matching the first card alone would send the second.
    run = "4111 1111 1111 1111 4111 1111 1111 1112"
    assert [(s.value, s.certain) for s in find_private(run)] == [(run, False)]
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")
    assert find_private("meeting at 10, room 4, order 12345") == []


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.tuples(FILLER, PRIVATE), min_size=1, max_size=4), tail=FILLER)
def test_redaction_hides_every_item_and_round_trips(parts, tail):
    text = "".join(f"{f} {p} " for f, p in parts) + tail
    red = redact(text, find_private(text))
    for _, p in parts:
        assert p not in red.text, f"{p!r} leaked into {red.text!r}"
    assert red.restore(red.text) == text


class _NoCloud:
    available = True


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.tuples(FILLER, PRIVATE), min_size=1, max_size=3))
def test_strict_policy_never_allows_private_text_out(parts):
    from edgesdk.hybrid import Orchestrator

    class Dev:
        def generate(self, *a, **k):
            raise AssertionError("planning must not run the model")

    text = " ".join(f"{f} {p}" for f, p in parts)
    o = Orchestrator(Dev(), _NoCloud(), Policy(privacy="strict"))
    blocked, allowed, reasons, red, _ = o._plan(text, False, 16, force_cloud=True)
    assert blocked is None and not allowed and any("private data" in r for r in reasons)
    o2 = Orchestrator(Dev(), _NoCloud(), Policy(privacy="redact"))
    _, allowed2, _, red2, _ = o2._plan(text, False, 16, force_cloud=False)
    assert allowed2 and all(p not in red2.text for _, p in parts)
    _, allowed3, reasons3, _, _ = o2._plan(text, True, 16, force_cloud=False)  # explicit private=True wins
    assert not allowed3 and "request marked private" in reasons3


def test_custom_detector_and_guardrails():
    det = RegexDetector("patient_id", r"PID-\d{6}")
    assert [s.kind for s in find_private("see PID-123456", (det,))] == ["patient_id"]
    g = Guardrails(blocked_topics=("explosives",), blocked_patterns=(r"rm -rf /",), max_input_chars=50, max_output_chars=20)
    assert "blocked topic" in g.check_input("how to make Explosives at home")
    assert "blocked pattern" in g.check_input("please run rm -rf / now")
    assert "over the 50 limit" in g.check_input("x" * 51)
    assert g.check_input("what is an NPU?") is None
    assert "over the 20 limit" in g.check_output("y" * 21)
    assert g.is_refusal("I'm sorry, but I can't help with that.") and not g.is_refusal("Sure: an NPU is...")


def test_policy_validation():
    with pytest.raises(ValueError):
        Policy(privacy="loose")
    with pytest.raises(ValueError):
        Policy(min_confidence=1.5)
    with pytest.raises(ValueError):
        Policy(max_latency_s=-1)
    assert Policy(price_in_per_1k=1.0, price_out_per_1k=2.0).cost(500, 250) == pytest.approx(1.0)


def test_circuit_breaker_opens_and_half_opens():
    now = [0.0]
    b = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    assert b.allow()
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    now[0] = 10.0
    assert b.state == "half-open" and b.allow()
    b.success()
    assert b.state == "closed"
