"""GGUF files: memory-mapped tensors, metadata, and the per-architecture model configuration.

Adding an architecture means adding an :class:`ArchSpec` to :data:`ARCHITECTURES`: the forward pass
reads every architectural choice (RoPE layout, biases, activations, norms) from :class:`ModelConfig`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import attrs
import numpy as np

from .._errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError

__all__ = ["ArchSpec", "ARCHITECTURES", "GGUFFile", "ModelConfig", "SUPPORTED_TENSOR_TYPES"]

log = logging.getLogger(__name__)

#: Tensor encodings the runtime can compute with. K-quants (Q4_K, Q6_K, ...) are refused by name.
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")


@attrs.frozen
class ArchSpec:
    """What distinguishes one decoder-only architecture from another, as far as the forward pass cares.

    ``rope_mode`` "norm" rotates adjacent pairs (llama.cpp's layout for llama-family GGUF, whose
    converter permutes Q/K rows), "neox" rotates the two halves of each head (Qwen2, Gemma).
    """

    name: str
    rope_mode: str = "norm"
    attn_bias: bool = False
    activation: str = "silu"


#: Architectures whose forward pass is implemented and verified against a real model file.
ARCHITECTURES: Mapping[str, ArchSpec] = {
    "llama": ArchSpec("llama", rope_mode="norm"),
}

# Known but not implemented yet: named in the error so users know it is a runtime gap, not a bad file.
_PLANNED = {"qwen2": "Qwen2 (neox RoPE, QKV bias)", "gemma3": "Gemma 3 (sliding-window attention, QK-norm)"}


@attrs.frozen
class ModelConfig:
    """Hyper-parameters read from GGUF metadata (``<arch>.*`` keys)."""

    arch: ArchSpec
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    vocab_size: int
    rms_eps: float
    rope_base: float
    rope_dim: int
    rope_scale: float = 1.0  # linear position scaling: positions are divided by this
    tied_embeddings: bool = True


def _field_value(field) -> Any:
    try:
        return field.contents()
    except Exception:  # older gguf releases lack contents(); decode the parts ourselves
        if len(field.data) == 1:
            part = field.parts[field.data[0]]
            return part.tobytes().decode() if part.dtype == np.uint8 else part[0].item()
        return [field.parts[i].tobytes().decode() for i in field.data]


class GGUFFile:
    """A GGUF file opened with ``gguf.GGUFReader``: tensors stay memory-mapped views of the file."""

    def __init__(self, path: str | os.PathLike):
        import gguf

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelNotFoundError(self.path, "no such file")
        try:
            self.reader = gguf.GGUFReader(self.path, "r")
        except Exception as exc:  # the reader raises ValueError/struct.error/IndexError on damaged files
            raise ModelFormatError(self.path, f"not a readable GGUF file ({type(exc).__name__}: {exc})") from exc
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._meta: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._meta:
            field = self.reader.fields.get(key)
            if field is None:
                return default
            self._meta[key] = _field_value(field)
        return self._meta[key]

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ModelFormatError(self.path, f"GGUF metadata key {key!r} is missing")
        return value

    def array_field(self, key: str, dtype=None) -> np.ndarray | None:
        """A numeric array field as one numpy array, without building a Python list per element."""
        field = self.reader.fields.get(key)
        if field is None:
            return None
        return np.concatenate([field.parts[i] for i in field.data]).astype(dtype or np.int64)

    def tensor(self, name: str):
        try:
            t = self.tensors[name]
        except KeyError:
            raise ModelFormatError(self.path, f"tensor {name!r} is missing") from None
        if t.tensor_type.name not in SUPPORTED_TENSOR_TYPES:
            raise UnsupportedModelError(
                self.path, f"tensor {name!r} uses type {t.tensor_type.name}; supported: {', '.join(SUPPORTED_TENSOR_TYPES)}"
            )
        expected = int(np.prod(t.shape))
        if int(t.n_elements) != expected or t.data.size == 0:
            raise ModelFormatError(self.path, f"tensor {name!r} is truncated")
        return t

    def config(self) -> ModelConfig:
        arch_name = self.require("general.architecture")
        spec = ARCHITECTURES.get(arch_name)
        if spec is None:
            planned = f" ({_PLANNED[arch_name]} is planned)" if arch_name in _PLANNED else ""
            raise UnsupportedModelError(
                self.path, f"architecture {arch_name!r} is not supported{planned}; supported: {', '.join(ARCHITECTURES)}"
            )
        a = arch_name
        n_embd = int(self.require(f"{a}.embedding_length"))
        n_head = int(self.require(f"{a}.attention.head_count"))
        head_dim = int(self.get(f"{a}.attention.key_length", n_embd // n_head))
        scaling = self.get(f"{a}.rope.scaling.type", "none")
        scale = 1.0
        if scaling == "linear":
            scale = float(self.require(f"{a}.rope.scaling.factor"))
        elif scaling not in ("none", None):
            raise UnsupportedModelError(self.path, f"RoPE scaling {scaling!r} is not supported (only linear)")
        if "rope_freqs.weight" in self.tensors:
            raise UnsupportedModelError(self.path, "per-dimension RoPE frequency factors (rope_freqs.weight) are not supported")
        embd = self.tensors.get("token_embd.weight")
        vocab = int(self.get(f"{a}.vocab_size", 0) or (embd.shape[1] if embd is not None else 0))
        return ModelConfig(
            arch=spec,
            n_layer=int(self.require(f"{a}.block_count")),
            n_embd=n_embd,
            n_ff=int(self.require(f"{a}.feed_forward_length")),
            n_head=n_head,
            n_head_kv=int(self.get(f"{a}.attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ctx_train=int(self.require(f"{a}.context_length")),
            vocab_size=vocab,
            rms_eps=float(self.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(self.get(f"{a}.rope.freq_base", 10000.0)),
            rope_dim=int(self.get(f"{a}.rope.dimension_count", head_dim)),
            rope_scale=scale,
            tied_embeddings="output.weight" not in self.tensors,
        )

    def close(self) -> None:
        # numpy memmaps close when the last view is gone; dropping our references is all we can do.
        self.tensors = {}
        self.reader = None
