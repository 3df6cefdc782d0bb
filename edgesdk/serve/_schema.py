"""Validation of OpenAI request bodies into engine calls: every field checked, every error a 400 naming it.

A body becomes a :class:`GenerationRequest`: the prompt (chat messages, text or token ids) and the
keyword arguments of ``Session.generate_stream`` (:class:`edgesdk.llm.GenerationConfig` fields).
OpenAI fields this server cannot honour are refused unless they hold their default value, so a
client never gets silently different behaviour from what it asked for.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import attrs

from .._errors import GenerationError
from ._responses import ApiError

__all__ = ["GenerationRequest", "Models", "parse_chat", "parse_completion"]

# OpenAI's default when a request gives no temperature (the engine's own default is greedy).
DEFAULT_TEMPERATURE = 1.0

_ROLES = ("system", "developer", "user", "assistant", "tool")


def _bad(param: str | None, message: str, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _kind(v: Any) -> str:
    return (
        "null" if v is None else {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(type(v), type(v).__name__)
    )


# --- field checkers: (param, value) -> the value for the engine ---------------------------------


def _in_range(param: str, v, lo, hi, lo_open: bool = False, hi_open: bool = False):
    below = lo is not None and (v <= lo if lo_open else v < lo)
    above = hi is not None and (v >= hi if hi_open else v > hi)
    if below or above:
        interval = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{')' if hi_open else ']'}"
        raise _bad(param, f"{param} must be in {interval}, got {v}")
    return v


def _integer(lo: int | None = None, hi: int | None = None) -> Callable[[str, Any], int]:
    def check(param, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(param, f"{param} must be an integer, got {_kind(v)}")
        return _in_range(param, v, lo, hi)

    return check


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    def check(param, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _bad(param, f"{param} must be a finite number, got {v!r}")
        return _in_range(param, v, lo, hi, lo_open, hi_open)

    return check


def _boolean(param, v):
    if not isinstance(v, bool):
        raise _bad(param, f"{param} must be a boolean, got {_kind(v)}")
    return v


def _optional(body: Mapping, param: str, check: Callable, default):
    """A field that JSON null or absence leaves at ``default``."""
    return default if body.get(param) is None else check(param, body[param])


def _stop(param, v):
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise _bad(param, f"{param} must be a non-empty string or a list of up to 4 non-empty strings, got {v!r}")
    return tuple(stops)


# OpenAI field -> (GenerationConfig field, checker). top_k .. adapter_scale are extensions that other
# OpenAI-compatible servers (vLLM, llama.cpp) accept too; the openai client sends them via extra_body.
_SAMPLING: dict[str, tuple[str, Callable]] = {
    "max_tokens": ("max_tokens", _integer(1)),
    "temperature": ("temperature", _number(0, 2)),
    "top_p": ("top_p", _number(0, 1, lo_open=True)),
    "seed": ("seed", _integer(0, 2**63 - 1)),
    "stop": ("stop", _stop),
    "top_k": ("top_k", _integer(0)),
    "min_p": ("min_p", _number(0, 1, hi_open=True)),
    "repetition_penalty": ("repetition_penalty", _number(0, lo_open=True)),
    "ignore_eos": ("ignore_eos", _boolean),
    "adapter_scale": ("adapter_scale", _number()),
}

# Accepted and without effect on a local generation (bookkeeping for hosted services).
_IGNORED = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"})

# Features this server does not implement: accepted only at the value that means "off".
_DEFAULT_ONLY: dict[str, tuple] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "top_logprobs": (0,),
    "best_of": (1,),
    "echo": (False,),
    "suffix": ("",),
}


def _default_only(param: str, v: Any) -> None:
    allowed = _DEFAULT_ONLY[param]
    if not any(type(v) is type(a) and v == a for a in allowed):
        raise _bad(param, f"{param}={v!r} is not supported by this server (only {allowed[0]!r})", "unsupported_parameter")


# --- models and adapters ------------------------------------------------------------------------


@attrs.frozen
class Models:
    """The served model ids: ``base`` itself and ``base:adapter`` for each LoRA adapter."""

    base: str
    adapters: tuple[str, ...] = ()

    def ids(self) -> list[str]:
        return [self.base] + [f"{self.base}:{a}" for a in self.adapters]

    def adapter_for(self, model: Any) -> str | None:
        """The adapter a request's ``model`` names (None: the base model); 404 for anything else."""
        if not isinstance(model, str) or not model:
            raise _bad("model", f"model must be a non-empty string, got {_kind(model)}")
        if model == self.base:
            return None
        base, sep, adapter = model.rpartition(":")
        if sep and base == self.base and adapter in self.adapters:
            return adapter
        raise ApiError(404, f"The model {model!r} does not exist; this server has {', '.join(map(repr, self.ids()))}", param="model", code="model_not_found")


