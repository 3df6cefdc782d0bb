"""Constrained decoding: what a request asks for (JSON schema, Lark/GBNF grammar, regex, tool calls)
compiled into a token mask per step by llguidance.

llguidance is the engine llama.cpp, ONNX Runtime GenAI, vLLM and SGLang ship: an Earley parser over a
derivative-based lexer, with masks in ~0.1-1 ms for 50k-260k vocabularies and the widest JSON-schema
coverage of the open engines. (xgrammar precomputes masks per grammar, which is fast for one fixed
schema but costs a compile step per new schema; requests here bring a new schema each time.)

The mask for the next token is computed on a worker thread while the forward pass runs: llguidance
and the C forward pass both release the GIL, so on a machine with a core to spare the mask is free.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import weakref
from typing import Any, Mapping

import numpy as np

from .._errors import GenerationError
from ._tools import JSON_LAYOUT

__all__ = ["Constraint", "grammar_for"]

_RESPONSE_TYPES = ("text", "json_object", "json_schema")

_tokenizers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _llg():
    import llguidance

    return llguidance


def _guidance_tokenizer(tokenizer, slices: str = "general"):
    """llguidance's view of ``tokenizer`` (its bytes per token), built once per tokenizer (~1 s / 50k tokens).

    ``slices`` "json" gives the variant whose precomputed token classes suit JSON grammars (Gemma's
    262k vocabulary: 1.6 instead of 2.2 ms per mask).
    """
    with _tokenizers_lock:
        by_slices = _tokenizers.get(tokenizer)
        if by_slices is None:
            by_slices = _tokenizers[tokenizer] = {"general": _build_tokenizer(tokenizer)}
        if slices not in by_slices:
            by_slices[slices] = by_slices["general"].with_slices(_llg().LLTokenizer.json_slices())
        return by_slices[slices]


def _build_tokenizer(tokenizer):
    llg = _llg()
    special = tokenizer.special_ids
    # Control tokens are marked with 0xff (llguidance's convention, as its llama.cpp binding does), so
    # grammar text never matches them and a grammar can name them as <token>.
    tokens = [(b"\xff" if i in special else b"") + tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]

    class _Wrapper:
        eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.stop_ids, default=0)
        bos_token_id = tokenizer.bos_id
        special_token_ids = sorted(special)

        def __call__(self, s):
            return tokenizer.encode(s.decode("utf-8", "replace") if isinstance(s, bytes) else s, continuation=True)

    _Wrapper.tokens = tokens
    eos = sorted(tokenizer.stop_ids) or [_Wrapper.eos_token_id]
    return llg.LLTokenizer(llg.TokenizerWrapper(_Wrapper()), eos_token=eos)


def _check_schema(schema: Any, what: str) -> dict:
    if not isinstance(schema, Mapping):
        raise GenerationError(f"{what} must be a JSON schema object, got {type(schema).__name__}")
    return dict(schema)


def response_schema(rf: Any) -> dict | None:
    """The JSON schema OpenAI's ``response_format`` (or a bare JSON schema) asks for; None for text."""
    if not isinstance(rf, Mapping):
        raise GenerationError(f"response_format must be a dict (OpenAI's response_format or a JSON schema), got {type(rf).__name__}")
    kind = rf.get("type")
    if kind not in _RESPONSE_TYPES:  # a JSON schema itself ({"type": "object", "properties": ...})
        return _check_schema(rf, "response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    spec = rf.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise GenerationError("response_format {'type': 'json_schema'} needs 'json_schema': {'name': ..., 'schema': {...}}")
    return _check_schema(spec["schema"], "response_format.json_schema.schema")


def _schema_grammar(schema: dict) -> str:
    try:
        return _llg().LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_LAYOUT)
    except (TypeError, ValueError) as exc:
        raise GenerationError(f"response_format is not a usable JSON schema: {exc}") from None


