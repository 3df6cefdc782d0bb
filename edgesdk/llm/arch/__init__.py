"""Architectures as data: one small description per decoder-only architecture.

A description says what distinguishes an architecture (tensor names of its projections, norm
placement, activation, attention pattern, RoPE variant, scales); :func:`plan` turns it and a GGUF
file's metadata into a :class:`~edgesdk.llm._gguf.ModelConfig`. The numpy reference
(``_model.Transformer``), the fused C loop (``bindings/llm_decode.c``) and the OpenCL pass implement
the *primitives* those fields name and never test an architecture by name.

Adding an architecture: a module in this package defining ``ARCH = Architecture(...)``, plus a
test in ``tests/test_architectures.py`` that writes a tiny random GGUF of it and compares the
logits and greedy tokens with llama.cpp.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Mapping

import attrs

__all__ = ["ARCHITECTURES", "Architecture", "FEATURES", "SlidingWindow", "architecture"]

#: Primitives a forward pass may need beyond the plain llama layer. A backend declares the subset it
#: implements; placement refuses a model that needs one it lacks, naming it.
FEATURES = ("attn_bias", "qk_norm", "post_norms", "gelu_tanh", "sliding_window", "rope_freqs", "embed_scale", "logit_softcap", "fused_qkv", "fused_gate_up")


@attrs.frozen
class SlidingWindow:
    """Layers attending to a window of recent keys. ``pattern`` n: layer i is windowed unless
    ``i % n == n - 1`` (llama.cpp's swa pattern; 1 = every layer). The window size comes from the
    GGUF (``<arch>.attention.sliding_window``); ``rope_base`` is the RoPE base of windowed layers
    when the file does not give ``<arch>.rope.freq_base_swa``."""

    pattern: int
    rope_base: float | None = None

    def windowed(self, layer: int) -> bool:
        return self.pattern == 1 or layer % self.pattern < self.pattern - 1


@attrs.frozen
class Architecture:
    """What the forward pass needs to know of one architecture.

    ``rope``: "norm" rotates adjacent pairs (llama.cpp's layout for llama-family GGUFs, whose
    converter permutes Q/K rows), "neox" rotates the two halves of each head.
    ``qkv`` / ``gate_up``: the tensor names whose rows form the fused Q|K|V and gate|up projections
    (one name: the file stores them fused). ``attn_bias``: Q/K/V carry biases. ``qk_norm``: RMS norm
    of each Q and K head before RoPE (``attn_q_norm``/``attn_k_norm``). ``post_norms``: Gemma's
    "sandwich", an RMS norm on each block's output before the residual add
    (``post_attention_norm``/``post_ffw_norm``). ``activation``: "silu" (SwiGLU) or "gelu_tanh"
    (GeGLU). ``embed_scale``: token embeddings multiplied by sqrt(n_embd). ``sliding_window``: see
    :class:`SlidingWindow`. ``chat_template``: the template used when the GGUF carries none.
    """

    name: str
    rope: str = "norm"
    qkv: tuple[str, ...] = ("attn_q", "attn_k", "attn_v")
    gate_up: tuple[str, ...] = ("ffn_gate", "ffn_up")
    attn_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    activation: str = "silu"
    embed_scale: bool = False
    sliding_window: SlidingWindow | None = None
    chat_template: str | None = None

    def __attrs_post_init__(self):
        if self.rope not in ("norm", "neox") or self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"architecture {self.name!r}: bad rope {self.rope!r} or activation {self.activation!r}")
        if len(self.qkv) not in (1, 3) or len(self.gate_up) not in (1, 2):
            raise ValueError(f"architecture {self.name!r}: qkv takes 1 or 3 tensors, gate_up 1 or 2")

    @property
    def features(self) -> frozenset[str]:
        """The :data:`FEATURES` this architecture needs by itself (files may add rope_freqs / softcap)."""
        have = {
            "attn_bias": self.attn_bias,
            "qk_norm": self.qk_norm,
            "post_norms": self.post_norms,
            "gelu_tanh": self.activation == "gelu_tanh",
            "sliding_window": self.sliding_window is not None,
            "embed_scale": self.embed_scale,
            "fused_qkv": len(self.qkv) == 1,
            "fused_gate_up": len(self.gate_up) == 1,
        }
        return frozenset(k for k, v in have.items() if v)


def _load() -> dict[str, Architecture]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        arch = importlib.import_module(f"{__name__}.{info.name}").ARCH
        found[arch.name] = arch
    return found


#: Every described architecture, by GGUF ``general.architecture`` name.
ARCHITECTURES: Mapping[str, Architecture] = _load()


def architecture(name: str, path: str = "") -> Architecture:
    """The description of ``name``; an :class:`UnsupportedModelError` listing the supported ones otherwise."""
    from ..._errors import UnsupportedModelError

    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedModelError(path, f"architecture {name!r} is not supported; supported: {', '.join(ARCHITECTURES)}") from None
