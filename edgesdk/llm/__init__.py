"""On-device LLM runtime: GGUF loading, tokenizer, forward pass, sampling, speculative decoding.

Apps use it through ``edgesdk.Session`` (the built-in ``cpu`` backend runs GGUF files)::

    s = edgesdk.Session("SmolLM2-135M-Instruct.Q4_1.gguf")
    s.generate("Name three uses of an NPU.", max_tokens=64)
    for piece in s.generate_stream([{"role": "user", "content": "Hi"}], temperature=0.7, top_p=0.9, seed=1):
        print(piece, end="")
    s.generate(chat, response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    s.generate(chat, tools=[{"type": "function", "function": {...}}]).tool_calls   # [ToolCall]
    s.runner.last_stats            # GenerationStats: prompt/cached tokens, ttft, tok/s, acceptance
    s.runner.perplexity(text)      # PerplexityResult, llama.cpp's method
    s.runner.tokenizer             # Tokenizer: encode/decode, chat template, stop ids

Generation keywords are the fields of :class:`GenerationConfig`. A second turn of a chat reuses
the KV cache of the first (the longest common token prefix is never recomputed).
``speculative="prompt_lookup"`` drafts from n-grams of the context; ``draft=<Session>`` uses a
smaller model with the same vocabulary. Both keep greedy output bit-identical.

Environment: ``EDGESDK_KERNELS=numpy`` runs the pure-numpy reference; ``EDGESDK_LLM_FUSED=0``
keeps the kernels but drops the fused C layer loop (``edgesdk._cllm``).
"""

from ._config import GenerationConfig, GenerationStats, Reply
from ._engine import LLM, TextStream, prompt_lookup
from ._gguf import GGUFFile, LayerPlan, ModelConfig
from .arch import ARCHITECTURES, Architecture
from ._perplexity import PerplexityResult
from ._runner import LlmRunner
from ._tokenizer import Tokenizer
from ._tools import ToolCall

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "GGUFFile",
    "GenerationConfig",
    "GenerationStats",
    "LLM",
    "LayerPlan",
    "LlmRunner",
    "ModelConfig",
    "PerplexityResult",
    "Reply",
    "TextStream",
    "Tokenizer",
    "ToolCall",
    "prompt_lookup",
]
