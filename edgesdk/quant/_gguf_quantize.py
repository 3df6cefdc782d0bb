"""Quantize a GGUF language model to a llama.cpp file type (Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, ...).

:func:`plan` picks each tensor's type as ``llama-quantize`` does (``llama_tensor_get_type`` in
src/llama-quant.cpp, without an importance matrix): the file type's base type for 2-D weights;
Q6_K for the output head (and for tied token embeddings, which llama.cpp treats as the head) unless
its rows are not a whole number of base-type blocks, then Q8_0; in Q4_K_M/Q5_K_M, Q6_K for the
attention V (or fused QKV) and FFN down projections of the "use more bits" layers (the first and
last eighth, and every third one between); 1-D tensors, norms and the other tensors llama.cpp never
quantizes keep their type. A row length that is not a multiple of the chosen type's block falls
back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16).

:func:`quantize_gguf` writes the result: every metadata entry of the input copied byte for byte
(``general.file_type`` and ``general.quantization_version`` set), tensors in the input's order,
into a temporary file beside the output that replaces it only once complete. Inputs may be F32,
F16, BF16 or already quantized (dequantized with the type table first; requantizing from a
quantized source compounds the errors). The encoders (:mod:`edgesdk.quant._kquant`) reproduce
llama.cpp's, so from an F32 file the output's tensor data equals ``llama-quantize``'s.
"""

from __future__ import annotations

import logging
import mmap
import re
import struct
import time
from collections import OrderedDict
from pathlib import Path

import attrs
import numpy as np

from .._errors import ModelFormatError, QuantizationError, UnsupportedModelError
from .._io import atomic_open
from ._kquant import ENCODERS, encode_blocks
from ._types import TYPES, quant_type

__all__ = ["FILE_TYPES", "TensorPlan", "GGUFQuantReport", "plan", "quantize_gguf"]

log = logging.getLogger(__name__)

#: llama.cpp file types this writes: name -> (llama_ftype code stored in general.file_type, base type).
FILE_TYPES = {
    "Q4_0": (2, "Q4_0"),
    "Q4_1": (3, "Q4_1"),
    "Q8_0": (7, "Q8_0"),
    "Q5_0": (8, "Q5_0"),
    "Q5_1": (9, "Q5_1"),
    "Q4_K_S": (14, "Q4_K"),
    "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"),
    "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
}
_ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize accepts them

# Fallbacks for a row length the chosen type's block does not divide (tensor_type_fallback).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# Substrings of 2-D tensor names llama.cpp never quantizes (tensor_allows_quantization).
_KEEP = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
)
_KEEP_EXACT = ("position_embd.weight", "token_types.weight")

_SUPPORTED_SOURCES = frozenset(TYPES)  # types the table decodes (and so can be requantized)
_GGUF_MAGIC = 0x46554747
_U32 = 4  # GGUFValueType.UINT32
_BLK = re.compile(r"blk\.(-?\d+)\.")


def file_type(name: str) -> tuple[str, int, str]:
    """(canonical name, llama_ftype code, base tensor type) of a ``--to`` value."""
    key = str(name).upper()
    key = _ALIASES.get(key, key)
    if key not in FILE_TYPES:
        raise QuantizationError(f"unknown GGUF target type {name!r}; choose one of: {', '.join(FILE_TYPES)}")
    return (key, *FILE_TYPES[key])


def _category(name: str) -> str:
    """llama.cpp's tensor_get_category: a broad role by name, first match wins."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for sub, cat in (
        ("attn_qkv.weight", "attn_qkv"),
        ("attn_kv_b.weight", "attn_kv_b"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_q.weight", "attn_q"),
        ("attn_output.weight", "attn_output"),
        ("ffn_up", "ffn_up"),
        ("ffn_gate", "ffn_gate"),
        ("ffn_down", "ffn_down"),
    ):
        if sub in name:
            return cat
    return "other"


def _n_dims(ne) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count."""
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return n


def _quantizable(name: str, ne) -> bool:
    if _n_dims(ne) < 2 or not name.endswith("weight"):
        return False
    return not any(s in name for s in _KEEP) and name not in _KEEP_EXACT


def _layer(name: str) -> int:
    m = _BLK.match(name)
    return int(m.group(1)) if m else -1


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def kind_of(name: str) -> str:
    """A tensor's role across layers: ``blk.3.attn_v.weight`` -> ``attn_v.weight``."""
    return _BLK.sub("", name, count=1)


