"""HTTP for the cloud tier, over one pooled :class:`httpx.Client` per endpoint.

Keep-alive connections, proxies from the environment (``HTTPS_PROXY``/``NO_PROXY``), TLS verified
by default, a timeout per phase (connect/read/write/pool), bounded retries that honour
``Retry-After`` inside an overall deadline, a circuit breaker whose half-open state admits one
trial, and a server-sent-events reader that follows the WHATWG rules real servers rely on.
Every failure is a :class:`CloudError` that says what went wrong in words.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import math
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Iterator

import attrs
import httpx

from .. import __version__
from .._errors import EdgeSDKError

__all__ = ["CloudError", "CircuitBreaker", "HttpTransport", "SSEEvent", "iter_lines", "parse_sse", "parse_retry_after", "json_object", "server_message"]

log = logging.getLogger("edgesdk.hybrid.http")

# Transient statuses worth another try; any other non-2xx is the caller's mistake and final.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_RETRY_AFTER_STATUS = frozenset({429, 503})
_MAX_LINE_BYTES = 1 << 20


class CloudError(EdgeSDKError, ConnectionError):
    """A cloud request failed; ``kind`` is one of timeout, connection, http, malformed, circuit_open, tls.

    ``status`` is the HTTP status when the server answered with one, ``retry_after`` the seconds
    it asked us to wait (429/503 with ``Retry-After``)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        self.kind, self.detail, self.status, self.retry_after = kind, message, status, retry_after
        super().__init__(f"cloud {kind}: {message}")

    @property
    def server_is_up(self) -> bool:
        """The server answered and refused the request itself (4xx): no sign that it is failing."""
        return self.status is not None and self.status not in _RETRYABLE_STATUS

    def because(self, note: str) -> "CloudError":
        """The same failure with one more reason appended (why we stopped retrying)."""
        err = CloudError(self.kind, f"{self.detail}; {note}", status=self.status, retry_after=self.retry_after)
        err.__cause__ = self.__cause__
        return err


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed requests. After ``cooldown_s`` it is half-open:
    exactly one caller gets through as the trial, and everyone else is refused until the trial's
    verdict closes the breaker (success) or opens it for another cooldown (failure)."""

    def __init__(self, threshold: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if threshold < 1 or cooldown_s < 0:
            raise ValueError("threshold must be >= 1 and cooldown_s >= 0")
        self.threshold, self.cooldown_s, self._clock = threshold, cooldown_s, clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        with self._lock:
            return self._state()

    def allow(self) -> bool:
        """Whether a request would be let through now; takes no slot (see :meth:`acquire`)."""
        with self._lock:
            return self._refusal() is None

    def _refusal(self) -> str | None:
        state = self._state()
        if state == "open":
            left = self.cooldown_s - (self._clock() - self._opened_at)
            return f"circuit breaker open after {self._failures} failed requests in a row; next trial in {left:.0f} s"
        if state == "half-open" and self._trial_running:
            return "circuit breaker half-open: a trial request is in flight, the others wait for its verdict"
        return None

    @property
    def refusal(self) -> str | None:
        """Why a request would be refused now, or None."""
        with self._lock:
            return self._refusal()

    def acquire(self, target: str = "the cloud") -> None:
        """Admit one request or raise ``CloudError('circuit_open')`` with the reason. In the
        half-open state the admitted caller is the single trial; report its outcome with
        :meth:`success`, :meth:`failure` or :meth:`release`."""
        with self._lock:
            why = self._refusal()
            if why is not None:
                raise CloudError("circuit_open", f"not calling {target}: {why}")
            if self._state() == "half-open":
                self._trial_running = True

    def success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial_running = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            # A failed trial re-opens at once: the server is still down, whatever the count.
            if self._failures >= self.threshold or self._trial_running:
                self._opened_at = self._clock()
            self._trial_running = False

    def release(self) -> None:
        """End a request without a verdict (cancelled, or refused by the server as our mistake)."""
        with self._lock:
            self._trial_running = False


# -- server-sent events ------------------------------------------------------------------------


@attrs.frozen
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of a byte stream split on CRLF, LF or CR, as SSE defines them. Not ``str.splitlines``:
    that also breaks on U+2028 and friends, which JSON strings may carry unescaped."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        # A CR that ends the chunk may be the first half of a CRLF: decide when more arrives.
        held = buf.endswith(b"\r")
        *lines, buf = _LINE_BREAK.split(buf[:-1] if held else buf)
        if held:
            buf += b"\r"
        if len(buf) > _MAX_LINE_BYTES:
            raise CloudError("malformed", f"a stream line is over {_MAX_LINE_BYTES} bytes without a line break")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if buf:
        yield buf.rstrip(b"\r").decode("utf-8", "replace")


def parse_sse(lines: Iterable[str]) -> Iterator[SSEEvent]:
    """Events of an SSE stream: ``data:`` lines joined by newlines, ``event:``/``id:`` kept,
    comments (``: ping`` keep-alives) and ``retry:`` ignored. A last event that the server did not
    end with a blank line is still delivered: the stream's consumer decides if it is complete."""
    data: list[str] = []
    event, last_id = "", None
    for n, line in enumerate(lines):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if not line:
            if data:
                yield SSEEvent("\n".join(data), event or "message", last_id)
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        value = value[1:] if sep and value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value
    if data:
        yield SSEEvent("\n".join(data), event or "message", last_id)


