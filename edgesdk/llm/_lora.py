"""LoRA adapters in llama.cpp's GGUF format, applied beside the base weights (never merged into them).

An adapter file has ``general.type = "adapter"``, ``adapter.type = "lora"``, the base's
``general.architecture``, an optional ``adapter.lora.alpha`` and, per adapted base tensor ``W``,
the pair ``W.lora_a`` / ``W.lora_b``. For a projection ``W`` of GGUF dims (k, n) (fastest first:
k inputs, n outputs), ``lora_a`` is (k, r) and ``lora_b`` (r, n), and the projection becomes
``y = W x + s * B (A x)`` with ``s = adapter_scale * alpha / r`` (``adapter_scale`` when alpha is
0), r the rank read from ``lora_b``: llama.cpp's ``build_lora_mm``. For the token embedding
(``token_embd.weight``, dims (d, vocab)) the pair is stored flipped, ``lora_a`` (r, vocab) and
``lora_b`` (r, d), and row t of the lookup gains ``s * B A[t]`` (llama.cpp's ``build_inp_embd``);
the LM head of a tied model is not adapted by it (as PEFT's embedding LoRA). Norm vectors
(``*_norm.weight``) are skipped, as llama.cpp skips them.

Every tensor is read once, as float32, then the file is closed: an adapter costs
4 * r * (k + n) bytes per adapted projection and switching adapters is a pointer swap.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Mapping

import attrs
import numpy as np

from .._errors import (
    EdgeSDKError,
    GenerationError,
    ModelFormatError,
    UnsupportedModelError,
)
from ..quant._types import quant_type
from ._gguf import GGUFFile

__all__ = ["EMBEDDING", "LoraAdapter", "LoraPair", "LoraTerm", "load_adapters", "load_lora", "lora_scale"]

log = logging.getLogger(__name__)

#: The embedding's target kind in :func:`load_lora`'s ``targets`` (the other kind is "matmul").
EMBEDDING = "embedding"
_SUFFIXES = (".lora_a", ".lora_b")


@attrs.frozen
class LoraPair:
    """One adapted base tensor: ``a`` (r, k) float32, or (vocab, r) for the embedding, and ``bt``, B
    transposed, (r, n) float32: adding B u is then r contiguous row passes (axpys)."""

    a: np.ndarray = attrs.field(eq=False, repr=False)
    bt: np.ndarray = attrs.field(eq=False, repr=False)

    @property
    def rank(self) -> int:
        return int(self.bt.shape[0])

    @property
    def nbytes(self) -> int:
        return self.a.nbytes + self.bt.nbytes


@attrs.frozen
class LoraTerm:
    """What one adapted tensor adds to a projection's output columns ``row0 .. row0 + n``:
    ``scale * (x A^T) B^T``. A fused projection (Q|K|V, gate|up) has one term per part."""

    row0: int
    scale: float
    pair: LoraPair = attrs.field(eq=False, repr=False)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        u = x @ self.pair.a.T
        u *= np.float32(self.scale)
        y[:, self.row0 : self.row0 + self.pair.bt.shape[1]] += u @ self.pair.bt

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """The embedding rows' delta (T, d) for token ``ids``."""
        u = self.pair.a[ids] * np.float32(self.scale)
        return u @ self.pair.bt


def lora_scale(alpha: float, rank: int, adapter_scale: float) -> float:
    """llama.cpp's multiplier of B (A x): alpha 0 means "no alpha", the request's scale as is."""
    return float(adapter_scale) * float(alpha) / rank if alpha else float(adapter_scale)