@attrs.frozen
class TensorPlan:
    name: str
    ne: tuple[int, ...]  # GGUF dims, fastest first: (row length, rows, ...)
    src: str  # type in the input
    dst: str  # type to write
    note: str = ""  # why dst is not the recipe's first choice (a fallback)

    @property
    def kind(self) -> str:
        return kind_of(self.name)


def plan(tensors, target: str, *, arch: str = "", n_layer: int | None = None, n_expert: int = 0, n_head: int = 0, n_head_kv: int = 0) -> list[TensorPlan]:
    """Each tensor's output type for llama.cpp file type ``target``.

    ``tensors``: (name, ne, type name) in file order; ne is GGUF's dims list, fastest first. Layer
    counters advance in llama.cpp's order (by layer number, then by name), which decides which
    layers are "use more bits" ones.
    """
    target, _, base = file_type(target)
    tensors = [(str(n), tuple(int(d) for d in ne), quant_type(t).name if not isinstance(t, str) else t.upper()) for n, ne, t in tensors]
    names = {n for n, _, _ in tensors}
    tied = "output.weight" not in names
    n_attn_v = sum(_category(n) in ("attn_v", "attn_qkv", "attn_kv_b") for n in names)
    if n_layer is None:
        n_layer = 1 + max((_layer(n) for n in names), default=-1)
    is_70b = arch == "llama" and n_layer == 80 and n_head != n_head_kv
    counters = {"attn_v": 0, "ffn_down": 0}
    chosen: dict[str, tuple[str, str]] = {}
    for name, ne, src in sorted(tensors, key=lambda t: (_layer(t[0]), t[0])):
        if not _quantizable(name, ne):
            chosen[name] = (src, "")
            continue
        cat = _category(name)
        new = base
        if cat == "output" or (tied and cat == "token_embd"):
            if arch == "falcon" or ne[0] % quant_type(base).block:
                new = "Q8_0"
            elif new != "Q8_0":
                new = "Q6_K"
        elif cat == "token_embd":
            pass
        elif cat in ("attn_v", "attn_qkv", "attn_kv_b"):
            i = counters["attn_v"]
            if target in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n_attn_v):
                new = "Q6_K"
            elif target == "Q4_K_S" and i < 4:
                new = "Q5_K"
            if is_70b and new == "Q4_K":  # 8 heads share each V: more bits are nearly free
                new = "Q5_K"
            if n_expert == 8:
                new = "Q8_0"
            counters["attn_v"] += 1
        elif cat == "attn_k":
            if n_expert == 8:
                new = "Q8_0"
        elif cat == "ffn_down":
            i = counters["ffn_down"] if n_expert <= 1 else _layer(name)
            if target == "Q4_K_M":
                if arch == "falcon":
                    new = "Q6_K" if i < n_layer // 16 else "Q5_K" if _use_more_bits(i, n_layer) else "Q4_K"
                elif _use_more_bits(i, n_layer):
                    new = "Q6_K"
            elif target == "Q5_K_M" and _use_more_bits(i, n_layer):
                new = "Q6_K"
            elif target == "Q4_K_S" and arch != "falcon" and i < n_layer // 8:
                new = "Q5_K"
            counters["ffn_down"] += 1
        elif cat == "attn_output" and arch != "falcon" and n_expert == 8 and target in ("Q4_K_S", "Q4_K_M"):
            new = "Q5_K"
        note = ""
        if ne[0] % quant_type(new).block:
            want = new
            new = _FALLBACK.get(new, new)
            if ne[0] % quant_type(new).block:
                # llama.cpp refuses a Q8_0/Q4_0 target here; F16 keeps the file writable and exact enough
                new = "F16"
            note = f"row length {ne[0]} is not a multiple of {quant_type(want).block}: {want} -> {new}"
        chosen[name] = (new, note)
    return [TensorPlan(n, ne, src, chosen[n][0], chosen[n][1]) for n, ne, src in tensors]


@attrs.frozen
class TensorResult:
    name: str
    ne: tuple[int, ...]
    src: str
    dst: str
    bytes_in: int
    bytes_out: int
    rel_rms: float | None  # sqrt(sum (q - x)^2 / sum x^2) against the input's values; None: copied
    note: str = ""

    @property
    def kind(self) -> str:
        return kind_of(self.name)


