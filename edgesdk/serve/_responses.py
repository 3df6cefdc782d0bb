"""OpenAI wire shapes: error bodies, and the completion objects built from a finished generation.

Pure Python (no ASGI imports) so request handling can be tested and reused without a server.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import attrs

from .._errors import ContextLengthError, EdgeSDKError, GenerationError, InputError, StructuredOutputError

__all__ = ["ApiError", "ChatFormat", "CompletionFormat", "Outcome", "api_error"]

log = logging.getLogger("edgesdk.serve")


class ApiError(Exception):
    """An HTTP error answered with OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code, **self.extra}}


class ServerShuttingDown(EdgeSDKError):
    """A queued or running generation was cancelled because the server is stopping."""


def api_error(exc: BaseException) -> ApiError:
    """The HTTP answer for an exception raised while handling a request.

    Bad requests the engine finds (options, prompt, chat template) are 400; a schema or tool call
    that could not be completed within ``max_tokens`` is 422 (the request was valid, its output is
    not, and it is never returned as success); anything else is a server fault, 500.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ServerShuttingDown):
        return ApiError(503, str(exc), "server_error", code="server_shutting_down", headers={"Retry-After": "5"})
    if isinstance(exc, StructuredOutputError):
        # The partial text helps a developer raise max_tokens or simplify a schema; it sits in the
        # error, never in a message, so no client can mistake it for valid output.
        return ApiError(422, str(exc), code="structured_output_incomplete", extra={"partial": exc.partial})
    if isinstance(exc, ContextLengthError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, (GenerationError, InputError)):
        return ApiError(400, str(exc))
    log.error("request failed", exc_info=exc)
    name = type(exc).__name__
    return ApiError(500, f"{name}: {exc}" if isinstance(exc, EdgeSDKError) else f"internal error ({name}): {exc}", "server_error")


@attrs.frozen
class Outcome:
    """A finished generation, reduced to what the wire format reports."""

    text: str
    tool_calls: tuple = ()  # edgesdk.llm ToolCall objects: .id, .name, .arguments (dict)
    stop_reason: str = "eos"  # the engine's: eos, stop, max_tokens, tool_calls
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        return "length" if self.stop_reason == "max_tokens" else "stop"

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def _tool_call(call, index: int | None = None) -> dict:
    out = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
    # Stream deltas address calls by position; whole messages do not.
    return out if index is None else {"index": index, **out}


class _Format:
    """Objects of one request: ids and timestamps shared by the response or every chunk of its stream."""

    prefix = ""
    object = ""
    chunk_object = ""

    def __init__(self, model: str):
        self.model = model
        self.id = f"{self.prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _envelope(self, object_: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": object_, "created": self.created, "model": self.model, "system_fingerprint": "edgesdk", "choices": choices, **extra}

    def usage_chunk(self, out: Outcome) -> dict:
        """The last chunk when ``stream_options.include_usage``: no choices, only usage (OpenAI's shape)."""
        return self._envelope(self.chunk_object, [], usage=out.usage())


class ChatFormat(_Format):
    prefix = "chatcmpl"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def response(self, out: Outcome) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": out.text, "refusal": None}
        if out.tool_calls:
            message["content"] = out.text or None
            message["tool_calls"] = [_tool_call(c) for c in out.tool_calls]
        choice = {"index": 0, "message": message, "finish_reason": out.finish_reason, "logprobs": None}
        return self._envelope(self.object, [choice], usage=out.usage())

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return self._envelope(self.chunk_object, [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def first_chunk(self) -> dict | None:
        return self._chunk({"role": "assistant", "content": ""})

    def text_chunk(self, piece: str) -> dict:
        return self._chunk({"content": piece})

    def final_chunks(self, out: Outcome) -> list[dict]:
        chunks = []
        if out.tool_calls:
            # Calls arrive whole when the engine has parsed and validated them, never as partial JSON.
            chunks.append(self._chunk({"tool_calls": [_tool_call(c, i) for i, c in enumerate(out.tool_calls)]}))
        chunks.append(self._chunk({}, out.finish_reason))
        return chunks


class CompletionFormat(_Format):
    prefix = "cmpl"
    object = "text_completion"
    chunk_object = "text_completion"

    def _choice(self, text: str, finish_reason: str | None) -> dict:
        return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}

    def response(self, out: Outcome) -> dict:
        return self._envelope(self.object, [self._choice(out.text, out.finish_reason)], usage=out.usage())

    def first_chunk(self) -> dict | None:
        return None

    def text_chunk(self, piece: str) -> dict:
        return self._envelope(self.chunk_object, [self._choice(piece, None)])

    def final_chunks(self, out: Outcome) -> list[dict]:
        return [self._envelope(self.chunk_object, [self._choice("", out.finish_reason)])]
