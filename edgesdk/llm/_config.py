"""Generation parameters and the statistics reported after a generation."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .._errors import GenerationError

__all__ = ["GenerationConfig", "GenerationStats", "Reply"]

_SPECULATIVE = (None, "prompt_lookup", "draft")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise GenerationError(msg)


def _int(v):
    """numpy integers (a token count from an array) as Python ints; anything else is left to the checks."""
    return int(v) if isinstance(v, np.integer) else v


def _stop_converter(v) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    return tuple(v)


@attrs.frozen(kw_only=True)
class GenerationConfig:
    """How to generate. Every field is validated on construction with :class:`GenerationError`.

    ``temperature`` 0 means greedy. ``top_k`` 0 and ``top_p`` 1.0 disable those filters.
    ``repetition_penalty`` follows the CTRL/transformers rule (divide positive logits, multiply
    negative ones) over the prompt and generated tokens. ``stop`` strings end generation and are
    not included in the output. ``speculative``: ``None``, ``"prompt_lookup"`` (draft tokens copied
    from the context after a matching n-gram) or ``"draft"`` (implied by ``draft=``, another
    Session/runner with the same vocabulary). Speculation never changes greedy output, and with
    sampling it preserves the output distribution. ``ignore_eos`` keeps generating past
    end-of-turn tokens (benchmarks that need exactly ``max_tokens``).

    Constrained output (at most one of): ``response_format`` (OpenAI's: ``{"type": "json_object"}``,
    ``{"type": "json_schema", "json_schema": {"schema": {...}}}``, or a JSON schema dict itself),
    ``grammar`` (Lark, or GBNF as llama.cpp writes it) or ``regex``. The output always matches; if
    ``max_tokens`` ends first, :class:`edgesdk.errors.StructuredOutputError` carries the partial text.
    ``tools`` (OpenAI-style function list) with ``tool_choice`` ``"auto"``, ``"none"``, ``"required"``
    or ``{"type": "function", "function": {"name": ...}}``: the reply's ``tool_calls`` are parsed and
    validated against each function's parameters; ``parallel_tool_calls=False`` allows one call at most.
    ``adapter`` names a LoRA adapter the Session was
    opened with, applied at ``adapter_scale`` for this request only.
    """

    max_tokens: int = attrs.field(default=256, converter=_int)
    temperature: float = 0.0
    top_k: int = attrs.field(default=0, converter=_int)
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = attrs.field(default=None, converter=_int)
    stop: tuple[str, ...] = attrs.field(default=(), converter=_stop_converter)
    speculative: str | None = None
    draft: Any = attrs.field(default=None, eq=False, repr=False)
    num_draft_tokens: int = attrs.field(default=6, converter=_int)
    ngram_max: int = attrs.field(default=3, converter=_int)
    add_generation_prompt: bool = True
    skip_special_tokens: bool = True
    ignore_eos: bool = False
    response_format: Any = attrs.field(default=None, eq=False)
    grammar: str | None = None
    regex: str | None = None
    tools: Any = attrs.field(default=None, eq=False)
    tool_choice: Any = attrs.field(default="auto", eq=False)
    parallel_tool_calls: bool = True
    adapter: str | None = None
    adapter_scale: float = 1.0

    def __attrs_post_init__(self):
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 0, f"max_tokens must be an int >= 0, got {self.max_tokens!r}")
        _check(isinstance(self.temperature, (int, float)) and self.temperature >= 0, f"temperature must be >= 0, got {self.temperature!r}")
        _check(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an int >= 0, got {self.top_k!r}")
        _check(isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}")
        _check(isinstance(self.min_p, (int, float)) and 0 <= self.min_p < 1, f"min_p must be in [0, 1), got {self.min_p!r}")
        _check(
            isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0,
            f"repetition_penalty must be > 0, got {self.repetition_penalty!r}",
        )
        _check(self.seed is None or isinstance(self.seed, int), f"seed must be an int or None, got {self.seed!r}")
        _check(all(isinstance(s, str) and s for s in self.stop), f"stop must be non-empty strings, got {self.stop!r}")
        _check(self.speculative in _SPECULATIVE, f"speculative must be one of {_SPECULATIVE}, got {self.speculative!r}")
        _check(self.speculative != "draft" or self.draft is not None, "speculative='draft' needs draft=<Session or runner>")
        _check(isinstance(self.num_draft_tokens, int) and 1 <= self.num_draft_tokens <= 63, "num_draft_tokens must be in 1..63")
        _check(isinstance(self.ngram_max, int) and 1 <= self.ngram_max <= 8, "ngram_max must be in 1..8")
        _check(isinstance(self.parallel_tool_calls, bool), f"parallel_tool_calls must be a bool, got {self.parallel_tool_calls!r}")
        _check(self.adapter is None or (isinstance(self.adapter, str) and self.adapter), f"adapter must be an adapter name or None, got {self.adapter!r}")
        _check(
            isinstance(self.adapter_scale, (int, float)) and not isinstance(self.adapter_scale, bool) and np.isfinite(self.adapter_scale),
            f"adapter_scale must be a finite number, got {self.adapter_scale!r}",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def speculation(self) -> str | None:
        return "draft" if self.draft is not None else self.speculative

    @classmethod
    def from_kwargs(cls, config: "GenerationConfig | None" = None, **kwargs) -> "GenerationConfig":
        """A config from keyword arguments (``Session.generate(..., temperature=0.7)``); unknown names are errors."""
        fields = attrs.fields_dict(cls)
        unknown = sorted(set(kwargs) - set(fields))
        if unknown:
            raise GenerationError(f"unknown generation option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
        return attrs.evolve(config, **kwargs) if config is not None else cls(**kwargs)


@attrs.frozen(kw_only=True)
class GenerationStats:
    """What one generation did. ``acceptance_rate`` is accepted / drafted tokens (None without speculation).

    ``cached_tokens`` prompt tokens reused from the KV cache; ``prefilled_tokens`` prompt tokens computed.
    ``ttft_s`` time from the call to the first generated token; ``prompt_tok_s`` prefilled tokens per
    second of prefill; ``decode_tok_s`` generated tokens after the first, per second.
    """

    prompt_tokens: int
    cached_tokens: int
    prefilled_tokens: int
    generated_tokens: int
    ttft_s: float
    prefill_s: float
    decode_s: float
    stop_reason: str
    speculative: str | None = None
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    forward_passes: int = 0

    @property
    def prompt_tok_s(self) -> float:
        return self.prefilled_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tok_s(self) -> float:
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")

    @property
    def acceptance_rate(self) -> float | None:
        if self.speculative is None:
            return None
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    def summary(self) -> str:
        s = (
            f"prompt: {self.prompt_tokens} tokens ({self.cached_tokens} cached) at {self.prompt_tok_s:.1f} tok/s, "
            f"decode: {self.generated_tokens} tokens at {self.decode_tok_s:.1f} tok/s, ttft {self.ttft_s * 1000:.0f} ms"
        )
        if self.speculative:
            s += f", {self.speculative} acceptance {self.acceptance_rate:.0%} ({self.accepted_tokens}/{self.drafted_tokens})"
        return s


class Reply(str):
    """What ``generate`` returns: the reply's text (a ``str``), with its tool calls and why it ended.

    ``tool_calls``: :class:`edgesdk.llm.ToolCall` objects (empty without ``tools``); the text then
    holds only the content outside the calls. ``stop_reason``: "eos" (the model or the grammar
    ended it), "stop" (a stop string), "max_tokens", "tool_calls" (it ended with calls) or
    "cancelled". ``stats``: the :class:`GenerationStats` of this generation.
    """

    tool_calls: tuple
    stop_reason: str
    stats: "GenerationStats | None"

    def __new__(cls, text: str, tool_calls: tuple = (), stop_reason: str = "eos", stats: "GenerationStats | None" = None):
        self = super().__new__(cls, text)
        self.tool_calls = tuple(tool_calls)
        self.stop_reason = stop_reason
        self.stats = stats
        return self

    def __repr__(self) -> str:
        calls = f", tool_calls={list(self.tool_calls)!r}" if self.tool_calls else ""
        return f"Reply({str.__repr__(self)}{calls}, stop_reason={self.stop_reason!r})"
