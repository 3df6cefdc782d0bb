"""The hybrid orchestrator: answer on the device by default, escalate to the cloud only when the
policy allows it and the device answer is not good enough (or the device should not do the work)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable, Iterator

import attrs
import numpy as np

from .._errors import EdgeSDKError
from ._audit import AuditLog, sha256_text
from ._http import CloudError
from ._policy import Guardrails, Policy
from ._privacy import Redaction, find_private, redact

__all__ = ["Orchestrator", "Answer", "DeviceState", "read_device_state"]

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

    def __init__(self, device, cloud=None, policy: Policy | None = None, guardrails: Guardrails | None = None,
                 audit_log=None, *, max_tokens: int = 256, state_fn: Callable[[], DeviceState] = read_device_state):
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
            reasons.append("cloud unavailable: circuit breaker open after repeated failures")
        if private or kinds:
            what = "marked private" if private and not kinds else "contains private data: " + ", ".join(kinds)
            if private or self.policy.privacy == "strict":
                allowed = False
                reasons.append(what if not private else "request marked private")
            elif self.policy.privacy == "redact":
                red = redact(prompt, spans)
                reasons.append(f"{what}; redacted before any cloud call")
            else:
                reasons.append(f"{what}; privacy policy 'allow'")
        if allowed:
            est_cost = self.policy.cost(len(prompt) // 4 + 1, max_tokens)
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

    def _device(self, prompt: str, max_tokens: int) -> tuple[str, float, int]:
        t0 = time.perf_counter()
        text = self.device.generate([{"role": "user", "content": prompt}], max_tokens=max_tokens)
        dt = time.perf_counter() - t0
        stats = getattr(getattr(self.device, "runner", None), "last_stats", None)
        n = getattr(stats, "generated_tokens", 0) or max(1, len(text) // 4)
        spt = dt / max(n, 1)
        with self._lock:
            self._sec_per_token = spt if self._sec_per_token is None else 0.7 * self._sec_per_token + 0.3 * spt
        return text, dt, n

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
        rows = logits[len(ids) - 1: len(ids) - 1 + len(ans)].astype(np.float64)
        m = rows.max(axis=1, keepdims=True)
        logp = rows[np.arange(len(ans)), ans] - (m[:, 0] + np.log(np.exp(rows - m).sum(axis=1)))
        return float(np.exp(logp.mean()))

    def _cloud_messages(self, prompt: str, red: Redaction | None):
        return [{"role": "user", "content": red.text if red else prompt}]

    def _answer(self, prompt: str, private: bool, max_tokens: int, force_cloud: bool = False, previous: Answer | None = None) -> Answer:
        if not isinstance(prompt, str) or not prompt.strip():
            raise EdgeSDKError("prompt must be a non-empty string")
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        blocked, allowed, reasons, red, cloud_first = self._plan(prompt, private, max_tokens, force_cloud)
        request = (prompt, private, max_tokens)
        if blocked:
            return self._finish(Answer(BLOCKED_TEXT, "blocked", tuple(reasons), None, 0.0, rid, self, request), None)
        if force_cloud and not allowed:
            reasons.insert(0, "escalation refused")
            if previous is not None:
                return self._finish(attrs.evolve(previous, reasons=tuple(reasons), request_id=rid), None)
        device_text = conf = None
        if not cloud_first:
            device_text, _, _ = self._device(prompt, max_tokens)
            if allowed and self.policy.min_confidence > 0:
                conf = self.confidence(prompt, device_text)
            problem = self._weak(device_text, conf)
            if not (allowed and problem):
                if problem:
                    reasons.append(problem)
                return self._finish(self._guard_output(Answer(device_text, "device", tuple(reasons), conf, time.perf_counter() - t0, rid, self, request)), None)
            reasons.append(problem + "; escalating")
        sent = self._cloud_messages(prompt, red)
        try:
            reply = self.cloud.chat(sent, max_tokens=max_tokens)
        except CloudError as exc:
            reasons.append(f"cloud failed ({exc}); answered on the device")
            if device_text is None:
                device_text, _, _ = self._device(prompt, max_tokens)
            ans = Answer(device_text, "device", tuple(reasons), conf, time.perf_counter() - t0, rid, self, request)
            return self._finish(self._guard_output(ans), sent)
        with self._lock:
            self._spent += self.policy.cost(reply.tokens_in, reply.tokens_out)
        text = red.restore(reply.text) if red else reply.text
        return self._finish(self._guard_output(Answer(text, "cloud", tuple(reasons), None, time.perf_counter() - t0, rid, self, request)), sent)

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
            self.audit.write({
                "request_id": ans.request_id, "route": ans.route, "reasons": list(ans.reasons),
                "sent": body, "sent_sha256": None if body is None else sha256_text(body),
                "destination": None if sent is None else self.cloud.http.url,
                "confidence": ans.confidence, "latency_s": round(ans.latency_s, 4),
            })
        log.info("request %s answered by %s: %s", ans.request_id, ans.route, "; ".join(ans.reasons))
        return ans


class AnswerStream:
    """Iterates answer pieces with the same routing as ``generate``. A weak device answer is
    followed by a notice and the cloud's answer; if the cloud stream breaks, a notice says so and
    the device answer stands (or follows). ``answer`` holds the final Answer when done."""

    def __init__(self, orch: Orchestrator, prompt: str, private: bool, max_tokens: int):
        if not isinstance(prompt, str) or not prompt.strip():
            raise EdgeSDKError("prompt must be a non-empty string")
        self._orch, self._args = orch, (prompt, private, max_tokens)
        self.answer: Answer | None = None
        self._it = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self):
        self._it.close()

    def _run(self) -> Iterator[str]:
        o = self._orch
        prompt, private, max_tokens = self._args
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        blocked, allowed, reasons, red, cloud_first = o._plan(prompt, private, max_tokens, False)
        request = (prompt, private, max_tokens)

        def done(text, route, sent, conf=None):
            self.answer = o._finish(o._guard_output(Answer(text, route, tuple(reasons), conf, time.perf_counter() - t0, rid, o, request)), sent)

        if blocked:
            yield BLOCKED_TEXT
            return done(BLOCKED_TEXT, "blocked", None)
        device_text = conf = None
        if not cloud_first:
            parts = []
            for piece in o.device.generate_stream([{"role": "user", "content": prompt}], max_tokens=max_tokens):
                parts.append(piece)
                yield piece
            device_text = "".join(parts)
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
        parts = []
        try:
            for piece in o.cloud.chat_stream(sent, max_tokens=max_tokens):
                piece = red.restore(piece) if red else piece
                parts.append(piece)
                yield piece
            with o._lock:
                o._spent += o.policy.cost(len(prompt) // 4 + 1, len("".join(parts)) // 4 + 1)
            return done("".join(parts), "cloud", sent)
        except CloudError as exc:
            reasons.append(f"cloud failed ({exc}); answered on the device")
        if device_text is not None:
            yield "\n[cloud failed; keeping the device answer]\n"
            return done(device_text, "device", sent, conf)
        if parts:
            yield "\n[cloud connection lost; answering on the device]\n"
        parts = []
        for piece in o.device.generate_stream([{"role": "user", "content": prompt}], max_tokens=max_tokens):
            parts.append(piece)
            yield piece
        done("".join(parts), "device", sent)
