"""On-device LLM runtime: GGUF loading, tokenizer, forward pass, sampling, speculative decoding.

Apps use it through ``edgesdk.Session("model.gguf")``: ``generate()``, ``generate_stream()``; the
cpu backend's runner (``session.runner``) adds ``last_stats``, ``tokenizer``, ``perplexity()``.
"""

from ._config import GenerationConfig, GenerationStats
from ._engine import LLM, prompt_lookup
from ._gguf import ARCHITECTURES, ArchSpec, GGUFFile, ModelConfig
from ._perplexity import PerplexityResult
from ._tokenizer import Tokenizer

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "GGUFFile",
    "GenerationConfig",
    "GenerationStats",
    "LLM",
    "ModelConfig",
    "PerplexityResult",
    "Tokenizer",
    "prompt_lookup",
]