# -- retries -----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Deadline:
    """The time left for one logical request, across its attempts and waits."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._end = math.inf if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def clip(self, timeout: httpx.Timeout) -> httpx.Timeout:
        """Per-phase timeouts no longer than what is left, so no single phase outlives the deadline."""
        if self.seconds is None:
            return timeout
        left = max(self.remaining(), 0.001)
        cut = {k: left if v is None else min(v, left) for k, v in timeout.as_dict().items()}
        return httpx.Timeout(**cut)


# -- errors in words ---------------------------------------------------------------------------


def _root_causes(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _transport_error(exc: httpx.HTTPError, target: str, timeout: httpx.Timeout) -> CloudError:
    """Say which phase failed and why, from httpx's exception and the OS/TLS error beneath it."""
    if isinstance(exc, httpx.ConnectTimeout):
        return CloudError("timeout", f"connecting to {target} took over {timeout.connect} s (connect timeout)")
    if isinstance(exc, httpx.ReadTimeout):
        return CloudError("timeout", f"{target} sent nothing for {timeout.read} s (read timeout)")
    if isinstance(exc, httpx.WriteTimeout):
        return CloudError("timeout", f"sending the request to {target} took over {timeout.write} s (write timeout)")
    if isinstance(exc, httpx.PoolTimeout):
        return CloudError("timeout", f"no free connection to {target} within {timeout.pool} s (pool timeout)")
    causes = list(_root_causes(exc))
    for c in causes:
        if isinstance(c, ssl.SSLCertVerificationError):
            return CloudError("tls", f"certificate of {target} not trusted: {c.verify_message or c.reason}")
        if isinstance(c, ssl.SSLError):
            return CloudError("tls", f"TLS with {target} failed: {c.reason or c}")
        if isinstance(c, ConnectionRefusedError):
            return CloudError("connection", f"{target} refused the connection (is the server running?)")
        if isinstance(c, ConnectionResetError):
            return CloudError("connection", f"{target} reset the connection")
        if isinstance(c, socket.gaierror):
            return CloudError("connection", f"cannot resolve the host name of {target}: {c.strerror or c}")
    if isinstance(exc, httpx.ProxyError):
        return CloudError("connection", f"the proxy for {target} failed: {exc}")
    if isinstance(exc, httpx.RemoteProtocolError):
        return CloudError("connection", f"{target} broke the HTTP exchange: {exc}")
    return CloudError("connection", f"talking to {target} failed: {exc or type(exc).__name__}")


def server_message(body: bytes) -> str:
    """The human part of an error body: OpenAI/vLLM ``error.message``, FastAPI ``detail``, or text."""
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        for msg in ((err.get("message") if isinstance(err, dict) else err), doc.get("message"), doc.get("detail")):
            if msg:
                text = msg if isinstance(msg, str) else json.dumps(msg)
                break
    return " ".join(text.split())[:300]