@attrs.frozen(eq=False)
class GGUFQuantReport:
    """What :func:`quantize_gguf` wrote: per-tensor types, sizes and errors, and optional perplexities."""

    source: str
    output: str
    target: str
    tensors: tuple[TensorResult, ...]
    seconds: float
    ppl_in: float | None = None
    ppl_out: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def bytes_out(self) -> int:
        return sum(t.bytes_out for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(t.ne, dtype=np.int64)) for t in self.tensors)

    def by_kind(self) -> dict[str, dict]:
        """kind -> {types: {type: count}, bytes_out, worst rel_rms, mean rel_rms} in first-seen order."""
        out: dict[str, dict] = OrderedDict()
        for t in self.tensors:
            k = out.setdefault(t.kind, {"types": OrderedDict(), "count": 0, "bytes_out": 0, "errors": []})
            k["types"][t.dst] = k["types"].get(t.dst, 0) + 1
            k["count"] += 1
            k["bytes_out"] += t.bytes_out
            if t.rel_rms is not None:
                k["errors"].append(t.rel_rms)
        return out

    def summary(self) -> str:
        mib = 1 / (1024 * 1024)
        bpw = 8.0 * self.bytes_out / max(1, self.n_params)
        lines = [
            f"{self.source} -> {self.output} ({self.target})",
            (f"  {self.bytes_in * mib:.1f} MiB -> {self.bytes_out * mib:.1f} MiB ({bpw:.2f} bits/weight), {len(self.tensors)} tensors in {self.seconds:.1f} s"),
            f"  {'kind':<28} {'n':>4} {'types':<22} {'MiB':>8}  rel RMS error (mean / worst)",
        ]
        for kind, k in self.by_kind().items():
            types = ", ".join(f"{t} x{c}" if len(k["types"]) > 1 else t for t, c in k["types"].items())
            err = f"{np.mean(k['errors']):.4g} / {max(k['errors']):.4g}" if k["errors"] else "copied"
            lines.append(f"  {kind:<28} {k['count']:>4} {types:<22} {k['bytes_out'] * mib:>8.2f}  {err}")
        quantized = [t for t in self.tensors if t.rel_rms is not None]
        if quantized:
            w = np.array([np.prod(t.ne, dtype=np.float64) for t in quantized])
            e = np.array([t.rel_rms for t in quantized])
            worst = max(quantized, key=lambda t: t.rel_rms)
            lines.append(f"  weighted rel RMS error {float(np.sqrt((w * e * e).sum() / w.sum())):.4g}; worst {worst.name} ({worst.dst}) {worst.rel_rms:.4g}")
        notes: dict[tuple[str, str], int] = OrderedDict()
        for t in self.tensors:
            if t.note:
                notes[(t.kind, t.note)] = notes.get((t.kind, t.note), 0) + 1
        for (kind, note), n in notes.items():
            lines.append(f"  fallback: {kind} ({n} tensor{'s' if n > 1 else ''}): {note}")
        if self.ppl_out is not None:
            ref = f"{self.ppl_in:.4f} -> " if self.ppl_in is not None else ""
            delta = f" ({100.0 * (self.ppl_out / self.ppl_in - 1):+.2f} %)" if self.ppl_in else ""
            lines.append(f"  perplexity {ref}{self.ppl_out:.4f}{delta}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading


def _open(src: Path):
    """(GGUFFile, raw metadata entries [(key, bytes)] in file order) of the input."""
    from ..llm._gguf import GGUFFile

    if src.exists() and not src.is_file():
        raise ModelFormatError(str(src), "not a regular file")
    g = GGUFFile(src)  # ModelNotFoundError / ModelFormatError with the reason
    return g, _raw_kv(g)


# GGUF value type -> byte size of a scalar (string: 8, 9: array, handled apart)
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _raw_kv(g) -> list[tuple[str, bytes]]:
    """Each metadata entry's exact bytes (key, type, value), so the output copies them unchanged
    without decoding (and re-encoding) a 262k-entry vocabulary."""
    with open(g.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            return _scan_kv(g.path, buf)
        finally:
            buf.release()


def _scan_kv(path, buf) -> list[tuple[str, bytes]]:
    n_kv = struct.unpack_from("<Q", buf, 16)[0]
    pos, out = 24, []
    unpack = struct.unpack_from
    for _ in range(n_kv):
        start = pos
        (klen,) = unpack("<Q", buf, pos)
        key = bytes(buf[pos + 8 : pos + 8 + klen]).decode("utf-8", "replace")
        pos += 8 + klen
        (vtype,) = unpack("<I", buf, pos)
        pos += 4
        if vtype == 8:
            pos += 8 + unpack("<Q", buf, pos)[0]
        elif vtype == 9:
            etype, count = unpack("<IQ", buf, pos)
            pos += 12
            if etype == 8:
                for _ in range(count):
                    pos += 8 + unpack("<Q", buf, pos)[0]
            elif etype in _SCALAR_SIZE:
                pos += count * _SCALAR_SIZE[etype]
            else:
                raise UnsupportedModelError(path, f"metadata {key!r}: arrays of GGUF type {etype} are not supported")
        else:
            pos += _SCALAR_SIZE[vtype]
        out.append((key, bytes(buf[start:pos])))
    return out


def _kv_u32(key: str, value: int) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<II", _U32, value)


def _tensor_rows(t) -> np.ndarray:
    """The tensor's raw bytes as (rows, bytes per row) uint8, without copying the mapping."""
    raw = np.asarray(t.data).reshape(-1).view(np.uint8)
    rows = int(np.prod([int(d) for d in t.shape[1:]], dtype=np.int64)) if len(t.shape) > 1 else 1
    return raw.reshape(rows, -1)


# --------------------------------------------------------------------------- writing

_ROW_CHUNK_ELEMENTS = 1 << 22  # rows converted at once: bounds the float32 working copy


def _convert(t, p: TensorPlan, threads) -> tuple[np.ndarray, float]:
    """Output bytes (rows, bytes per row) of one tensor and its relative RMS error."""
    src_t, dst_t = quant_type(p.src), quant_type(p.dst)
    rows_in = _tensor_rows(t)
    nrows, k = rows_in.shape[0], p.ne[0]
    out_row = (k // dst_t.block) * dst_t.nbytes
    out = np.empty((nrows, out_row), np.uint8)
    step = max(1, _ROW_CHUNK_ELEMENTS // max(1, k))
    err = ref = 0.0
    for a in range(0, nrows, step):
        b = min(nrows, a + step)
        x = src_t.dequantize(rows_in[a:b]).reshape(b - a, k)
        if dst_t.name in ENCODERS:
            out[a:b] = encode_blocks(x, dst_t.name, threads=threads)
        elif dst_t.name in ("F16", "F32"):
            if dst_t.name == "F16" and np.abs(x).max(initial=0) > 65504:
                raise QuantizationError(f"tensor {p.name}: values exceed the F16 range of its fallback type")
            out[a:b] = x.astype(np.float16 if dst_t.name == "F16" else np.float32).view(np.uint8)
        else:
            raise QuantizationError(f"tensor {p.name}: no encoder for {dst_t.name}")
        y = dst_t.dequantize(out[a:b])
        if not np.isfinite(y).all():
            raise QuantizationError(f"tensor {p.name}: {dst_t.name} blocks decode to non-finite values")
        xf = x.reshape(-1)
        y -= xf
        err += float(np.dot(y, y))
        ref += float(np.dot(xf, xf))
    rel = float(np.sqrt(err / ref)) if ref > 0 else float(np.sqrt(err))
    return out, rel


def _pad(n: int, align: int) -> int:
    return (align - n % align) % align


def quantize_gguf(
    src,
    dst,
    to: str = "Q4_K_M",
    *,
    threads: int | None = None,
    eval_text: str | None = None,
    eval_ctx: int = 512,
    eval_chunks: int | None = None,
    progress=None,
) -> GGUFQuantReport:
    """Quantize GGUF file ``src`` to llama.cpp file type ``to``, written atomically to ``dst``.

    ``eval_text``: a text whose perplexity (``n_ctx=eval_ctx``, at most ``eval_chunks`` chunks) is
    measured with edgesdk's runtime on the input and on the output. ``progress(i, n, name)`` is
    called before each tensor (``i`` tensors of ``n`` done), then once with ``i == n`` and ``name == ""``
    when every tensor is written (before the perplexity runs). Errors: ModelNotFoundError (no input), ModelFormatError (not a
    GGUF), QuantizationError (unknown type, NaN/Inf weights, fp16 overflow).
    """
    target, ftype, _ = file_type(to)
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    g, raw_kv = _open(src)
    if dst.exists() and dst.resolve() == src.resolve():
        raise QuantizationError("the output must be a different file from the input")
    if int(g.get("split.count", 1) or 1) > 1:
        raise UnsupportedModelError(str(src), "split GGUF input: merge the shards first (llama-gguf-split --merge)")
    arch = str(g.get("general.architecture", "") or "")
    warnings = []
    tensors = []
    for t in g.tensors.values():
        try:
            tname = quant_type(t.tensor_type).name
        except UnsupportedModelError:
            tname = t.tensor_type.name
        tensors.append((t.name, tuple(int(d) for d in t.shape), tname))

    def hp(key, default=0):
        v = g.get(f"{arch}.{key}", default)
        return int(np.max(v)) if np.ndim(v) else int(v)

    plans = plan(
        tensors,
        target,
        arch=arch,
        n_layer=hp("block_count", 0) or None,
        n_expert=hp("expert_count"),
        n_head=hp("attention.head_count"),
        n_head_kv=hp("attention.head_count_kv"),
    )
    for p in plans:
        if p.dst != p.src and p.src not in _SUPPORTED_SOURCES:
            raise UnsupportedModelError(str(src), f"tensor {p.name} is {p.src}, which cannot be converted")
    requantized = sum(p.dst != p.src and p.src not in ("F32", "F16", "BF16") for p in plans)
    if requantized:
        warnings.append(
            f"{requantized} tensor(s) requantized from an already-quantized source: their errors add to "
            "the source's own (quantize from an F32/F16/BF16 file when there is one)"
        )

    align = int(g.get("general.alignment", 32) or 32)
    skip = {"general.file_type", "general.quantization_version", "split.no", "split.count", "split.tensors.count"}
    kv = [b for key, b in raw_kv if key not in skip]
    kv.append(_kv_u32("general.quantization_version", 2))
    kv.append(_kv_u32("general.file_type", ftype))

    sizes = []
    for p in plans:
        t = quant_type(p.dst) if p.dst in _SUPPORTED_SOURCES else None
        nrows = int(np.prod(p.ne[1:], dtype=np.int64)) if len(p.ne) > 1 else 1
        sizes.append(nrows * (p.ne[0] // t.block) * t.nbytes if (t is not None and p.dst != p.src) else None)
    by_name = g.tensors
    for i, p in enumerate(plans):
        if sizes[i] is None:
            sizes[i] = int(by_name[p.name].n_bytes)

    results = []
    with atomic_open(dst) as f:
        f.write(struct.pack("<IIQQ", _GGUF_MAGIC, 3, len(plans), len(kv)))
        for b in kv:
            f.write(b)
        off = 0
        for p, size in zip(plans, sizes):
            nm = p.name.encode()
            f.write(struct.pack("<Q", len(nm)) + nm + struct.pack("<I", len(p.ne)))
            f.write(struct.pack(f"<{len(p.ne)}Q", *p.ne))
            f.write(struct.pack("<IQ", _type_code(p.dst, by_name[p.name]), off))
            off += size + _pad(size, align)
        f.write(b"\0" * _pad(f.tell(), align))
        for i, (p, size) in enumerate(zip(plans, sizes)):
            if progress is not None:
                progress(i, len(plans), p.name)
            t = by_name[p.name]
            if p.dst == p.src:
                data, rel = np.asarray(t.data).reshape(-1).view(np.uint8), None
            else:
                data, rel = _convert(t, p, threads)
            if data.nbytes != size:
                raise QuantizationError(f"tensor {p.name}: wrote {data.nbytes} bytes, expected {size}")
            f.write(memoryview(np.ascontiguousarray(data).reshape(-1)))
            f.write(b"\0" * _pad(size, align))
            results.append(TensorResult(p.name, p.ne, p.src, p.dst, int(t.n_bytes), size, rel, p.note))
        if progress is not None:
            progress(len(plans), len(plans), "")
    seconds = time.perf_counter() - t0
    ppl_in = ppl_out = None
    if eval_text is not None:
        ppl_in, ppl_out = _perplexities(src, dst, eval_text, eval_ctx, eval_chunks, threads, warnings)
    return GGUFQuantReport(str(src), str(dst), target, tuple(results), seconds, ppl_in, ppl_out, tuple(warnings))


def _type_code(name: str, t) -> int:
    try:
        return quant_type(name).code
    except UnsupportedModelError:
        return int(t.tensor_type)


def _perplexities(src, dst, text, n_ctx, chunks, threads, warnings):
    from ..llm import LLM

    out = []
    for path in (src, dst):
        try:
            m = LLM(str(path), threads=threads)
            try:
                out.append(float(m.perplexity(text, n_ctx=n_ctx, max_chunks=chunks).ppl))
            finally:
                m.close()
        except Exception as exc:  # the input may use a feature the runtime lacks; report, keep the file
            warnings.append(f"perplexity of {path}: {type(exc).__name__}: {exc}")
            out.append(None)
    return out[0], out[1]