@attrs.frozen
class LoraAdapter:
    """A validated adapter: ``pairs`` by base tensor name, and the ``targets`` (name -> (kind, k, n))
    of the base model it was checked against, so it is never applied to another one."""

    path: str
    arch: str
    alpha: float
    pairs: Mapping[str, LoraPair] = attrs.field(eq=False, repr=False)
    targets: Mapping[str, tuple[str, int, int]] = attrs.field(eq=False, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pairs.values())

    def terms(self, names, sizes, adapter_scale: float) -> tuple[LoraTerm, ...]:
        """The terms of a projection whose output stacks the rows of base tensors ``names`` (``sizes`` rows each)."""
        out, row0 = [], 0
        for name, rows in zip(names, sizes):
            pair = self.pairs.get(name)
            if pair is not None and self.targets[name][0] != EMBEDDING:
                out.append(LoraTerm(row0, lora_scale(self.alpha, pair.rank, adapter_scale), pair))
            row0 += rows
        return tuple(out)

    def embedding_term(self, adapter_scale: float) -> LoraTerm | None:
        for name, pair in self.pairs.items():
            if self.targets[name][0] == EMBEDDING:
                return LoraTerm(0, lora_scale(self.alpha, pair.rank, adapter_scale), pair)
        return None

    def check_base(self, arch: str, targets: Mapping[str, tuple[str, int, int]]) -> None:
        """Refuse a model other than the one this adapter was loaded for (GenerationError)."""
        if arch != self.arch or any(targets.get(n) != self.targets[n] for n in self.pairs):
            raise GenerationError(f"LoRA adapter {self.path!r} was loaded for another base model")


def load_adapters(model, paths: Mapping[str, str] | None) -> dict[str, LoraAdapter]:
    """``{name: path}`` loaded for ``model`` (a forward pass with ``adapter_targets()``/``set_adapter``)."""
    if not paths:
        return {}
    if not isinstance(paths, Mapping) or not all(isinstance(k, str) and k and isinstance(v, (str, os.PathLike)) for k, v in paths.items()):
        raise GenerationError("adapters must map an adapter name to the path of its GGUF LoRA file")
    if not (hasattr(model, "adapter_targets") and hasattr(model, "set_adapter")):
        raise GenerationError(f"this forward pass ({type(model).__name__}) cannot apply LoRA adapters; the cpu backend's can")
    arch, targets = model.cfg.arch.name, model.adapter_targets()
    return {name: load_lora(path, arch, targets) for name, path in paths.items()}


def load_lora(path, arch: str, targets: Mapping[str, tuple[str, int, int]]) -> LoraAdapter:
    """Read and validate the adapter at ``path`` for a base of architecture ``arch``.

    ``targets``: the base tensors the forward pass can adapt, name -> (kind, k, n) with (k, n) the
    base tensor's GGUF dims and kind "matmul" or :data:`EMBEDDING`. Errors name the file and the
    tensor: ModelFormatError for a file that is not a well-formed adapter of this base's shapes,
    UnsupportedModelError for one it cannot apply (another architecture, an activated LoRA,
    a tensor type outside the table, a base tensor that is not a projection or the embedding).
    """
    path = os.fspath(path)
    g = _open(path)
    try:
        alpha = _metadata(g, arch)
        pairs = {}
        for base, (ta, tb) in _pairs(g).items():
            pairs[base] = _read_pair(g, base, ta, tb, targets)
    finally:
        g.close()
    if not pairs:
        log.warning("LoRA adapter %s adapts no tensor", path)
    ad = LoraAdapter(path, arch, alpha, pairs, {n: targets[n] for n in pairs})
    log.info(
        "LoRA adapter %s: %d tensors, rank %s, alpha %g, %.1f MiB as float32",
        path,
        len(pairs),
        "/".join(str(r) for r in sorted({p.rank for p in pairs.values()})) or "-",
        alpha,
        ad.nbytes / 2**20,
    )
    return ad


def _open(path: str) -> GGUFFile:
    try:
        return GGUFFile(path)
    except EdgeSDKError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, ZeroDivisionError, struct.error) as exc:
        # A corrupt header can send the reader's arithmetic astray before it can name the cause.
        raise ModelFormatError(path, f"corrupt GGUF file ({type(exc).__name__}: {exc})") from None


