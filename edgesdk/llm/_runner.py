"""The Runner every GGUF-running backend hands to Session, and the GGUF checks they share.

A backend differs only in the forward pass it gives :class:`edgesdk.llm.LLM` (``model_factory``);
tokenizer, chat template, sampling, streaming and KV reuse are the engine's, so the runner surface
(``run``/``generate``/``generate_stream``/``perplexity``/``tokenizer``/``last_stats``/...) is this one.
"""

from __future__ import annotations

import numpy as np

from .._errors import GenerationError
from ..backend import Runner, TensorSpec

__all__ = ["LlmRunner", "gguf_refusal"]


def gguf_refusal(model, computes=None, implements=None) -> str | None:
    """Why the LLM runtime on a backend cannot run ``model``, or None if it can.

    ``computes``: the tensor types the backend computes (names from ``edgesdk.quant.TYPES``; None:
    all of them). ``implements``: the forward-pass primitives (``edgesdk.llm.arch.FEATURES``) it
    implements (None: all). The reason names the architecture and the primitives it lacks, or each
    missing type with the tensor kinds that use it.
    """
    from ..quant import TYPES
    from .arch import ARCHITECTURES, FEATURES

    arch = model.info.get("architecture")
    if arch is not None and arch not in ARCHITECTURES:
        return f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
    needs = set(model.info.get("features") or (ARCHITECTURES[arch].features if arch else ()))
    missing = sorted(needs - set(FEATURES if implements is None else implements))
    if missing:
        return f"this backend does not implement {', '.join(missing)}, which {arch} needs"
    kinds = model.info.get("tensor_kinds") or {t: [] for t in model.info.get("tensor_types", ())}
    have = set(TYPES) if computes is None else set(computes) & set(TYPES)

    def named(ts):
        return ", ".join(f"{t} ({', '.join(kinds[t])})" if kinds.get(t) else t for t in ts)

    unknown = sorted(set(kinds) - set(TYPES))
    if unknown:
        return f"tensor types {named(unknown)} are not supported by edgesdk (supported: {', '.join(TYPES)})"
    lacking = sorted(set(kinds) - have)
    if lacking:
        return f"this backend does not compute {named(lacking)} (it computes: {', '.join(t for t in TYPES if t in have)})"
    return None


class LlmRunner(Runner):
    """A GGUF language model on one device.

    ``run({"input_ids": int64[1, n]})`` returns ``{"logits": float32[1, n, vocab]}`` computed in a
    scratch KV cache (the conversation cache used by ``generate`` is untouched).
    ``generate``/``generate_stream`` take :class:`edgesdk.llm.GenerationConfig` fields as keywords.
    """

    op_times_note = "the LLM engine's forward pass (one fused loop per token) records no per-op times"

    def __init__(self, llm, device_id: str):
        self.llm = llm
        vocab = llm.tokenizer.vocab_size
        self.inputs = (TensorSpec("input_ids", (1, "sequence"), np.int64),)
        self.outputs = (TensorSpec("logits", (1, "sequence", vocab), np.float32),)
        self.device_id = device_id

    def run(self, feeds, output_names=None):
        ids = np.asarray(feeds["input_ids"])
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise GenerationError(f"input_ids must have shape [1, n], got {list(ids.shape)}")
        return {"logits": self.llm.logits(ids[0])[None]}

    def generate(self, prompt, **kwargs) -> str:
        return self.llm.generate(prompt, **kwargs)

    def generate_stream(self, prompt, **kwargs):
        return self.llm.generate_stream(prompt, **kwargs)

    def perplexity(self, text: str, n_ctx: int = 512, max_chunks: int | None = None):
        return self.llm.perplexity(text, n_ctx=n_ctx, max_chunks=max_chunks)

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def last_stats(self):
        """:class:`edgesdk.llm.GenerationStats` of the latest generation (None before the first)."""
        return self.llm.last_stats

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        return self.llm.apply_chat_template(messages, add_generation_prompt)

    def reset(self) -> None:
        self.llm.reset()

    def close(self) -> None:
        self.llm.close()
