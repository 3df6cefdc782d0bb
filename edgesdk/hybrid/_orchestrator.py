"""The hybrid orchestrator: answer on the device by default, escalate to the cloud only when the
policy allows it and the device answer is not good enough (or the device should not do the work)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Callable, Generator, Iterable, Iterator

import attrs
import numpy as np

from .._errors import EdgeSDKError
from ._audit import AuditLog, sha256_text
from ._cloud import CloudReply
from ._http import CloudError
from ._policy import Guardrails, Policy
from ._privacy import Redaction, find_private, redact

__all__ = ["Orchestrator", "Answer", "AnswerStream", "DeviceState", "read_device_state"]

log = logging.getLogger("edgesdk.hybrid")

BLOCKED_TEXT = "This request was blocked on the device by a guardrail."


@attrs.frozen
class DeviceState:
    battery_percent: float | None = None
    on_battery: bool | None = None
    temperature_c: float | None = None


def read_device_state() -> DeviceState:
    """Battery and temperature where the OS exposes them (psutil); absent sensors give None."""
    try:
        import psutil
    except ImportError:
        return DeviceState()
    battery = temp = None
    try:
        battery = psutil.sensors_battery()
    except Exception:
        battery = None
    try:
        temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        readings = [t.current for group in temps.values() for t in group if t.current is not None]
        temp = max(readings) if readings else None
    except Exception:
        temp = None
    return DeviceState(battery.percent if battery else None, (not battery.power_plugged) if battery else None, temp)


@attrs.frozen
class Answer:
    """What the user gets: the text, where it came from, and why."""

    text: str
    route: str  # "device" | "cloud" | "blocked"
    reasons: tuple[str, ...]
    confidence: float | None = None
    latency_s: float = 0.0
    request_id: str = ""
    _orchestrator: "Orchestrator | None" = attrs.field(default=None, eq=False, repr=False, alias="orchestrator")
    _request: tuple = attrs.field(default=(), eq=False, repr=False, alias="request")

    def escalate(self) -> "Answer":
        """The "send to cloud" button: ask the cloud, still subject to the privacy policy and guardrails."""
        if self._orchestrator is None:
            raise EdgeSDKError("this answer has no orchestrator to escalate with")
        return self._orchestrator._answer(*self._request, force_cloud=True, previous=self)


class Orchestrator:
    """Routes each request between ``device`` (an edgesdk Session that generates) and ``cloud``
    (an :class:`OpenAICompatible` client, or None), under ``policy`` and ``guardrails``; every
    decision is appended to ``audit_log`` (a path or :class:`AuditLog`) when given."""

    def __init__(
        self,
        device,
        cloud=None,
        policy: Policy | None = None,
        guardrails: Guardrails | None = None,
        audit_log=None,
        *,
        max_tokens: int = 256,
        state_fn: Callable[[], DeviceState] = read_device_state,
    ):
        if not hasattr(device, "generate"):
            raise TypeError("device must be an edgesdk.Session of a generative model")
        self.device, self.cloud = device, cloud
        self.policy = policy or Policy()
        self.guardrails = guardrails or Guardrails()
        self.audit = audit_log if isinstance(audit_log, AuditLog) or audit_log is None else AuditLog(audit_log)
        self.max_tokens = max_tokens
        self._state_fn = state_fn
        self._spent = 0.0
        self._sec_per_token: float | None = None  # measured device decode speed, for latency budgets
        self._lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------------

    def generate(self, prompt: str, *, private: bool = False, max_tokens: int | None = None) -> Answer:
        return self._answer(prompt, bool(private), max_tokens or self.max_tokens)

    def generate_stream(self, prompt: str, *, private: bool = False, max_tokens: int | None = None) -> "AnswerStream":
        """Pieces of the answer as they arrive from whichever route is taken; ``.answer`` when done."""
        return AnswerStream(self, prompt, bool(private), max_tokens or self.max_tokens)

    # -- decision --------------------------------------------------------------------------------

    def _plan(self, prompt: str, private: bool, max_tokens: int, force_cloud: bool):
        """(blocked reason | None, cloud allowed?, reasons, redaction | None, cloud first?)."""
        reasons: list[str] = []
        blocked = self.guardrails.check_input(prompt)
        if blocked:
            return blocked, False, [f"blocked by guardrail: {blocked}"], None, False
        spans = find_private(prompt, self.policy.detectors)
        kinds = sorted({s.kind for s in spans})
        red = None
        allowed = True
        if self.cloud is None:
            allowed = False
            reasons.append("no cloud configured")
        elif not self.policy.allow_cloud:
            allowed = False
            reasons.append("policy forbids the cloud")
        elif not self.cloud.available:
            allowed = False
            reasons.append(f"cloud unavailable: {self.cloud.unavailable_reason or 'circuit breaker open after repeated failures'}")
        if private or kinds:
            what = "marked private" if private and not spans else "contains private data: " + spans.describe()
            if private or self.policy.privacy == "strict":
                allowed = False
                reasons.append(what if not private else "request marked private")
            elif self.policy.privacy == "redact":
                red = redact(prompt, spans)
                reasons.append(f"{what}; redacted before any cloud call")
            else:
                reasons.append(f"{what}; privacy policy 'allow'")
        if allowed:
            est_cost = self.policy.cost(_estimate_tokens(prompt), max_tokens)
            if self.policy.max_cost is not None and est_cost > self.policy.max_cost:
                allowed = False
                reasons.append(f"estimated cloud cost {est_cost:.4f} exceeds max_cost {self.policy.max_cost}")
            elif self.policy.budget is not None and self._spent + est_cost > self.policy.budget:
                allowed = False
                reasons.append(f"cloud budget {self.policy.budget} would be exceeded (spent {self._spent:.4f})")
        cloud_first = False
        if allowed:
            if force_cloud:
                cloud_first = True
                reasons.append("user asked for the cloud")
            else:
                cloud_first = self._offload_reason(reasons, max_tokens)
        return None, allowed, reasons, red, cloud_first

    def _offload_reason(self, reasons: list[str], max_tokens: int) -> bool:
        st = self._state_fn()
        p = self.policy
        if p.min_battery_percent is not None and st.on_battery and st.battery_percent is not None and st.battery_percent < p.min_battery_percent:
            reasons.append(f"battery at {st.battery_percent:.0f}% (< {p.min_battery_percent:.0f}%): offloading")
            return True
        if p.max_temperature_c is not None and st.temperature_c is not None and st.temperature_c >= p.max_temperature_c:
            reasons.append(f"device at {st.temperature_c:.0f} °C (>= {p.max_temperature_c:.0f} °C): offloading")
            return True
        if p.max_latency_s is not None and self._sec_per_token is not None:
            est = self._sec_per_token * max_tokens
            if est > p.max_latency_s:
                reasons.append(f"device would take ~{est:.1f} s (> {p.max_latency_s} s budget)")
                return True
        return False

    # -- routes ----------------------------------------------------------------------------------

    def _device_stream(self, prompt: str, max_tokens: int) -> Generator[str, None, str]:
        """Yield the device's answer pieces and return the whole text; learns the decode speed
        that latency budgets are judged by."""
        t0 = time.perf_counter()
        parts = []
        with contextlib.closing(self.device.generate_stream([{"role": "user", "content": prompt}], max_tokens=max_tokens)) as pieces:
            for piece in pieces:
                parts.append(piece)
                yield piece
        text = "".join(parts)
        self._learn_speed(time.perf_counter() - t0, text)
        return text

    def _learn_speed(self, seconds: float, text: str) -> None:
        stats = getattr(getattr(self.device, "runner", None), "last_stats", None)
        n = getattr(stats, "generated_tokens", 0) or _estimate_tokens(text)
        spt = seconds / max(n, 1)
        with self._lock:
            self._sec_per_token = spt if self._sec_per_token is None else 0.7 * self._sec_per_token + 0.3 * spt

    def confidence(self, prompt: str, answer: str) -> float | None:
        """Geometric-mean probability the device model gives its own answer's tokens (0..1)."""
        runner = getattr(self.device, "runner", None)
        llm = getattr(runner, "llm", None)
        if llm is None or not answer:
            return None
        ids = llm.prompt_ids([{"role": "user", "content": prompt}])
        ans = llm.tokenizer.encode(answer, add_bos=False)[: self.max_tokens]
        if not ans or len(ids) + len(ans) > llm.n_ctx:
            return None
        logits = self.device.run({"input_ids": np.array([ids + ans], np.int64)})["logits"][0]
        rows = logits[len(ids) - 1 : len(ids) - 1 + len(ans)].astype(np.float64)
        m = rows.max(axis=1, keepdims=True)
        logp = rows[np.arange(len(ans)), ans] - (m[:, 0] + np.log(np.exp(rows - m).sum(axis=1)))
        return float(np.exp(logp.mean()))

    def _cloud_messages(self, prompt: str, red: Redaction | None):
        return [{"role": "user", "content": red.text if red else prompt}]

    def _charge(self, prompt: str, reply: CloudReply) -> None:
        """Add a cloud answer's cost to the budget: the server's token counts, estimates without them."""
        tokens_in = reply.tokens_in or _estimate_tokens(prompt)
        tokens_out = reply.tokens_out or _estimate_tokens(reply.text)
        with self._lock:
            self._spent += self.policy.cost(tokens_in, tokens_out)

    def _answer(self, prompt: str, private: bool, max_tokens: int, force_cloud: bool = False, previous: Answer | None = None) -> Answer:
        # Blocking is the stream drained: one routing, one cost, one set of reasons for both.
        stream = AnswerStream(self, prompt, private, max_tokens, force_cloud=force_cloud, previous=previous)
        for _ in stream:
            pass
        return stream.answer

    def _weak(self, text: str, conf: float | None) -> str | None:
        if not text.strip():
            return "device answer is empty"
        if self.guardrails.is_refusal(text):
            return "device model declined to answer"
        if conf is not None and conf < self.policy.min_confidence:
            return f"device confidence {conf:.2f} < {self.policy.min_confidence:.2f}"
        return None

    def _guard_output(self, ans: Answer) -> Answer:
        why = self.guardrails.check_output(ans.text)
        if why:
            return attrs.evolve(ans, text=BLOCKED_TEXT, reasons=ans.reasons + (f"answer blocked by guardrail: {why}",))
        return ans

    def _finish(self, ans: Answer, sent) -> Answer:
        if self.audit is not None:
            body = None if sent is None else "\n".join(m["content"] for m in sent)
            self.audit.write(
                {
                    "request_id": ans.request_id,
                    "route": ans.route,
                    "reasons": list(ans.reasons),
                    "sent": body,
                    "sent_sha256": None if body is None else sha256_text(body),
                    "destination": None if sent is None else self.cloud.http.url,
                    "confidence": ans.confidence,
                    "latency_s": round(ans.latency_s, 4),
                }
            )
        log.info("request %s answered by %s: %s", ans.request_id, ans.route, "; ".join(ans.reasons))
        return ans