def _metadata(g: GGUFFile, arch: str) -> float:
    """Check the adapter's identity against the base; its alpha."""
    gtype = g.get("general.type")
    if gtype != "adapter":
        raise ModelFormatError(g.path, f"not a LoRA adapter: general.type is {gtype!r}, an adapter has 'adapter'")
    atype = g.get("adapter.type")
    if atype != "lora":
        raise UnsupportedModelError(g.path, f"adapter.type {atype!r} is not supported (only 'lora')")
    own = g.get("general.architecture")
    if own != arch:
        raise UnsupportedModelError(g.path, f"the adapter is for architecture {own!r}, the base model is {arch!r}")
    if g.get("adapter.alora.invocation_tokens") is not None:
        # An activated LoRA applies only after its invocation tokens: not a plain per-request adapter.
        raise UnsupportedModelError(g.path, "activated LoRA (adapter.alora.invocation_tokens) is not supported")
    alpha = g.get("adapter.lora.alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha):
        raise ModelFormatError(g.path, f"adapter.lora.alpha must be a finite number, got {alpha!r}")
    return float(alpha)


def _pairs(g: GGUFFile) -> dict[str, tuple]:
    """Base tensor name -> (lora_a, lora_b) tensors, each pair complete."""
    found: dict[str, dict[str, object]] = {}
    for name, t in g.tensors.items():
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix is not None:
            found.setdefault(name[: -len(suffix)], {})[suffix] = t
        elif name.endswith("_norm.weight"):
            log.warning("%s: tensor %r ignored (norm vectors are not adapted, as in llama.cpp)", g.path, name)
        else:
            raise ModelFormatError(g.path, f"tensor {name!r} is neither a .lora_a nor a .lora_b tensor")
    out = {}
    for base, parts in found.items():
        for s in _SUFFIXES:
            if s not in parts:
                raise ModelFormatError(g.path, f"tensor {base + s!r} is missing (the pair of {next(iter(parts.values())).name!r})")
        out[base] = (parts[".lora_a"], parts[".lora_b"])
    return out


def _read_pair(g: GGUFFile, base: str, ta, tb, targets) -> LoraPair:
    target = targets.get(base)
    if target is None:
        raise ModelFormatError(g.path, f"tensor {ta.name!r} adapts {base!r}, which is no projection (nor the embedding) of the base model (wrong base model?)")
    kind, k, n = target
    da, db = _dims(g, ta), _dims(g, tb)
    rank = db[0]
    # GGUF dims, fastest first, as llama.cpp's loader checks them (the embedding's pair is flipped).
    want_a, want_b = ((rank, n), (rank, k)) if kind == EMBEDDING else ((k, rank), (rank, n))
    if db != want_b or da != want_a:
        raise ModelFormatError(
            g.path,
            f"tensors {ta.name!r} {da} / {tb.name!r} {db} do not fit {base!r} of dims {(k, n)}: rank {rank} needs {want_a} / {want_b} (wrong base model?)",
        )
    a, b = _values(g, ta, da), _values(g, tb, db)
    # a as stored: (r, k) rows, or the embedding's (vocab, r); B^T is (r, n) for either kind.
    return LoraPair(np.ascontiguousarray(a), np.ascontiguousarray(b.T))


def _dims(g: GGUFFile, t) -> tuple[int, int]:
    dims = tuple(int(x) for x in t.shape)
    if len(dims) != 2 or min(dims) < 1:
        raise ModelFormatError(g.path, f"tensor {t.name!r} has dims {dims}; a LoRA factor is a 2-D matrix")
    return dims


def _values(g: GGUFFile, t, dims: tuple[int, int]) -> np.ndarray:
    """The tensor as float32 (dims[1], dims[0]), every value finite."""
    try:
        qt = quant_type(t.tensor_type)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(g.path, f"tensor {t.name!r}: {e.cause}") from None
    if dims[0] % qt.block:
        raise ModelFormatError(g.path, f"tensor {t.name!r}: rows of {dims[0]} values are not whole {qt.name} blocks of {qt.block}")
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are refused just below
            v = qt.dequantize(t.data).reshape(dims[1], dims[0])
    except (UnsupportedModelError, ValueError) as exc:
        raise ModelFormatError(g.path, f"tensor {t.name!r} cannot be read as {qt.name}: {exc}") from None
    if not np.isfinite(v).all():
        raise ModelFormatError(g.path, f"tensor {t.name!r} holds non-finite values")
    return v.astype(np.float32, copy=True)  # a copy: the file's mapping is closed after loading
