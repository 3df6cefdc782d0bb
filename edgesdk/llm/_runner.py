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


def gguf_refusal(model) -> str | None:
    """Why the LLM runtime cannot run ``model`` (architecture or tensor types), or None if it can."""
    from ._gguf import ARCHITECTURES, SUPPORTED_TENSOR_TYPES

    arch = model.info.get("architecture")
    if arch is not None and arch not in ARCHITECTURES:
        return f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
    bad = sorted(set(model.info.get("tensor_types", ())) - set(SUPPORTED_TENSOR_TYPES))
    if bad:
        return f"tensor types {', '.join(bad)} are not supported (supported: {', '.join(SUPPORTED_TENSOR_TYPES)})"
    return None


class LlmRunner(Runner):
    """A GGUF language model on one device.

    ``run({"input_ids": int64[1, n]})`` returns ``{"logits": float32[1, n, vocab]}`` computed in a
    scratch KV cache (the conversation cache used by ``generate`` is untouched).
    ``generate``/``generate_stream`` take :class:`edgesdk.llm.GenerationConfig` fields as keywords.
    """

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