class AnswerStream:
    """Iterates answer pieces; ``generate`` is this stream drained. A weak device answer is
    followed by a notice and the cloud's answer; if the cloud stream breaks, a notice says so and
    the device answer stands (or follows). ``answer`` holds the final Answer when done."""

    def __init__(self, orch: Orchestrator, prompt: str, private: bool, max_tokens: int, *, force_cloud: bool = False, previous: Answer | None = None):
        if not isinstance(prompt, str) or not prompt.strip():
            raise EdgeSDKError("prompt must be a non-empty string")
        self._orch, self._args = orch, (prompt, private, max_tokens)
        self.answer: Answer | None = None
        self._it = self._run(force_cloud, previous)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self):
        self._it.close()

    def _run(self, force_cloud: bool, previous: Answer | None) -> Iterator[str]:
        o = self._orch
        prompt, private, max_tokens = request = self._args
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        blocked, allowed, reasons, red, cloud_first = o._plan(prompt, private, max_tokens, force_cloud)

        def done(text, route, sent, conf=None):
            ans = Answer(text, route, tuple(reasons), conf, time.perf_counter() - t0, rid, o, request)
            self.answer = o._finish(ans if route == "blocked" else o._guard_output(ans), sent)

        if blocked:
            yield BLOCKED_TEXT
            return done(BLOCKED_TEXT, "blocked", None)
        if force_cloud and not allowed:
            reasons.insert(0, "escalation refused")
            if previous is not None:  # the earlier answer stands, with the refusal's reasons
                self.answer = o._finish(attrs.evolve(previous, reasons=tuple(reasons), request_id=rid), None)
                yield previous.text
                return
        device_text = conf = None
        if not cloud_first:
            device_text = yield from o._device_stream(prompt, max_tokens)
            if allowed and o.policy.min_confidence > 0:
                conf = o.confidence(prompt, device_text)
            problem = o._weak(device_text, conf)
            if not (allowed and problem):
                if problem:
                    reasons.append(problem)
                return done(device_text, "device", None, conf)
            reasons.append(problem + "; escalating")
            yield f"\n[{problem}; asking the cloud]\n"
        sent = o._cloud_messages(prompt, red)
        shown = False
        try:
            with contextlib.closing(o.cloud.chat_stream(sent, max_tokens=max_tokens)) as stream:
                for piece in _restored(stream, red):
                    shown = True
                    yield piece
        except CloudError as exc:
            reasons.append(f"cloud failed ({exc}); answered on the device")
        else:
            o._charge(prompt, stream.reply)
            return done(red.restore(stream.reply.text) if red else stream.reply.text, "cloud", sent)
        if device_text is not None:
            yield "\n[cloud failed; keeping the device answer]\n"
            return done(device_text, "device", sent, conf)
        if shown:
            yield "\n[cloud connection lost; answering on the device]\n"
        done((yield from o._device_stream(prompt, max_tokens)), "device", sent)


def _estimate_tokens(text: str) -> int:
    # About 4 characters a token for BPE vocabularies; only where no tokenizer or server count exists.
    return len(text) // 4 + 1


def _restored(pieces: Iterable[str], red: Redaction | None) -> Iterator[str]:
    """``pieces`` with redaction placeholders put back. A placeholder may arrive split across
    pieces ("[EMA", "IL_1]"), so a tail that could still become one is held until it is decided."""
    if red is None or not red.mapping:
        yield from pieces
        return
    buf = ""
    for piece in pieces:
        buf += piece
        cut = len(buf) - _pending_placeholder(buf, red.mapping)
        if cut:
            yield red.restore(buf[:cut])
            buf = buf[cut:]
    if buf:
        yield red.restore(buf)


def _pending_placeholder(text: str, placeholders) -> int:
    """Length of the longest end of ``text`` that is the start, not the whole, of a placeholder."""
    return max((n for p in placeholders for n in range(min(len(p) - 1, len(text)), 0, -1) if text.endswith(p[:n])), default=0)
