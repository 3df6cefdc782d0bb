"""GGUF files: memory-mapped tensors, metadata, and the model configuration.

:meth:`GGUFFile.config` combines the file's ``<arch>.*`` metadata with the architecture's
description (:mod:`edgesdk.llm.arch`) into a :class:`ModelConfig`, which is all a forward pass reads.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import struct
from typing import Any

import attrs
import numpy as np

from .._errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError
from ..quant._types import TYPES, quant_type
from .arch import ARCHITECTURES, Architecture, architecture

__all__ = ["ARCHITECTURES", "GGUFFile", "GGUFTensor", "LayerPlan", "ModelConfig", "SUPPORTED_TENSOR_TYPES"]

log = logging.getLogger(__name__)

#: Tensor encodings the runtime can compute with. K-quants (Q4_K, Q6_K, ...) are refused by name.
SUPPORTED_TENSOR_TYPES = tuple(TYPES)  # the quant-type table is the one list


@attrs.frozen
class LayerPlan:
    """How one layer attends: ``window`` keys back (0: the whole context) with RoPE table ``rope``
    (an index into :attr:`ModelConfig.ropes`)."""

    window: int = 0
    rope: int = 0


@attrs.frozen
class ModelConfig:
    """Hyper-parameters read from GGUF metadata (``<arch>.*`` keys) and the architecture's description.

    ``ropes``: the distinct (base, linear scale) pairs of RoPE, global layers' first. ``rope_freqs``:
    the file has per-dimension frequency divisors (``rope_freqs.weight``, Llama 3.x). ``embed_scale``
    multiplies token embeddings; ``logit_softcap`` c > 0 maps logits to c * tanh(logits / c).
    """

    arch: Architecture
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
    layers: tuple[LayerPlan, ...] = ()
    ropes: tuple[tuple[float, float], ...] = ()
    rope_freqs: bool = False
    embed_scale: float = 1.0
    logit_softcap: float = 0.0

    def __attrs_post_init__(self):
        if not self.layers:  # hand-built configs (tests): every layer global
            object.__setattr__(self, "layers", (LayerPlan(),) * self.n_layer)
        if not self.ropes:
            object.__setattr__(self, "ropes", ((self.rope_base, self.rope_scale),))

    @property
    def features(self) -> frozenset[str]:
        """The forward-pass primitives (:data:`edgesdk.llm.arch.FEATURES`) this model needs."""
        extra = {"rope_freqs"} if self.rope_freqs else set()
        if self.logit_softcap:
            extra.add("logit_softcap")
        return self.arch.features | extra


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


@attrs.frozen
class GGUFTensor:
    """A tensor's header and its bytes as a read-only memory-mapped numpy view.

    Same fields as ``gguf.ReaderTensor`` (``shape`` lists dims fastest-first, ``data`` is uint8
    (rows, row bytes) for block-quantized types), so ``edgesdk.quant.from_gguf`` accepts it.
    """

    name: str
    tensor_type: Any
    shape: np.ndarray = attrs.field(eq=False)
    n_elements: int
    n_bytes: int
    data_offset: int
    data: np.ndarray = attrs.field(eq=False, repr=False)


class _Cursor:
    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int):
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelFormatError(self.path, f"GGUF header is truncated at byte {self.pos}")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def scalar(self, vtype: int):
        fmt = _SCALAR.get(vtype)
        if fmt is None:
            raise ModelFormatError(self.path, f"unknown GGUF value type {vtype} at byte {self.pos}")
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar(10))).decode("utf-8", "replace")

    def count(self, what: str, min_bytes: int) -> int:
        """A u64 count of items each at least ``min_bytes`` long, refused at once when the rest of the
        file cannot hold that many (a corrupt count would otherwise loop over the whole file)."""
        at, n = self.pos, self.scalar(10)
        if n * min_bytes > len(self.buf) - self.pos:
            raise ModelFormatError(self.path, f"GGUF {what} count {n} at byte {at} does not fit in the file (corrupt or truncated)")
        return n

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.scalar(4)
            if etype == _STRING:
                return [self.string() for _ in range(self.count("string array", 8))]
            if etype not in _NP:
                raise ModelFormatError(self.path, f"unsupported GGUF array element type {etype}")
            dt = np.dtype(_NP[etype]).newbyteorder("<")
            count = self.count("array", dt.itemsize)
            return np.frombuffer(self.take(count * dt.itemsize), dt).copy()
        return self.scalar(vtype)


class GGUFFile:
    """A GGUF file, parsed with a lean header reader: tensors are memory-mapped views of the file.

    ``gguf.GGUFReader`` builds a numpy array per metadata element (~170 MB for a 49k-token
    vocabulary); this reader keeps metadata as plain Python values and maps only tensor data.
    Type codes and block sizes come from the ``gguf`` package.
    """

    def __init__(self, path: str | os.PathLike):
        import gguf

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelNotFoundError(self.path, "no such file")
        try:
            self._mm = np.memmap(self.path, np.uint8, mode="r")
        except (OSError, ValueError) as exc:
            raise ModelFormatError(self.path, f"cannot map the file: {exc}") from exc
        cur = _Cursor(memoryview(self._mm), self.path)
        if bytes(cur.take(4)) != b"GGUF":
            raise ModelFormatError(self.path, "not a GGUF file (bad magic)")
        version = cur.scalar(4)
        if version not in (2, 3):
            raise ModelFormatError(self.path, f"GGUF version {version} is not supported (2, 3)")
        # Each key/value is at least 12 bytes (empty key + type), each tensor info at least 24.
        n_tensors = cur.count("tensor", 24)
        n_kv = cur.count("metadata", 12)
        self.meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.meta[key] = cur.value(cur.scalar(4))
        #: Byte offsets of the tensor-info table and of the aligned data section (fuzzers mutate what lies before the data).
        self.tensor_info_offset = cur.pos
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar(4)
            if n_dims > 4:
                raise ModelFormatError(self.path, f"tensor {name!r} has {n_dims} dims")
            dims = [cur.scalar(10) for _ in range(n_dims)]
            infos.append((name, dims, cur.scalar(4), cur.scalar(10)))
        align = self.meta.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
            raise ModelFormatError(self.path, f"general.alignment {align!r} is not a positive power of two")
        self.data_offset = base = -(-cur.pos // align) * align
        self.tensors: dict[str, GGUFTensor] = {}
        for name, dims, tcode, off in infos:
            self.tensors[name] = self._tensor(gguf, name, dims, tcode, base + off)

    def _tensor(self, gguf, name: str, dims: list[int], tcode: int, start: int) -> GGUFTensor:
        try:
            ttype = gguf.GGMLQuantizationType(tcode)
            blk, tsize = gguf.GGML_QUANT_SIZES[ttype]
        except (ValueError, KeyError):
            raise UnsupportedModelError(self.path, f"tensor {name!r} has unknown ggml type code {tcode}") from None
        if any(d == 0 for d in dims):
            raise ModelFormatError(self.path, f"tensor {name!r} has a zero dimension {dims} (corrupt tensor info)")
        if dims and dims[0] % blk:
            raise ModelFormatError(self.path, f"tensor {name!r}: row length {dims[0]} is not a multiple of the {ttype.name} block size {blk}")
        n_el = math.prod(dims)  # Python ints: corrupt dims must not wrap around
        n_bytes = n_el // blk * tsize
        if start + n_bytes > self._mm.size:
            raise ModelFormatError(
                self.path,
                f"tensor {name!r} ({n_bytes} bytes at offset {start}) ends past the end of the {self._mm.size}-byte file (truncated or corrupt tensor info)",
            )
        raw = self._mm[start : start + n_bytes]
        if ttype.name in ("F32", "F16"):
            data = raw.view(np.float32 if ttype.name == "F32" else np.float16).reshape(tuple(reversed(dims)))
        else:
            data = raw.reshape(n_el // dims[0] if dims else 1, -1)
        return GGUFTensor(name, ttype, np.asarray(dims, np.uint64), n_el, n_bytes, start, data)

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(key, default)

    def require(self, key: str) -> Any:
        value = self.meta.get(key)
        if value is None:
            raise ModelFormatError(self.path, f"GGUF metadata key {key!r} is missing")
        return value

    def array_field(self, key: str, dtype=None) -> np.ndarray | None:
        v = self.meta.get(key)
        return None if v is None else np.asarray(v).astype(dtype or np.int64)

    def release(self, tensor: GGUFTensor, rows: tuple[int, int] | None = None) -> None:
        """Drop the resident file pages of a tensor (or of its rows r0..r1) whose bytes were copied
        elsewhere (repacked).

        The mapping stays valid (pages come back from the page cache if read again); this only keeps
        the process's RSS at one copy of the weights instead of two.
        """
        mm = getattr(self._mm, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            return
        lo, hi = tensor.data_offset, tensor.data_offset + tensor.n_bytes
        if rows is not None:
            row_bytes = tensor.n_bytes // max(1, tensor.data.shape[0])
            lo, hi = lo + rows[0] * row_bytes, lo + rows[1] * row_bytes
        page = mmap.PAGESIZE
        # Only whole pages inside the range, so neighbours being read are untouched.
        start = -(-lo // page) * page
        end = (hi // page) * page
        if end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError, AttributeError):
                pass

    def tensor(self, name: str):
        try:
            t = self.tensors[name]
        except KeyError:
            raise ModelFormatError(self.path, f"tensor {name!r} is missing") from None
        try:
            quant_type(t.tensor_type)
        except UnsupportedModelError as e:
            raise UnsupportedModelError(self.path, f"tensor {name!r}: {e.cause}") from None
        return t

    def _number(self, key: str, kind, default: Any = None, minimum: float | None = None):
        """Metadata ``key`` as an int or float (``kind``), or ``default`` when absent (required when
        ``default`` is None): a string, array or out-of-range value is a corrupt file, said in words."""
        value = self.meta.get(key, default)
        if value is None:
            raise ModelFormatError(self.path, f"GGUF metadata key {key!r} is missing")
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if ok and kind is int and float(value) != int(value):
            ok = False
        if ok:
            value = kind(value)
            ok = math.isfinite(value) and (minimum is None or value >= minimum)
        if not ok:
            need = "an integer" if kind is int else "a number"
            floor = f" >= {minimum:g}" if minimum is not None else ""
            raise ModelFormatError(self.path, f"GGUF metadata key {key!r} is {value!r}, expected {need}{floor} (corrupt metadata)")
        return value

    def config(self) -> ModelConfig:
        a = self.require("general.architecture")
        if not isinstance(a, str):
            raise ModelFormatError(self.path, f"general.architecture is {type(a).__name__} data, expected a name (corrupt metadata)")
        spec = architecture(a, self.path)
        n_embd = self._number(f"{a}.embedding_length", int, minimum=1)
        n_head = self._number(f"{a}.attention.head_count", int, minimum=1)
        n_layer = self._number(f"{a}.block_count", int, minimum=1)
        n_blocks = len({name.split(".")[1] for name in self.tensors if name.startswith("blk.")})
        if n_layer > n_blocks:  # before anything is sized by it: a corrupt count would allocate without bound
            raise ModelFormatError(self.path, f"{a}.block_count is {n_layer} but the file holds tensors of {n_blocks} layers")
        head_dim = self._number(f"{a}.attention.key_length", int, n_embd // n_head, minimum=1)
        scaling = self.get(f"{a}.rope.scaling.type", "none")
        scale = 1.0
        if scaling == "linear":
            scale = self._number(f"{a}.rope.scaling.factor", float, minimum=1e-6)
        elif scaling not in ("none", None):
            raise UnsupportedModelError(self.path, f"RoPE scaling {scaling!r} is not supported (linear, or llama3's rope_freqs)")
        rope_base = self._number(f"{a}.rope.freq_base", float, 10000.0, minimum=1e-6)
        ropes, layers = [(rope_base, scale)], [LayerPlan()] * n_layer
        sw = spec.sliding_window
        if sw is not None:
            window = self._number(f"{a}.attention.sliding_window", int, minimum=1)
            base = self.get(f"{a}.rope.freq_base_swa", sw.rope_base)
            if base is not None:
                base = self._number(f"{a}.rope.freq_base_swa", float, base, minimum=1e-6)
            rope = 0
            if base is not None and (base, 1.0) != ropes[0]:
                ropes.append((base, 1.0))  # windowed layers are never position-scaled
                rope = 1
            layers = [LayerPlan(window, rope) if sw.windowed(i) else LayerPlan() for i in range(n_layer)]
        embd = self.tensors.get("token_embd.weight")
        embd_rows = int(embd.shape[1]) if embd is not None and len(embd.shape) > 1 else 0
        vocab = self._number(f"{a}.vocab_size", int, 0, minimum=0) or embd_rows
        return ModelConfig(
            arch=spec,
            n_layer=n_layer,
            n_embd=n_embd,
            n_ff=self._number(f"{a}.feed_forward_length", int, minimum=1),
            n_head=n_head,
            n_head_kv=self._number(f"{a}.attention.head_count_kv", int, n_head, minimum=1),
            head_dim=head_dim,
            n_ctx_train=self._number(f"{a}.context_length", int, minimum=1),
            vocab_size=vocab,
            rms_eps=self._number(f"{a}.attention.layer_norm_rms_epsilon", float, 1e-5, minimum=0.0),
            rope_base=rope_base,
            rope_dim=self._number(f"{a}.rope.dimension_count", int, head_dim, minimum=0),
            rope_scale=scale,
            tied_embeddings="output.weight" not in self.tensors,
            layers=tuple(layers),
            ropes=tuple(ropes),
            rope_freqs="rope_freqs.weight" in self.tensors,
            embed_scale=float(np.sqrt(np.float32(n_embd))) if spec.embed_scale else 1.0,
            logit_softcap=self._number(f"{a}.final_logit_softcapping", float, 0.0, minimum=0.0),
        )

    def close(self) -> None:
        # numpy memmaps close when the last view is gone; dropping our references is all we can do.
        self.tensors = {}
        self._mm = None
