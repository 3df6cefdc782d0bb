"""Clients for existing serving engines: OpenAI-compatible chat completions (vLLM, llama.cpp
server, TGI, Azure OpenAI, ...) and the Open Inference Protocol V2 (KServe, Triton, MLServer) for tensors.

Both take the transport options of :class:`~edgesdk.hybrid._http.HttpTransport` as keywords:
``timeout_s`` (seconds, or an ``httpx.Timeout`` per phase), ``retries``, ``backoff_s``,
``max_retry_after_s``, ``deadline_s``, ``verify_tls``, ``ca_file`` and ``breaker``.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Iterator, Mapping, Sequence

import attrs
import numpy as np

from ._http import CloudError, HttpTransport, SSEEvent, json_object, server_message

__all__ = ["OpenAICompatible", "V2Client", "CloudReply", "ChatStream"]


@attrs.frozen
class CloudReply:
    """A whole cloud answer. ``tokens_in``/``tokens_out`` are 0 when the server reported no usage."""

    text: str
    tokens_in: int
    tokens_out: int
    model: str


class _Endpoint:
    http: HttpTransport

    @property
    def available(self) -> bool:
        """False while the circuit breaker refuses requests (the cloud failed repeatedly)."""
        return self.http.breaker.allow()

    @property
    def unavailable_reason(self) -> str | None:
        return self.http.breaker.refusal

    def close(self) -> None:
        """Close the pooled connections."""
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _api_root(base_url: str) -> str:
    """A bare host (``http://127.0.0.1:8000``) gets ``/v1``; a URL with a path is the API root as
    written (``.../v1``, Azure's ``/openai/deployments/NAME``); the query string stays."""
    u = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit(u._replace(path=u.path.rstrip("/") or "/v1"))


def _usage(doc: dict) -> tuple[int, int]:
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    try:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0


class OpenAICompatible(_Endpoint):
    """``/chat/completions`` client. The API key is read from ``api_key_env`` at each request and
    never stored in an attribute, logged or put in an error message."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, **http_options):
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        self.model, self.api_key_env = model, api_key_env
        self.http = HttpTransport(_api_root(base_url), headers=self._auth, **http_options)

    def _auth(self) -> dict:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise CloudError("connection", f"environment variable {self.api_key_env} (the API key) is not set")
        return {"Authorization": f"Bearer {key}"}

    def _body(self, messages, max_tokens, temperature, stream):
        return {"model": self.model, "messages": list(messages), "max_tokens": max_tokens, "temperature": temperature, "stream": stream}

    def chat(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 256, temperature: float = 0.0) -> CloudReply:
        return self.http.request_json("POST", "/chat/completions", self._body(messages, max_tokens, temperature, False), parse=self._reply)

    def _reply(self, out: dict) -> CloudReply:
        try:
            text = out["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise CloudError("malformed", f"no choices[0].message.content in answer: {str(out)[:120]}") from exc
        return CloudReply(text, *_usage(out), str(out.get("model", self.model)))

    def chat_stream(self, messages, *, max_tokens: int = 256, temperature: float = 0.0) -> "ChatStream":
        """The answer's text pieces as the server sends them; the stream's ``reply`` when done."""
        return ChatStream(self.http, self._body(messages, max_tokens, temperature, True), self.model)


class _ChatChunks:
    """What OpenAI-style stream chunks add up to. Takes what real servers send: Azure's opening
    chunk with an empty ``choices`` list, usage-only chunks, role-only deltas, vendor events."""

    def __init__(self, model: str):
        self.model, self.parts, self.usage, self.finished = model, [], (0, 0), False

    def add(self, event: SSEEvent) -> str:
        """The text ``event`` adds (maybe ""); raises CloudError for an error or a malformed event."""
        if event.event == "error":
            raise CloudError("http", f"server reported an error mid-stream: {server_message(event.data.encode())}")
        if event.event != "message":
            return ""  # e.g. "ping": keep-alives some servers send as named events
        chunk = json_object(event.data, what="stream event")
        if chunk.get("error"):
            raise CloudError("http", f"server reported an error mid-stream: {server_message(event.data.encode())}")
        self.model = chunk.get("model") or self.model
        self.usage = _usage(chunk) if chunk.get("usage") else self.usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise CloudError("malformed", f"stream event whose choices is not a list: {event.data[:120]}")
        piece = "".join(self._choice_text(c, event) for c in choices)
        self.parts.append(piece)
        return piece

    def _choice_text(self, choice, event: SSEEvent) -> str:
        # "message" instead of "delta": the one-object answer of a server that ignored stream=true.
        if not isinstance(choice, dict) or not isinstance(delta := choice.get("delta") or choice.get("message") or {}, dict):
            raise CloudError("malformed", f"stream event without a usable choices[].delta: {event.data[:120]}")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise CloudError("malformed", f"stream event whose delta.content is not text: {event.data[:120]}")
        if choice.get("index", 0) != 0:
            return ""  # only one answer is asked for; ignore extra candidates a server volunteers
        self.finished = self.finished or bool(choice.get("finish_reason"))
        return content or ""

    def reply(self) -> CloudReply:
        return CloudReply("".join(self.parts), *self.usage, str(self.model))


class ChatStream:
    """The text pieces of one streamed chat answer; ``reply`` (a :class:`CloudReply`) once they
    are all read. Nothing is sent before the first piece is asked for; ``close()`` hangs up.

    The answer is complete at ``[DONE]`` or, for servers that never send it, at a chunk with a
    ``finish_reason``; a stream that just stops is a CloudError, never a silently short answer."""

    def __init__(self, http: HttpTransport, body: dict, model: str):
        self.reply: CloudReply | None = None
        self._it = self._run(http, body, model)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        self._it.close()

    def _run(self, http: HttpTransport, body: dict, model: str) -> Iterator[str]:
        chunks = _ChatChunks(model)
        with http.stream_events("/chat/completions", body) as events:
            for event in events:
                if event.data.strip() == "[DONE]":
                    chunks.finished = True
                    break
                piece = chunks.add(event)
                if piece:
                    yield piece
            if not chunks.finished:
                raise CloudError("connection", f"the stream from {http.target} ended before the answer was complete (no [DONE] and no finish_reason)")
        self.reply = chunks.reply()


_V2_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_V2_NAMES = {np.dtype(v): k for k, v in _V2_TYPES.items()}


def _v2_outputs(out: dict) -> dict[str, np.ndarray]:
    try:
        return {o["name"]: np.asarray(o["data"], dtype=_V2_TYPES[o["datatype"]]).reshape(o["shape"]) for o in out["outputs"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CloudError("malformed", f"V2 answer has no valid outputs: {str(out)[:160]}") from exc


class V2Client(_Endpoint):
    """Open Inference Protocol V2 over REST: ``ready``, ``model_metadata``, ``infer``."""

    def __init__(self, base_url: str, **http_options):
        self.http = HttpTransport(base_url, **http_options)

    def ready(self, model: str | None = None) -> bool:
        try:
            self.http.request("GET", f"/v2/models/{model}/ready" if model else "/v2/health/ready")
            return True
        except CloudError:
            return False

    def model_metadata(self, model: str) -> dict:
        return self.http.request_json("GET", f"/v2/models/{model}")

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        body_inputs = []
        for name, arr in inputs.items():
            arr = np.asarray(arr)
            if arr.dtype not in _V2_NAMES:
                raise ValueError(f"input {name!r}: dtype {arr.dtype} has no V2 datatype")
            body_inputs.append({"name": name, "shape": list(arr.shape), "datatype": _V2_NAMES[arr.dtype], "data": arr.ravel().tolist()})
        body = {"inputs": body_inputs}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        return self.http.request_json("POST", f"/v2/models/{model}/infer", body, parse=_v2_outputs)
