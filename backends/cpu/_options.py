"""Typed options of the native CPU backend (unknown keys are an error, never ignored)."""

from __future__ import annotations

from typing import Any

import attrs

from edgesdk.backend import typed_backend_options

__all__ = ["CpuOptions"]


@attrs.frozen
class CpuOptions:
    """How the cpu backend runs a GGUF model; pass as ``SessionOptions(backend_options={"cpu": {...}})``.

    - ``n_ctx``: KV-cache length (default: ``SessionOptions.n_ctx``, else the model's training
      context; pages are committed only as the cache fills).
    - ``impl``: ``"c"`` (the C kernels; ``"kernels"`` is a deprecated alias) or ``"numpy"`` (default follows ``EDGESDK_KERNELS``).
    - ``activations``: ``"int8"`` (default) quantizes activations per 32-block like llama.cpp;
      ``"f32"`` is exact and slower.
    - ``kv_dtype``: KV-cache storage, ``"f32"``, ``"f16"`` (half the memory) or ``"q8_0"``
      (llama.cpp's 8-bit blocks, 0.27x); default ``SessionOptions.kv_dtype``, else ``"f32"``.

    Values are validated by :class:`edgesdk.llm.LLM` at load, so the errors are the LLM's own.
    """

    n_ctx: int | None = None
    impl: str | None = None
    activations: str = "int8"
    kv_dtype: str | None = None

    @classmethod
    def from_value(cls, value) -> CpuOptions:
        """A CpuOptions from a CpuOptions, a dict of its fields, or None (defaults)."""
        return typed_backend_options(cls, value, "cpu")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