def grammar_for(cfg, tools=None) -> tuple[str, str] | None:
    """The llguidance grammar a request constrains its output with, and what it came from; None if free.

    ``tools`` is the request's :class:`edgesdk.llm._tools.ToolSet` (it brings its own grammar). With
    tools, ``response_format`` shapes the answer that is not a call; ``grammar``/``regex`` apply only
    under ``tool_choice="none"`` (there is no call then).
    """
    llg = _llg()
    given = [n for n in ("response_format", "grammar", "regex") if getattr(cfg, n) is not None]
    if len(given) > 1:
        raise GenerationError(f"at most one of response_format, grammar and regex may constrain the output; got {', '.join(given)}")
    if tools is not None and tools.choice != "none" and given and given[0] != "response_format":
        raise GenerationError(f"{given[0]} cannot be combined with tools unless tool_choice is 'none' (use response_format for a structured answer)")
    schema = response_schema(cfg.response_format) if cfg.response_format is not None else None
    if tools is not None and tools.choice != "none":
        return llg.LLMatcher.grammar_from_lark(tools.grammar(schema)), "tools"
    if cfg.response_format is not None:
        return None if schema is None else (_schema_grammar(schema), "response_format")
    if cfg.grammar is not None:
        if not isinstance(cfg.grammar, str) or not cfg.grammar.strip():
            raise GenerationError(f"grammar must be a non-empty Lark or GBNF grammar string, got {cfg.grammar!r}")
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            lark = any_to_lark(cfg.grammar)
        except Exception as exc:  # noqa: BLE001 -- the converter raises its own and builtin errors
            raise GenerationError(f"grammar is neither Lark (has 'start:') nor valid GBNF: {exc}") from None
        return llg.LLMatcher.grammar_from_lark(lark), "grammar"
    if cfg.regex is not None:
        if not isinstance(cfg.regex, str):
            raise GenerationError(f"regex must be a str, got {type(cfg.regex).__name__}")
        return llg.LLMatcher.grammar_from_regex(cfg.regex), "regex"
    if tools is not None:  # tool_choice "none" and nothing else: free text without call markup
        return llg.LLMatcher.grammar_from_lark(tools.grammar()), "tools"
    return None


def _mask_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _tokenizers_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgesdk-mask")
        return _pool


class Constraint:
    """One generation's grammar state: masks logits, follows the tokens chosen.

    Construction compiles the grammar (errors are :class:`GenerationError` naming ``source``).
    Call :meth:`prefetch` before a forward pass to compute the next mask alongside it.
    """

    def __init__(self, tokenizer, grammar: str, source: str):
        llg = _llg()
        self.source = source
        self._tokenizer = tokenizer
        self._llt = _guidance_tokenizer(tokenizer, "json" if source == "response_format" else "general")
        self.matcher = llg.LLMatcher(self._llt, grammar, log_level=0)
        if self.matcher.is_error():
            raise GenerationError(f"{source}: {self.matcher.get_error()}")
        self._bits = np.zeros((self._llt.vocab_size + 31) // 32, np.int32)
        self._masked: np.ndarray | None = None  # apply()'s output buffer, reused every step
        self._future: concurrent.futures.Future | None = None
        self._fresh = False  # _bits holds the mask of the current state

    @property
    def accepting(self) -> bool:
        """The output so far is complete: it may end here."""
        return self.matcher.is_accepting()

    @property
    def finished(self) -> bool:
        """The grammar allows nothing more than ending."""
        return self.matcher.is_stopped()

    def _compute(self) -> None:
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)

    def prefetch(self) -> None:
        if self._future is None and not self._fresh:
            self._future = _mask_pool().submit(self._compute)

    def _mask(self) -> np.ndarray:
        if self._future is not None:
            self._future.result()
            self._future = None
        elif not self._fresh:
            self._compute()
        self._fresh = True
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little", count=self._llt.vocab_size).view(bool)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` with every token the grammar forbids next at -inf.

        The result is a buffer this object reuses at the next call: use it before then.
        """
        allowed = np.flatnonzero(self._mask())
        allowed = allowed[allowed < logits.shape[0]]  # a model may pad its vocabulary past the tokenizer's
        if not allowed.size:
            raise GenerationError(f"{self.source}: no token can continue the output ({self.matcher.get_error() or 'grammar dead end'})")
        out = self._masked
        if out is None or out.shape != logits.shape:
            out = self._masked = np.empty(logits.shape, np.float32)
        # Filling then scattering the allowed few is ~4x faster than a masked copy over 262k entries.
        out.fill(-np.inf)
        out[allowed] = logits[allowed]
        return out

    def consume(self, token: int) -> None:
        self._wait()
        if not self.matcher.consume_token(int(token)):
            raise GenerationError(f"{self.source}: token {token} breaks the grammar ({self.matcher.get_error()})")
        self._fresh = False

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar allows alone from here (``{"name": "`` of a fixed key): no need to sample them."""
        self._wait()
        return list(self.matcher.compute_ff_tokens())

    def valid_prefix(self, tokens: list[int]) -> int:
        """How many of ``tokens`` (a speculative draft) the grammar would accept in a row."""
        self._wait()
        return self.matcher.validate_tokens([int(t) for t in tokens]) if tokens else 0

    def matches(self, text: str) -> bool:
        """Whether ``text`` on its own is a complete output of this grammar (a fresh parse)."""
        self._wait()
        m = self.matcher.deep_copy()
        m.reset()
        # llguidance's own byte-greedy split: any split of the same bytes parses alike, and unlike
        # encode() it never adds a SentencePiece space prefix.
        return m.consume_tokens(self._llt.greedy_tokenize(text)) and m.is_accepting()

    def _wait(self) -> None:
        # The matcher must not change under a mask computation still running on the worker.
        if self._future is not None:
            self._future.result()
            self._future = None
            self._fresh = True

    def close(self) -> None:
        self._wait()