def _as_timeout(t: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(t, httpx.Timeout):
        phases = t.as_dict().values()
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        phases, t = (t,), httpx.Timeout(float(t))
    else:
        raise TypeError(f"timeout_s must be seconds or an httpx.Timeout, got {t!r}")
    if any(v is not None and v <= 0 for v in phases):
        raise ValueError(f"every timeout must be > 0 seconds, got {t!r}")
    return t


class HttpTransport:
    """One endpoint: ``base_url`` (its query string, e.g. ``?api-version=...``, is sent with every
    request), ``timeout_s`` (seconds for every phase, or an ``httpx.Timeout`` per phase),
    ``retries`` with exponential ``backoff_s``, a server's ``Retry-After`` honoured up to
    ``max_retry_after_s`` (a longer ask ends the request at once), and ``deadline_s`` bounding
    each request's attempts and waits together (None: only timeouts and retries bound it; each
    attempt's phase timeouts are cut to the time left when it starts, a stream's reads included)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float | httpx.Timeout = 30.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        max_retry_after_s: float = 30.0,
        deadline_s: float | None = None,
        verify_tls: bool = True,
        ca_file: str | None = None,
        breaker: CircuitBreaker | None = None,
        headers: Callable[[], dict] | None = None,
    ):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if retries < 0 or backoff_s < 0 or max_retry_after_s < 0 or (deadline_s is not None and deadline_s <= 0):
            raise ValueError("retries, backoff_s and max_retry_after_s must be >= 0 and deadline_s > 0 or None")
        self.timeout = _as_timeout(timeout_s)
        self.retries, self.backoff_s, self.max_retry_after_s, self.deadline_s = retries, backoff_s, max_retry_after_s, deadline_s
        self.breaker = breaker or CircuitBreaker()
        self._headers = headers or dict
        self._scheme, self._netloc, self._prefix, self._query = u.scheme, u.netloc, u.path.rstrip("/"), u.query
        self.target = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
        self._client = httpx.Client(
            timeout=self.timeout, verify=self._verify(verify_tls, ca_file), trust_env=True, headers={"User-Agent": f"edgesdk/{__version__}"}
        )

    def _verify(self, verify_tls: bool, ca_file: str | None):
        if not verify_tls:
            log.warning("TLS certificate verification is OFF for %s", self.target)
            return False
        return ssl.create_default_context(cafile=ca_file) if ca_file else True

    @property
    def url(self) -> str:
        """The endpoint without its query string, which may carry a key: safe for logs and audits."""
        return urllib.parse.urlunsplit((self._scheme, self._netloc, self._prefix, "", ""))

    def _url(self, path: str) -> str:
        path, _, query = path.partition("?")
        query = "&".join(q for q in (self._query, query) if q)
        return urllib.parse.urlunsplit((self._scheme, self._netloc, self._prefix + path, query, ""))

    def close(self) -> None:
        self._client.close()

    # -- one logical request -------------------------------------------------------------------

    @contextlib.contextmanager
    def _verdict(self):
        """The breaker's part in one request: admit it (or refuse with the reason), then judge it."""
        self.breaker.acquire(self.target)
        try:
            yield
        except CloudError as exc:
            if exc.server_is_up:
                self.breaker.release()
            else:
                self.breaker.failure()
            raise
        except BaseException:
            self.breaker.release()  # cancelled by our caller: nothing learnt about the server
            raise
        self.breaker.success()

    def _send(self, method: str, path: str, body: dict | None, headers: dict, *, stream: bool) -> httpx.Response:
        """A 2xx response after at most ``retries`` more tries of transient failures (open if
        ``stream``: the caller closes it)."""
        deadline = _Deadline(self.deadline_s)
        content = None if body is None else json.dumps(body).encode()
        last: CloudError | None = None
        for attempt in range(self.retries + 1):
            if last is not None:
                self._pause(last, attempt, deadline)
            timeout = deadline.clip(self.timeout)
            request = self._client.build_request(method, self._url(path), content=content, headers=headers, timeout=timeout)
            try:
                response = self._client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                last = _transport_error(exc, self.target, timeout)
                last.__cause__ = exc
                if last.kind == "tls":
                    raise last  # a certificate does not get trusted by asking again
                continue
            if response.is_success:
                return response
            last = self._status_error(response)
            if response.status_code not in _RETRYABLE_STATUS:
                raise last
        assert last is not None
        raise last

    def _pause(self, last: CloudError, attempt: int, deadline: _Deadline) -> None:
        """Wait before the next try: the server's ``Retry-After`` when it gave one, else backoff
        with jitter. A wait that is too long ends the request now, with the reason."""
        if last.retry_after is not None:
            if last.retry_after > self.max_retry_after_s:
                raise last.because(f"not waiting: over max_retry_after_s={self.max_retry_after_s:g}")
            delay = last.retry_after
        else:
            delay = self.backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
        if delay >= deadline.remaining():
            raise last.because(f"waiting {delay:.1f} s for another try would pass the {deadline.seconds:g} s deadline")
        log.info("retrying %s in %.2f s after: %s", self.target, delay, last)
        time.sleep(delay)

    def _status_error(self, response: httpx.Response) -> CloudError:
        try:
            detail = server_message(response.read()[:4096])
        except httpx.HTTPError:
            detail = ""
        finally:
            response.close()
        status = response.status_code
        wait = parse_retry_after(response.headers.get("retry-after")) if status in _RETRY_AFTER_STATUS else None
        msg = f"HTTP {status} {response.reason_phrase} from {self.target}" + (f": {detail}" if detail else "")
        if wait is not None:
            msg += f" (asks to retry after {wait:.0f} s)"
        return CloudError("http", msg, status=status, retry_after=wait)

    def _request_headers(self, accept: str, body: dict | None) -> dict:
        # Built before the breaker admits the request: a missing API key is our fault, not the server's.
        base = {"Accept": accept, **({"Content-Type": "application/json"} if body is not None else {})}
        return {**base, **self._headers()}

    # -- public ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        """The raw body of a 2xx answer."""
        headers = self._request_headers("application/json", body)
        with self._verdict():
            return self._send(method, path, body, headers, stream=False).content

    def request_json(self, method: str, path: str, body: dict | None = None, parse: Callable[[dict], object] | None = None):
        """The JSON object of a 2xx answer, passed through ``parse`` when given; a CloudError from
        ``parse`` (an answer without the expected fields) counts as the server failing."""
        headers = self._request_headers("application/json", body)
        with self._verdict():
            raw = self._send(method, path, body, headers, stream=False).content
            out = json_object(raw, what="answer")
            return parse(out) if parse else out

    @contextlib.contextmanager
    def stream_events(self, path: str, body: dict) -> Iterator[Iterator[SSEEvent]]:
        """POST ``body`` and give the server-sent events of the answer. A CloudError raised inside
        the ``with`` block (by the reader or by the caller judging the events) counts against the
        server; leaving the block early hangs up without a verdict. A server that ignores
        streaming and answers with one JSON object is read as a single event."""
        headers = self._request_headers("text/event-stream", body)
        with self._verdict():
            response = self._send("POST", path, body, headers, stream=True)
            try:
                yield self._events(response)
            finally:
                response.close()

    def _events(self, response: httpx.Response) -> Iterator[SSEEvent]:
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("", "text/event-stream"):
            return parse_sse(iter_lines(self._chunks(response)))
        if ctype.endswith("json"):
            return iter([SSEEvent(b"".join(self._chunks(response)).decode("utf-8", "replace"))])
        snippet = server_message(b"".join(self._chunks(response))[:2048])
        raise CloudError("malformed", f"expected an event stream from {self.target}, got {ctype}: {snippet[:120]}")

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.target, self.timeout).because("the answer was cut off") from exc


def json_object(raw: bytes | str, *, what: str) -> dict:
    """``raw`` parsed as a JSON object, or CloudError('malformed') quoting its start."""
    try:
        out = json.loads(raw)
    except ValueError as exc:
        raise CloudError("malformed", f"{what} is not JSON: {raw[:120]!r}") from exc
    if not isinstance(out, dict):
        raise CloudError("malformed", f"{what} is JSON but not an object: {raw[:120]!r}")
    return out