# --- requests -----------------------------------------------------------------------------------


@attrs.frozen
class GenerationRequest:
    """One validated request: what to pass to ``Session.generate_stream`` and how to answer."""

    model: str  # as the client named it: echoed in every response object
    prompt: Any  # chat messages, a str, or token ids
    options: dict  # GenerationConfig fields
    stream: bool = False
    include_usage: bool = False
    max_tokens_given: bool = True  # False: the server's default, which may shrink to fit the context


def _common(body: Mapping, models: Models, default_max_tokens: int, own: frozenset[str]) -> tuple[dict, bool, bool]:
    """(engine options, stream, include_usage) from the fields both endpoints share; refuses unknown fields.

    ``own`` names the endpoint's other fields, which the caller validates.
    """
    unknown = sorted(set(body) - set(_SAMPLING) - _IGNORED - set(_DEFAULT_ONLY) - own - {"model", "stream", "stream_options"})
    if unknown:
        raise _bad(unknown[0], f"Unrecognized request argument supplied: {', '.join(unknown)}", "unknown_parameter")
    options: dict[str, Any] = {"max_tokens": default_max_tokens, "temperature": DEFAULT_TEMPERATURE}
    adapter = models.adapter_for(body.get("model"))
    if adapter is not None:
        options["adapter"] = adapter
    for param, v in body.items():
        if v is None:  # JSON null means "not given" in OpenAI's API
            continue
        if param in _SAMPLING:
            field, check = _SAMPLING[param]
            options[field] = check(param, v)
        elif param in _DEFAULT_ONLY:
            _default_only(param, v)
    if "adapter_scale" in options and adapter is None:
        raise _bad("adapter_scale", "adapter_scale needs a model of the form 'base:adapter'")
    stream = _optional(body, "stream", _boolean, False)
    return options, stream, _include_usage(body.get("stream_options"), stream)


def _include_usage(v: Any, stream: bool) -> bool:
    if v is None:
        return False
    if not stream:
        raise _bad("stream_options", "stream_options is only allowed when stream is true")
    if not isinstance(v, dict):
        raise _bad("stream_options", f"stream_options must be an object, got {_kind(v)}")
    include = v.get("include_usage")
    return False if include is None else _boolean("stream_options.include_usage", include)


def _max_tokens(body: Mapping, options: dict) -> None:
    """max_completion_tokens is the newer name of max_tokens; both given must agree."""
    n = _optional(body, "max_completion_tokens", _integer(1), None)
    if n is None:
        return
    if body.get("max_tokens") is not None and body["max_tokens"] != n:
        raise _bad("max_completion_tokens", "max_tokens and max_completion_tokens differ; give one of them")
    options["max_tokens"] = n


# --- chat ---------------------------------------------------------------------------------------


def _text_content(i: int, content: Any) -> Any:
    """A message's content as the engine takes it: text parts joined (this server runs text models)."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else _kind(part)
            raise _bad(f"messages[{i}].content[{j}]", f"content part of type {kind!r} is not supported; this server reads text parts only")
        texts.append(part["text"])
    return "\n".join(texts)  # as vLLM joins text parts


def _message(i: int, m: Any) -> dict:
    if not isinstance(m, dict):
        raise _bad(f"messages[{i}]", f"messages[{i}] must be an object, got {_kind(m)}")
    role = m.get("role")
    if role not in _ROLES:
        raise _bad(f"messages[{i}].role", f"messages[{i}].role must be one of {', '.join(_ROLES)}, got {role!r}")
    out = {k: v for k, v in m.items() if v is not None}
    # "developer" is OpenAI's newer name for the system turn; chat templates know "system".
    out["role"] = "system" if role == "developer" else role
    if "content" in out:
        out["content"] = _text_content(i, out["content"])
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise _bad(f"messages[{i}].tool_call_id", "a tool message needs the string tool_call_id of the call it answers")
    return out


def _messages(v: Any) -> list[dict]:
    from ..llm._chat import normalize_messages

    if not isinstance(v, list) or not v:
        raise _bad("messages", f"messages must be a non-empty array, got {_kind(v) if not isinstance(v, list) else 'an empty array'}")
    messages = [_message(i, m) for i, m in enumerate(v)]
    _engine_check("messages", lambda: normalize_messages(messages))
    return messages


def _engine_check(param: str | None, check: Callable[[], Any]) -> None:
    """Run one of the engine's own validators now, so a bad request is a 400 before it waits in the queue."""
    try:
        check()
    except GenerationError as exc:
        raise _bad(param, str(exc)) from None


