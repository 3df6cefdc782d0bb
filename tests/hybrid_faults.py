"""A loopback HTTP/1.1 server whose answers are scripted, for the faults real servers show only
now and then: slow or reset connections, error statuses, Retry-After, and server-sent-event
streams with every oddity the SSE format allows. Raw sockets, so a test controls each byte.

It binds 127.0.0.1 only, serves at most ``max_requests`` requests, keeps connections alive when
the reply says so, and is stopped (threads joined) by ``close()``.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    target: str
    headers: dict
    body: object
    connection: int


# A reply writes to the socket and returns True to keep the connection open for another request.
Reply = Callable[["FaultServer", Seen, socket.socket], bool]


def response(status: int, body: bytes = b"", headers: dict | None = None, keep_alive: bool = False) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
    head = {"Content-Length": str(len(body)), "Connection": "keep-alive" if keep_alive else "close", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode() + body


def json_reply(status: int, doc: dict, headers: dict | None = None, keep_alive: bool = True) -> Reply:
    def reply(server, seen, conn):
        conn.sendall(response(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}, keep_alive))
        return keep_alive

    return reply


def completion(text: str = "Hello, world", usage: dict | None = None) -> dict:
    return {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        **({"usage": usage} if usage else {}),
    }


def chunk(content: str | None = None, finish: str | None = None, **extra) -> dict:
    delta = {} if content is None else {"content": content}
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def sse_body(*items, eol: str = "\n") -> bytes:
    """Events from dicts (one ``data:`` line each) and raw strings (written as given); lines
    end with ``eol``."""
    out = []
    for item in items:
        out.append(f"data: {json.dumps(item, ensure_ascii=False)}\n\n" if isinstance(item, dict) else item)
    return "".join(out).replace("\n", eol).encode()


def sse_reply(body: bytes, *, piece: int | None = None, content_type: str = "text/event-stream", reset: bool = False) -> Reply:
    """A close-delimited event stream; ``piece`` bytes at a time (TCP_NODELAY, short pauses) to
    split lines and CRLFs across reads; ``reset`` ends with a TCP RST instead of a FIN."""

    def reply(server, seen, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n".encode())
        step = piece or len(body) or 1
        for i in range(0, len(body), step):
            conn.sendall(body[i : i + step])
            if piece:
                time.sleep(0.002)
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    return reply


def sequence(*replies: Reply) -> Reply:
    """The n-th request gets the n-th reply; the last one repeats."""

    def reply(server, seen, conn):
        return replies[min(len(server.seen) - 1, len(replies) - 1)](server, seen, conn)

    return reply


def held(then: Reply) -> Reply:
    """Waits for ``server.gate`` before answering, so a test can keep a request in flight."""

    def reply(server, seen, conn):
        server.gate.wait(10)
        return then(server, seen, conn)

    return reply


def _slow(server, seen, conn):
    server.stopping.wait(1.5)
    return False


MODES: dict[str, Reply] = {
    "slow": _slow,
    "500": lambda s, seen, conn: conn.sendall(response(500, b"oops!")) or False,
    "malformed": lambda s, seen, conn: conn.sendall(response(200, b"not json{", {"Content-Type": "application/json"})) or False,
    "reset": sse_reply(sse_body(chunk("Partial cloud ")), reset=True),
    "ok": json_reply(200, completion()),
}


class FaultServer:
    def __init__(self, reply: str | Reply, max_requests: int = 8, tls: ssl.SSLContext | None = None):
        self.reply = MODES[reply] if isinstance(reply, str) else reply
        self.max_requests, self.tls = max_requests, tls
        self.requests: list = []  # the JSON bodies received, in order
        self.seen: list[Seen] = []
        self.connections = 0
        self.gate, self.stopping = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._start(self._accept)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.seen]

    def _start(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # includes the accept timeout
                continue
            with self._lock:
                self.connections += 1
                n = self.connections
            self._start(self._connection, conn, n)

    def _connection(self, conn: socket.socket, n: int):
        try:
            conn.settimeout(5)
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with self._lock:
                self._open.append(conn)
            with conn:
                while not self.stopping.is_set():
                    seen = self._read_request(conn, n)
                    if seen is None or not self.reply(self, seen, conn):
                        break
        except (OSError, ssl.SSLError):
            pass  # the client hung up or rejected our certificate: that is what some tests are about

    def _read_request(self, conn: socket.socket, n: int) -> Seen | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        while len(body) < int(headers.get("content-length", 0)):
            body += conn.recv(65536)
        method, target, _ = request_line.split(" ", 2)
        seen = Seen(method, target, headers, json.loads(body) if body else None, n)
        with self._lock:
            if len(self.seen) >= self.max_requests:
                return None
            self.seen.append(seen)
            self.requests.append(seen.body)
        return seen

    def close(self):
        self.stopping.set()
        self.gate.set()
        for conn in self._open:  # wake handlers parked in recv() on a client's idle keep-alive connection
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        self.sock.close()
