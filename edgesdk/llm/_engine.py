"""The generation engine: prompt handling, KV-cache reuse, sampling loop, speculative decoding, stats."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Iterator, Mapping, Sequence

import numpy as np

from .._errors import ContextLengthError, GenerationError, StructuredOutputError
from ._chat import render_chat, template_for
from ._config import GenerationConfig, GenerationStats, Reply
from ._constrain import Constraint, grammar_for
from ._gguf import GGUFFile
from ._lora import load_adapters
from ._model import DEFAULT_KV_DTYPE, TokenCache, Transformer, check_kv_dtype
from ._perplexity import PerplexityResult, perplexity_from_logits
from ._sampling import apply_repetition_penalty, probabilities, sample
from ._tokenizer import Tokenizer
from ._tools import OPEN as TOOL_OPEN
from ._tools import ToolSet
from ._weights import check_impl

__all__ = ["LLM", "TextStream"]

log = logging.getLogger(__name__)

# Prompt tokens per forward call: bounds the attention scratch (heads x chunk x context floats).
PREFILL_CHUNK = 512


class LLM:
    """A GGUF language model with its tokenizer, chat template and one conversation KV cache.

    Not a public entry point by itself: apps reach it through ``edgesdk.Session(path)`` (the cpu
    backend's runner). ``impl`` is "numpy" (reference) or "c" (the C kernels; "kernels" is a deprecated alias); None follows EDGESDK_KERNELS.
    ``activations`` "int8" (default, fast, llama.cpp's arithmetic) or "f32" (exact) for the kernels.
    ``model_factory(gguf)`` replaces the CPU :class:`Transformer` with another forward pass (another
    backend's: it needs ``cfg``, ``impl``, ``new_cache(n_ctx)`` and ``forward(ids, cache, logits=)``);
    ``impl``/``activations``/``threads`` then do not apply, and ``kv_dtype`` must be None or "f32".
    ``kv_dtype`` is how the KV cache stores keys/values (:data:`edgesdk.llm._model.KV_DTYPES`):
    "f32" (as computed), "f16" (half the memory; None: the default,
    :data:`edgesdk.llm._model.DEFAULT_KV_DTYPE`) or "q8_0" (llama.cpp's 8-bit blocks, 0.27x).
    ``adapters`` maps names to GGUF LoRA files (:mod:`edgesdk.llm._lora`), loaded and checked against
    this model now; a generation picks one (``adapter=``) for its own KV cache only, so ``logits``
    and ``perplexity`` always score with the base model.
    """

    def __init__(
        self,
        path,
        *,
        n_ctx: int | None = None,
        threads: int | None = None,
        impl: str | None = None,
        activations: str = "int8",
        model_factory=None,
        kv_dtype: str | None = None,
        adapters=None,
    ):
        if n_ctx is not None and (not isinstance(n_ctx, int) or n_ctx < 2):
            raise GenerationError(f"n_ctx must be an int >= 2, got {n_ctx!r}")
        if activations not in ("int8", "f32"):
            raise GenerationError(f"activations must be 'int8' or 'f32', got {activations!r}")
        impl = check_impl(impl)
        if kv_dtype is None:
            kv_dtype = "f32" if model_factory is not None else DEFAULT_KV_DTYPE
        check_kv_dtype(kv_dtype)  # before the file is opened; the model checks its head_dim
        if model_factory is not None and kv_dtype != "f32":
            # Another backend's forward pass keeps its own cache: silently storing f32 would defeat the ask.
            raise GenerationError(f"kv_dtype {kv_dtype!r} applies to the CPU forward pass only; this model_factory keeps an f32 KV cache")
        self.gguf = GGUFFile(path)
        self.config = self.gguf.config()
        self.tokenizer = Tokenizer(self.gguf)
        #: The chat template rendered for message prompts: the file's, else its architecture's built-in one.
        self.chat_template = template_for(self.tokenizer.chat_template, self.config.arch.chat_template)
        if model_factory is None:
            self.model = Transformer(self.gguf, impl=impl, threads=threads, activations=activations, kv_dtype=kv_dtype)
        else:
            self.model = model_factory(self.gguf)
        self.cache = self.model.new_cache(n_ctx)
        self.last_stats: GenerationStats | None = None
        #: LoRA adapters by name (see :meth:`_use_adapter`); the key of the one the cache was built with.
        try:
            self.adapters: dict = load_adapters(self.model, adapters)
        except Exception:
            self.close()  # the base's mapping and buffers are not left behind by a bad adapter
            raise
        self._adapter_key = None
        self._lock = threading.Lock()
        self._owner: int | None = None  # thread whose generation holds _lock

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    @property
    def impl(self) -> str:
        return self.model.impl

    @property
    def kv_dtype(self) -> str:
        """How the KV cache stores keys/values (another backend's model: "f32", its own cache)."""
        return getattr(self.model, "kv_dtype", "f32")

    # --- prompts -------------------------------------------------------------------------------

    def prompt_ids(self, prompt, add_generation_prompt: bool = True, tools: ToolSet | None = None) -> list[int]:
        """Token ids for a str (encoded as is), a list of chat messages (chat template), or token ids.

        ``tools`` (a chat only): the functions the reply may call, rendered into the prompt.
        """
        if tools is not None and (isinstance(prompt, str) or not isinstance(prompt, Sequence) or not all(isinstance(m, Mapping) for m in prompt)):
            raise GenerationError("tools need a chat prompt (a list of messages), so the functions can be put before the conversation")
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, np.ndarray) or (isinstance(prompt, Sequence) and prompt and all(isinstance(i, (int, np.integer)) for i in prompt)):
            ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
            bad = [i for i in ids if not 0 <= i < self.tokenizer.vocab_size]
            if bad:
                raise GenerationError(f"token ids out of range [0, {self.tokenizer.vocab_size}): {bad[:5]}")
        elif isinstance(prompt, Sequence):
            text = self.apply_chat_template(prompt, add_generation_prompt, tools=tools)
            # The template writes the BOS text itself when the model wants one.
            ids = self.tokenizer.encode(text, add_bos=False)
        else:
            raise GenerationError(f"prompt must be a str, a list of chat messages or token ids, got {type(prompt).__name__}")
        if not ids:
            raise GenerationError("the prompt is empty")
        return ids

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tools: ToolSet | None = None) -> str:
        tok = self.tokenizer
        native = tools is not None and tools.native(self.chat_template)
        if tools is not None:
            messages = tools.messages_for(messages, self.chat_template)
        return render_chat(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=tok.token_text(tok.bos_id),
            eos_token=tok.token_text(tok.eos_id),
            tools=tools.template_tools() if native else None,
        )

    # --- generation ----------------------------------------------------------------------------

    def generate(self, prompt, config: GenerationConfig | None = None, **kwargs) -> Reply:
        """The whole reply (a :class:`Reply`: a str with ``tool_calls``, ``stop_reason``, ``stats``)."""
        stream = self.generate_stream(prompt, config, **kwargs)
        for _ in stream:
            pass
        return stream.reply

    def generate_stream(self, prompt, config: GenerationConfig | None = None, **kwargs) -> "TextStream":
        """Text pieces as they are decoded (a :class:`TextStream`; ``.reply`` once it ends).

        Validation (options, prompt, grammar) happens now; work starts at the first ``next()``.
        Closing the iterator (or breaking out of a for loop) stops generation; ``last_stats`` then
        has ``stop_reason == "cancelled"``. With ``tools``, the pieces are the reply's text content:
        call markup is held back and parsed into ``reply.tool_calls``.
        """
        cfg = GenerationConfig.from_kwargs(config, **kwargs)
        if cfg.tools is None and cfg.tool_choice != "auto":
            raise GenerationError(f"tool_choice {cfg.tool_choice!r} needs tools")
        tools = ToolSet(cfg.tools, cfg.tool_choice, cfg.parallel_tool_calls) if cfg.tools is not None else None
        ids = self.prompt_ids(prompt, cfg.add_generation_prompt, tools=tools)
        if len(ids) + cfg.max_tokens > self.n_ctx:
            raise ContextLengthError(
                f"prompt ({len(ids)} tokens) + max_tokens ({cfg.max_tokens}) exceed the context length {self.n_ctx}",
                room=max(0, self.n_ctx - len(ids)),
            )
        draft = _resolve_draft(cfg.draft, self) if cfg.draft is not None else None
        self._check_adapter(cfg)
        grammar = grammar_for(cfg, tools)
        con = Constraint(self.tokenizer, *grammar) if grammar is not None else None
        self._check_not_suspended(draft)
        stream = TextStream()
        stream._gen = self._stream(ids, cfg, draft, con, tools, stream)
        return stream

    def _prefill(self, ids: list[int], cache: TokenCache) -> tuple[np.ndarray, int]:
        """Bring ``cache`` to hold ``ids``, reusing its longest common prefix; logits of the last id."""
        reuse = cache.common_prefix(ids)
        if reuse == len(ids):
            reuse -= 1  # the last token must be run again to get its logits
        cache.truncate(reuse)
        reuse = len(cache)  # a sliding-window cache may have had to drop more than asked
        logits = None
        for s in range(reuse, len(ids), PREFILL_CHUNK):
            logits = self.model.forward(ids[s : s + PREFILL_CHUNK], cache)
        return logits, reuse

    def _check_not_suspended(self, draft: "LLM | None") -> None:
        # A stream left open in this thread holds the lock while suspended: waiting for it would hang.
        me = threading.get_ident()
        for m in (self, draft):
            if m is not None and m._owner == me:
                raise GenerationError("a previous generate_stream() on this model is still open in this thread; exhaust or close() it first")

    def _stream(self, ids, cfg: GenerationConfig, draft: "LLM | None", con, tools, stream: "TextStream") -> Iterator[str]:
        self._check_not_suspended(draft)
        # The draft's KV cache is mutated too; its lock keeps another thread's use of it out meanwhile.
        with self._lock, draft._lock if draft is not None else contextlib.nullcontext():
            self._owner = threading.get_ident()
            if draft is not None:
                draft._owner = self._owner
            try:
                yield from self._generate_locked(ids, cfg, draft, con, tools, stream)
            finally:
                self._owner = None
                if draft is not None:
                    draft._owner = None

    def _generate_locked(
        self, ids, cfg: GenerationConfig, draft: "LLM | None", con: Constraint | None, tools: ToolSet | None, stream: "TextStream"
    ) -> Iterator[str]:
        t0 = time.perf_counter()
        rng = np.random.default_rng(cfg.seed)
        tok = self.tokenizer
        dec = tok.stream_decoder(cfg.skip_special_tokens)
        stops = _StopMatcher(cfg.stop)
        text = _ReplyText(TOOL_OPEN if tools is not None else None)
        history = list(ids)  # prompt + generated ids (for penalties and prompt lookup)
        n_gen = 0
        drafted = accepted = passes = 0
        reason = "max_tokens"
        t_first = None
        cached = 0
        prefill_s = 0.0
        mode = cfg.speculation
        try:
            if cfg.max_tokens == 0:
                return
            self._use_adapter(cfg)
            if con is not None:
                con.prefetch()
            logits, cached = self._prefill(ids, self.cache)
            prefill_s = time.perf_counter() - t0
            passes += 1
            pending: list[np.ndarray] = [logits]  # target logits not yet turned into tokens
            spec_state: list = []  # (draft token, draft distribution or None) awaiting verification
            unfed: list[int] = []  # chosen tokens whose keys/values are not in the cache yet
            forced: list[int] = []  # tokens the grammar allows alone: chosen without a forward pass
            while True:
                if not pending and not forced and con is not None:
                    forced = con.forced_tokens()
                in_cache = False  # a verified draft's keys/values are in the cache already
                if forced:
                    token = forced.pop(0)
                else:
                    if not pending:
                        # Need new target logits: run the chosen tokens, plus any draft tokens to verify.
                        proposal = self._propose(history, cfg, draft, rng, cfg.max_tokens - n_gen - 1, con) if mode else []
                        feed = unfed + [d for d, _ in proposal]
                        if con is not None:
                            con.prefetch()
                        out = self.model.forward(feed, self.cache, logits="all" if proposal else "last")
                        passes += 1
                        pending = list(out[len(unfed) - 1 :]) if proposal else [out]
                        spec_state = proposal
                        drafted += len(proposal)
                        kept = len(self.cache) - len(proposal)  # cache length once every draft is rejected
                        unfed = []
                    lg = apply_repetition_penalty(pending.pop(0), history, cfg.repetition_penalty)
                    if con is not None:
                        lg = con.apply(lg)
                    if spec_state:
                        d, q = spec_state.pop(0)
                        token, ok = _verify(lg, d, q, cfg, rng)
                        if ok:
                            accepted += 1
                            kept += 1
                            in_cache = True
                        else:
                            # Rejected: drop the remaining drafts and their keys/values.
                            self.cache.truncate(kept)
                            pending, spec_state = [], []
                    else:
                        token = sample(lg, cfg, rng)
                if t_first is None:
                    t_first = time.perf_counter()
                n_gen += 1
                history.append(token)
                if not in_cache:
                    unfed.append(token)
                if con is not None:
                    con.consume(token)
                if token in tok.stop_ids and not cfg.ignore_eos:
                    reason = "eos"
                    break
                piece, hit = stops.push(dec.push(token))
                piece = text.push(piece)
                if piece:
                    yield piece
                if hit:
                    reason = "stop"
                    break
                if con is not None and con.finished:
                    reason = "eos"
                    break
                if n_gen >= cfg.max_tokens:
                    break
            # Text held back as a possible stop-string prefix is real output once generation ends.
            tail = text.push(stops.flush(dec.flush()) if reason != "stop" else "", final=True)
            if tail:
                yield tail
            stream.reply = self._reply(text, reason, con, tools)
        except GeneratorExit:
            reason = "cancelled"
            raise
        finally:
            t_end = time.perf_counter()
            self.last_stats = GenerationStats(
                prompt_tokens=len(ids),
                cached_tokens=cached,
                prefilled_tokens=len(ids) - cached if cfg.max_tokens else 0,
                generated_tokens=n_gen,
                ttft_s=(t_first - t0) if t_first else float("nan"),
                prefill_s=prefill_s,
                decode_s=(t_end - t_first) if t_first else 0.0,
                stop_reason=reason,
                speculative=mode,
                drafted_tokens=drafted,
                accepted_tokens=accepted,
                forward_passes=passes,
            )
            log.debug("generation: %s", self.last_stats.summary())
            if stream.reply is not None:
                stream.reply.stats = self.last_stats
            if con is not None:
                con.close()

    def _reply(self, text: "_ReplyText", reason: str, con: Constraint | None, tools: ToolSet | None) -> Reply:
        """The finished reply, checked: constrained output that is incomplete or invalid is an error."""
        full = text.full
        if con is not None:
            complete = con.accepting if reason in ("eos", "max_tokens") else con.matches(full)
            if not complete:
                why = "max_tokens ended" if reason == "max_tokens" else "a stop string cut"
                raise StructuredOutputError(f"{why} the output before its {con.source} was complete ({len(full)} characters)", partial=full)
            if con.source == "response_format":
                try:
                    json.loads(full)
                except ValueError as exc:  # the grammar makes this unreachable; the promise is kept regardless
                    raise StructuredOutputError(f"the output is not JSON ({exc})", partial=full) from None
        calls = ()
        if tools is not None:
            _, calls = tools.parse(full)
        return Reply(text.content, calls, "tool_calls" if calls else reason)

    def _propose(
        self, history: list[int], cfg: GenerationConfig, draft, rng, budget: int, con: Constraint | None = None
    ) -> list[tuple[int, np.ndarray | None]]:
        """Draft tokens (with the draft's distribution when sampling) to verify in one forward pass.

        Under a grammar the draft is cut at its first token the grammar forbids (it would be rejected).
        """
        out = self._draft(history, cfg, draft, rng, budget)
        if con is not None and out:
            out = out[: con.valid_prefix([t for t, _ in out])]
        return out

    def _draft(self, history: list[int], cfg: GenerationConfig, draft, rng, budget: int) -> list[tuple[int, np.ndarray | None]]:
        k = min(cfg.num_draft_tokens, budget, self.n_ctx - len(history) - 1)
        if k <= 0:
            return []
        if draft is None:
            return [(t, None) for t in prompt_lookup(history, k, cfg.ngram_max)]
        if len(history) + k > draft.n_ctx:
            return []
        logits, _ = draft._prefill(history, draft.cache)
        out = []
        for i in range(k):
            lg = apply_repetition_penalty(logits, history + [t for t, _ in out], cfg.repetition_penalty)
            if cfg.greedy:
                t, q = int(np.argmax(lg)), None
            else:
                q = probabilities(lg, cfg)
                t = int(rng.choice(q.shape[0], p=q))
            out.append((t, q))
            if (t in self.tokenizer.stop_ids and not cfg.ignore_eos) or i == k - 1:
                break
            logits = draft.model.forward([t], draft.cache)
        return out

    # --- LoRA adapters -------------------------------------------------------------------------

    def _check_adapter(self, cfg: GenerationConfig) -> None:
        """Refuse a request for an adapter this model was not opened with (before any work starts)."""
        if cfg.adapter is not None and cfg.adapter not in self.adapters:
            have = ", ".join(sorted(self.adapters)) or "none were given (Session(model, adapters={name: path}))"
            raise GenerationError(f"unknown adapter {cfg.adapter!r}; this model's adapters: {have}")

    def _use_adapter(self, cfg: GenerationConfig) -> None:
        """Bind ``cfg``'s adapter (or none) to the conversation cache; binding empties it, so keys/values
        computed with another adapter (or another scale) are never reused."""
        key = (cfg.adapter, float(cfg.adapter_scale)) if cfg.adapter is not None else None
        if key != self._adapter_key:
            self.model.set_adapter(self.cache, self.adapters[cfg.adapter] if key else None, key[1] if key else 0.0)
            self._adapter_key = key

    # --- scoring -------------------------------------------------------------------------------

    def logits(self, ids) -> np.ndarray:
        """Logits (T, vocab) for every position of ``ids``, in a scratch cache (the chat cache is kept)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if len(ids) > self.n_ctx:
            raise ContextLengthError(f"{len(ids)} tokens exceed the context length {self.n_ctx}")
        cache = self.model.new_cache(len(ids))
        return self.model.forward(ids, cache, logits="all")

    def perplexity(self, text: str, n_ctx: int = 512, max_chunks: int | None = None) -> PerplexityResult:
        """llama.cpp-compatible perplexity of ``text`` (see :mod:`edgesdk.llm._perplexity` for the method)."""
        if n_ctx > self.config.n_ctx_train:
            raise ContextLengthError(f"n_ctx {n_ctx} exceeds the model's training context {self.config.n_ctx_train}")
        tokens = self.tokenizer.encode(text, add_bos=False)
        bos = self.tokenizer.bos_id if self.tokenizer.add_bos else None
        cache = self.model.new_cache(n_ctx)

        def score(chunk: list[int], first: int) -> np.ndarray:
            cache.truncate(0)
            parts = []
            for s in range(0, len(chunk), PREFILL_CHUNK):
                seg = chunk[s : s + PREFILL_CHUNK]
                parts.append(self.model.forward(seg, cache, logits=max(0, first - s)))
            return np.concatenate(parts)

        return perplexity_from_logits(tokens, n_ctx, score, bos_id=bos, max_chunks=max_chunks)

    def reset(self) -> None:
        """Forget the conversation cache."""
        self.cache.truncate(0)

    def close(self) -> None:
        model, self.cache, self.model = self.model, None, None
        if hasattr(model, "close"):
            model.close()  # device buffers of an accelerator backend's model
        self.gguf.close()


def prompt_lookup(history: Sequence[int], k: int, ngram_max: int) -> list[int]:
    """Draft up to ``k`` tokens by finding the latest earlier occurrence of the context's last n-gram.

    Longer n-grams are tried first (fewer false matches); the draft is what followed that occurrence.
    """
    h = np.asarray(history, np.int64)
    n_hist = h.shape[0]
    for n in range(min(ngram_max, n_hist - 1), 0, -1):
        pattern = h[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(h[:-1], n)
        hits = np.nonzero((windows == pattern).all(axis=1))[0]
        if hits.size:
            start = int(hits[-1]) + n
            return [int(t) for t in h[start : start + k]]
    return []


def _verify(logits: np.ndarray, d: int, q: np.ndarray | None, cfg: GenerationConfig, rng) -> tuple[int, bool]:
    """Accept draft ``d`` or return the replacement token (speculative sampling keeps p's distribution)."""
    if cfg.greedy:
        t = int(np.argmax(logits))
        return t, t == d
    p = probabilities(logits, cfg)
    qd = 1.0 if q is None else q[d]
    if rng.random() < min(1.0, p[d] / qd):
        return d, True
    resid = p.copy()
    if q is None:
        resid[d] = 0.0
    else:
        resid = np.maximum(p - q, 0.0)
    s = resid.sum()
    if s <= 0:
        return int(rng.choice(p.shape[0], p=p)), False
    return int(rng.choice(p.shape[0], p=resid / s)), False


def _resolve_draft(obj, target: LLM) -> LLM:
    """The LLM behind a Session, a runner or an LLM, checked to share the target's vocabulary."""
    seen = obj
    for _ in range(4):
        if isinstance(obj, LLM):
            break
        obj = getattr(obj, "llm", None) or getattr(obj, "runner", None)
    if not isinstance(obj, LLM):
        raise GenerationError(f"draft must be an edgesdk Session or runner of a GGUF model, got {type(seen).__name__}")
    if obj is target:
        raise GenerationError("the draft model must be a different Session than the target")
    if obj.tokenizer.fingerprint != target.tokenizer.fingerprint:
        raise GenerationError(
            f"draft vocabulary ({obj.tokenizer.vocab_size} tokens) does not match the target's "
            f"({target.tokenizer.vocab_size} tokens); speculative decoding needs identical vocabularies"
        )
    return obj


class TextStream:
    """The text pieces of one generation, as an iterator; ``close()`` (or leaving a for loop) cancels.

    ``reply`` is the finished :class:`Reply` (None until the stream is exhausted, or if it was
    cancelled or failed); ``stats`` its :class:`GenerationStats`.
    """

    def __init__(self):
        self._gen: Iterator[str] | None = None
        self.reply: Reply | None = None

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    @property
    def stats(self) -> GenerationStats | None:
        return self.reply.stats if self.reply is not None else None


class _ReplyText:
    """The reply's text as it streams: everything (``full``) and the content outside tool calls.

    With a tool-call opener, text that may be the start of one is held back, and from the opener
    on nothing more is content (it is the calls' markup, parsed at the end).
    """

    def __init__(self, opener: str | None):
        self._opener = _StopMatcher((opener,)) if opener else None
        self._parts: list[str] = []
        self._content: list[str] = []
        self._in_calls = False

    def push(self, piece: str, final: bool = False) -> str:
        self._parts.append(piece)
        if self._opener is None:
            shown = piece
        elif self._in_calls:
            shown = ""
        elif final:
            shown = self._opener.flush(piece)
        else:
            shown, self._in_calls = self._opener.push(piece)
        self._content.append(shown)
        return shown

    @property
    def full(self) -> str:
        return "".join(self._parts)

    @property
    def content(self) -> str:
        return "".join(self._content)


class _StopMatcher:
    """Holds back text that may be the start of a stop string; reports when one completes."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.buf = ""

    def push(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        self.buf += piece
        first = min((i for i in (self.buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            out, self.buf = self.buf[:first], ""
            return out, True
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out = self.buf[: len(self.buf) - hold]
        self.buf = self.buf[len(self.buf) - hold :]
        return out, False

    def flush(self, piece: str) -> str:
        out, hit = self.push(piece)
        if hit:
            return out
        out, self.buf = out + self.buf, ""
        return out