def _tools(body: Mapping, options: dict) -> None:
    from ..llm._tools import ToolSet

    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = _optional(body, "parallel_tool_calls", _boolean, True)
    if tools is None:
        if choice not in (None, "none"):
            raise _bad("tool_choice", "tool_choice is only allowed when tools are specified")
        return
    _engine_check("tools", lambda: ToolSet(tools))
    options["tools"] = tools
    if choice is not None:
        _engine_check("tool_choice", lambda: ToolSet(tools, choice))
        options["tool_choice"] = choice
    options["parallel_tool_calls"] = parallel


def _response_format(v: Any, options: dict) -> None:
    from ..llm._config import GenerationConfig
    from ..llm._constrain import grammar_for

    kind = v.get("type") if isinstance(v, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad("response_format", f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
    if kind != "text":
        _engine_check("response_format", lambda: grammar_for(GenerationConfig(response_format=v)))
        options["response_format"] = v


_CHAT_ONLY = frozenset({"messages", "max_completion_tokens", "response_format", "tools", "tool_choice", "parallel_tool_calls", "logprobs"})


def parse_chat(body: Mapping, models: Models, default_max_tokens: int) -> GenerationRequest:
    """A ``/v1/chat/completions`` body, validated."""
    options, stream, include_usage = _common(body, models, default_max_tokens, _CHAT_ONLY)
    messages = _messages(body.get("messages"))
    _max_tokens(body, options)
    if body.get("logprobs") not in (None, False):
        raise _bad("logprobs", "logprobs are not supported by this server", "unsupported_parameter")
    _tools(body, options)
    if body.get("response_format") is not None:
        _response_format(body["response_format"], options)
    return _request(body, messages, options, stream, include_usage)


# --- completions --------------------------------------------------------------------------------


def _prompt(v: Any) -> Any:
    """One prompt: a string or token ids (OpenAI also allows a batch; this server answers one per request)."""
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
        v = v[0]
    if isinstance(v, str):
        if not v:
            raise _bad("prompt", "prompt is empty")
        return v
    if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
        return v
    if isinstance(v, list) and len(v) > 1 and all(isinstance(p, (str, list)) for p in v):
        raise _bad("prompt", f"a batch of {len(v)} prompts is not supported; send one request per prompt")
    raise _bad("prompt", f"prompt must be a non-empty string or array of token ids, got {_kind(v)}")


_COMPLETION_ONLY = frozenset({"prompt", "logprobs"})


def parse_completion(body: Mapping, models: Models, default_max_tokens: int) -> GenerationRequest:
    """A ``/v1/completions`` body, validated."""
    options, stream, include_usage = _common(body, models, default_max_tokens, _COMPLETION_ONLY)
    if body.get("logprobs") not in (None, 0):
        raise _bad("logprobs", "logprobs are not supported by this server", "unsupported_parameter")
    return _request(body, _prompt(body.get("prompt")), options, stream, include_usage)


def _request(body: Mapping, prompt: Any, options: dict, stream: bool, include_usage: bool) -> GenerationRequest:
    from ..llm import GenerationConfig

    # The engine's own option checks (the same ones generate_stream runs), before the queue.
    _engine_check(None, lambda: GenerationConfig.from_kwargs(**options))
    given = body.get("max_tokens") is not None or body.get("max_completion_tokens") is not None
    return GenerationRequest(body["model"], prompt, options, stream, include_usage, given)
