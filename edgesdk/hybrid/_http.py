"""HTTP for the cloud tier: TLS verified by default, timeouts, bounded retries with backoff, a
circuit breaker, and server-sent events. Standard library only (http.client)."""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Iterator

from .._errors import EdgeSDKError

__all__ = ["CloudError", "CircuitBreaker", "HttpTransport"]

log = logging.getLogger("edgesdk.hybrid.http")


class CloudError(EdgeSDKError, ConnectionError):
    """A cloud request failed; ``kind`` is one of timeout, connection, http, malformed, circuit_open, tls."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(f"cloud {kind}: {message}")


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown_s`` one trial call may pass."""

    def __init__(self, threshold: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if threshold < 1 or cooldown_s < 0:
            raise ValueError("threshold must be >= 1 and cooldown_s >= 0")
        self.threshold, self.cooldown_s, self._clock = threshold, cooldown_s, clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        with self._lock:
            self._failures, self._opened_at = 0, None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = self._clock()


_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HttpTransport:
    def __init__(self, base_url: str, *, timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.25,
                 verify_tls: bool = True, ca_file: str | None = None, breaker: CircuitBreaker | None = None,
                 headers: Callable[[], dict] | None = None):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries >= 0 and backoff_s >= 0")
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.prefix = u.path.rstrip("/")
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.breaker = breaker or CircuitBreaker()
        self._headers = headers or (lambda: {})
        self._ssl = None
        if self.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                log.warning("TLS certificate verification is OFF for %s", self.host)
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    @property
    def url(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}{self.prefix}"

    def _connect(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _open(self, method: str, path: str, body: dict | None):
        """Send a request, retrying transient failures; returns (connection, response) with status 2xx."""
        if not self.breaker.allow():
            raise CloudError("circuit_open", f"{self.host} failed repeatedly; not retrying for {self.breaker.cooldown_s:.0f} s")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **self._headers()}
        last: CloudError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random()))
            conn = self._connect()
            try:
                conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
            except ssl.SSLError as exc:
                conn.close()
                self.breaker.failure()
                raise CloudError("tls", str(exc)) from exc
            except (socket.timeout, TimeoutError):
                conn.close()
                last = CloudError("timeout", f"no answer from {self.host} within {self.timeout_s} s")
                continue
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = CloudError("connection", f"{type(exc).__name__}: {exc}")
                continue
            if 200 <= resp.status < 300:
                return conn, resp
            detail = resp.read(500).decode("utf-8", "replace")
            conn.close()
            last = CloudError("http", f"HTTP {resp.status} from {self.host}: {detail[:200]}")
            if resp.status not in _RETRYABLE_STATUS:
                raise last  # the server is up and answered: a client error does not trip the breaker
        self.breaker.failure()
        assert last is not None
        raise last

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        """The raw body of a 2xx answer."""
        conn, resp = self._open(method, path, body)
        try:
            return resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.breaker.failure()
            raise CloudError("connection", f"reading the answer failed: {exc}") from exc
        finally:
            conn.close()

    def request_json(self, method: str, path: str, body: dict | None = None) -> dict:
        raw = self.request(method, path, body)
        try:
            out = json.loads(raw)
        except ValueError as exc:
            self.breaker.failure()
            raise CloudError("malformed", f"answer is not JSON: {raw[:120]!r}") from exc
        if not isinstance(out, dict):
            self.breaker.failure()
            raise CloudError("malformed", f"answer is JSON but not an object: {raw[:120]!r}")
        self.breaker.success()
        return out

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        """POST and yield each server-sent ``data:`` JSON payload until ``[DONE]`` or the end."""
        conn, resp = self._open("POST", path, body)
        try:
            done = False
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise CloudError("connection", f"stream broken: {type(exc).__name__}: {exc}") from exc
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError as exc:
                    raise CloudError("malformed", f"bad event in stream: {payload[:120]!r}") from exc
                yield event
            if not done:
                raise CloudError("connection", "stream ended before [DONE]")
            self.breaker.success()
        except CloudError:
            self.breaker.failure()
            raise
        finally:
            conn.close()
