"""Model files: detect the format and validate the bytes before any native runtime sees them.

Native runtimes trust their input; a truncated flatbuffer or a garbage protobuf can crash them.
So every file is checked here first and every failure is a typed error naming the file and the cause.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from ._errors import ModelFormatError, ModelLoadError, ModelNotFoundError, UnsupportedModelError
from .backend import Model, TensorSpec

__all__ = ["open_model", "model_sha256", "KNOWN_EXTENSIONS"]

KNOWN_EXTENSIONS = {".onnx": "onnx", ".tflite": "tflite", ".lite": "tflite", ".gguf": "gguf"}


def _sniff(head: bytes) -> str | None:
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) >= 8 and head[4:8] in (b"TFL3", b"TFL2"):
        return "tflite"
    return None


def open_model(path, registry=None) -> Model:
    """Check ``path`` and return a :class:`Model` with what the format probe learned in ``info``."""
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise ModelNotFoundError(p, "no such file")
    if p.is_dir():
        fmt = registry.detect_format(p, b"") if registry else None
        if fmt is None:
            raise ModelFormatError(p, "is a directory and no installed plugin recognises it as a model")
        return Model(path=str(p), format=fmt, size=sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise ModelNotFoundError(p, f"cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise ModelFormatError(p, "file is empty")
    sniffed = _sniff(head)
    by_ext = KNOWN_EXTENSIONS.get(p.suffix.lower())
    if sniffed and by_ext and sniffed != by_ext:
        raise ModelFormatError(p, f"extension {p.suffix!r} says {by_ext} but the content is {sniffed}")
    fmt = sniffed or by_ext
    if fmt is None and registry is not None:
        fmt = registry.detect_format(p, head)
    if fmt is None:
        fmt = "onnx" if head[:1] == b"\x08" else None  # ONNX has no magic; ModelProto starts with ir_version (field 1, varint)
    if fmt is None:
        raise ModelFormatError(p, f"unrecognised model format (first bytes {head[:8].hex()}; expected ONNX, TFLite or GGUF)")
    probe = _PROBES.get(fmt)
    info = probe(p, size) if probe else {}
    return Model(path=str(p), format=fmt, size=size, info=info)


# Parsers of untrusted bytes fail with whatever their code hit; the user needs the cause in words.
_PARSE_FAILURES = (
    (UnicodeError, "a name or string is not valid UTF-8"),
    (struct.error, "a field runs past the end of the data"),
    (IndexError, "an offset or index points outside the data"),
    ((OverflowError, TypeError), "a field holds a value out of its range"),
    (RecursionError, "structures are nested impossibly deep"),
    (MemoryError, "a size field asks for more memory than there is"),
)


def _why_unparsable(exc: BaseException) -> str:
    """What a parser's exception means for the file, in words, with the parser's own detail."""
    why = next((w for types, w in _PARSE_FAILURES if isinstance(exc, types)), "it does not parse")
    detail = str(exc).strip()
    return f"{why} ({detail})" if detail else why


# -- ONNX -----------------------------------------------------------------------------------------


def _onnx_specs(values, initializers=frozenset()):
    return tuple(_onnx_value_spec(v.name, v.type) for v in values if v.name not in initializers)


def _onnx_value_spec(name: str, tp) -> TensorSpec:
    """The TensorSpec of an ONNX TypeProto: a tensor, or a sequence/optional/map of what it holds."""
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        tt = tp.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        return TensorSpec(name, shape, _onnx_dtype(tt.elem_type))
    if which == "sequence_type":
        return TensorSpec.sequence(name, _onnx_value_spec(name, tp.sequence_type.elem_type))
    if which == "optional_type":
        return TensorSpec.optional(name, _onnx_value_spec(name, tp.optional_type.elem_type))
    if which == "map_type":
        return TensorSpec.map(name, _onnx_dtype(tp.map_type.key_type), _onnx_value_spec(name, tp.map_type.value_type))
    return TensorSpec(name, None, np.dtype(object))  # untyped or sparse: nothing to check against


def _onnx_dtype(elem_type: int) -> np.dtype:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # UNDEFINED and types numpy cannot name
        return np.dtype(object)


def _probe_onnx(p: Path, size: int) -> dict:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        m = onnx.load_model(str(p), load_external_data=False)
    except DecodeError as exc:
        raise ModelFormatError(p, f"not a valid ONNX protobuf (corrupt or truncated): {exc}") from exc
    except Exception as exc:  # protobuf raises assorted types on garbage
        raise ModelFormatError(p, f"not a valid ONNX protobuf (corrupt or truncated): {_why_unparsable(exc)}") from exc
    try:
        return _onnx_info(p, m)
    except TypeError as exc:  # protobuf hands string fields that are not valid UTF-8 back as bytes
        raise ModelFormatError(p, f"a name in the ONNX graph is not valid UTF-8 text (corrupt file): {exc}") from exc


def _onnx_info(p: Path, m) -> dict:
    """What the probe reports of a parsed ModelProto, refusing graphs no runtime could load."""
    import onnx

    if m.ir_version < 3 or m.ir_version > onnx.IR_VERSION:
        raise ModelFormatError(p, f"ONNX ir_version {m.ir_version} is outside the supported range 3..{onnx.IR_VERSION} (corrupt file?)")
    if not m.opset_import:
        raise ModelFormatError(p, "ONNX model declares no opset_import")
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    max_opset = onnx.defs.onnx_opset_version()
    if opsets.get("ai.onnx", 0) > max_opset:
        raise UnsupportedModelError(p, f"uses opset {opsets['ai.onnx']} of ai.onnx; this installation supports up to {max_opset}")
    g = m.graph
    if not g.output:
        raise ModelFormatError(p, "ONNX graph has no outputs")
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {t.name for t in g.sparse_initializer} | {""}
    for n in g.node:
        for name in n.input:
            if name not in known:
                raise ModelFormatError(p, f"node {n.name or n.op_type!r} reads {name!r}, which nothing produces (corrupt graph)")
        known.update(n.output)
    for o in g.output:
        if o.name not in known:
            raise ModelFormatError(p, f"graph output {o.name!r} is produced by no node")
    ext = sorted({e.value for t in g.initializer for e in t.external_data if e.key == "location"})
    for loc in ext:
        f = (p.parent / loc).resolve()
        if not f.is_file():
            raise ModelNotFoundError(p, f"external data file {loc!r} is missing")
    inits = {t.name for t in g.initializer}
    return {
        "ir_version": m.ir_version,
        "opsets": opsets,
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "op_types": sorted({(n.domain or "ai.onnx") + "::" + n.op_type for n in g.node}),
        "node_count": len(g.node),
        "inputs": _onnx_specs(g.input, inits),
        "outputs": _onnx_specs(g.output),
        "external_data": ext,
    }


# -- TFLite ---------------------------------------------------------------------------------------

_TFL_DTYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    5: object,
    6: np.bool_,
    7: np.int16,
    8: np.complex64,
    9: np.int8,
    10: np.float64,
    11: np.complex128,
    12: np.uint64,
    15: np.uint32,
    16: np.uint16,
}


def _probe_tflite(p: Path, size: int) -> dict:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tflite_runtime-only installs
        try:
            from tflite_runtime import schema_py_generated as schema  # type: ignore
        except ImportError:
            return {}
    data = p.read_bytes()
    try:
        m = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:
        raise ModelFormatError(p, f"not a valid TFLite flatbuffer (corrupt or truncated): {_why_unparsable(exc)}") from exc
    subgraphs = m.subgraphs or []
    if not subgraphs:
        raise ModelFormatError(p, "TFLite model has no subgraphs")
    nbuf, nop = len(m.buffers or []), len(m.operatorCodes or [])
    for b in m.buffers or []:
        if getattr(b, "offset", 0) and (b.offset + b.size > size or b.offset < 0):
            raise ModelFormatError(p, f"buffer at offset {b.offset} size {b.size} lies outside the {size}-byte file (truncated)")
    ops = set()
    for si, sg in enumerate(subgraphs):
        tensors = sg.tensors or []
        nt = len(tensors)

        def bad(idx, nt=nt):
            return idx is not None and not (-1 <= int(idx) < nt)

        for ti, t in enumerate(tensors):
            if t.buffer is not None and not (0 <= t.buffer < max(nbuf, 1)):
                raise ModelFormatError(p, f"subgraph {si}: tensor references buffer {t.buffer} of {nbuf}")
            _check_tflite_shape(p, si, ti, t, m.buffers)
        for idx in list(sg.inputs if sg.inputs is not None else []) + list(sg.outputs if sg.outputs is not None else []):
            if bad(idx) or idx < 0:
                raise ModelFormatError(p, f"subgraph {si}: input/output tensor index {idx} out of range ({nt} tensors)")
        for op in sg.operators or []:
            if not (0 <= op.opcodeIndex < nop):
                raise ModelFormatError(p, f"subgraph {si}: operator uses opcode {op.opcodeIndex} of {nop}")
            for idx in list(op.inputs if op.inputs is not None else []) + list(op.outputs if op.outputs is not None else []):
                if bad(idx):
                    raise ModelFormatError(p, f"subgraph {si}: operator tensor index {idx} out of range ({nt} tensors)")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for si, sg in enumerate(subgraphs):
        for oi, op in enumerate(sg.operators or []):
            oc = m.operatorCodes[op.opcodeIndex]
            op_name = names.get(max(oc.builtinCode or 0, oc.deprecatedBuiltinCode or 0))
            _check_tflite_arity(p, si, oi, op_name, op)
            _check_tflite_elementwise(p, si, oi, op_name, op, sg.tensors or [])
    for oc in m.operatorCodes or []:
        code = max(oc.builtinCode or 0, oc.deprecatedBuiltinCode or 0)
        ops.add(_utf8(p, oc.customCode, "a custom op code") if oc.customCode else names.get(code, str(code)))

    def specs(idxs):
        out = []
        for i in idxs if idxs is not None else []:
            t = subgraphs[0].tensors[i]
            sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
            shape = tuple(None if int(d) < 0 else int(d) for d in (sig if sig is not None else []))
            name = _utf8(p, t.name, f"tensor {i}'s name") if isinstance(t.name, bytes) else str(t.name)
            out.append(TensorSpec(name, shape, np.dtype(_TFL_DTYPES.get(t.type, object))))
        return tuple(out)

    return {
        "version": m.version,
        "subgraphs": len(subgraphs),
        "op_types": sorted(ops),
        "inputs": specs(subgraphs[0].inputs),
        "outputs": specs(subgraphs[0].outputs),
    }


#: No tensor of an on-device model is this large; a larger declared shape is a corrupt dimension
#: (LiteRT would try to allocate or loop over it and hang).
_TFL_MAX_TENSOR_BYTES = 4 << 30


def _check_tflite_shape(p: Path, si: int, ti: int, t, buffers) -> None:
    """A tensor's shape must be sane, and a constant's data exactly as long as its shape says:
    LiteRT trusts both and reads past the buffer (a crash) or allocates without bound (a hang)."""
    shape = [int(d) for d in (t.shape if t.shape is not None else [])]
    if any(d < 0 for d in shape):
        raise ModelFormatError(p, f"subgraph {si}: tensor {ti} has a negative dimension in shape {shape}")
    dtype = _TFL_DTYPES.get(t.type)
    if dtype is None or dtype is object:
        return  # strings, resources, variants and sub-byte types: no fixed element size to check
    n_bytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if n_bytes > _TFL_MAX_TENSOR_BYTES:
        raise ModelFormatError(p, f"subgraph {si}: tensor {ti} shape {shape} would take {n_bytes} bytes (corrupt dimension)")
    buf = buffers[t.buffer] if buffers and t.buffer else None
    stored = _tflite_buffer_size(buf)
    if stored and t.sparsity is None and stored != n_bytes:
        raise ModelFormatError(
            p, f"subgraph {si}: constant tensor {ti} has shape {shape} ({n_bytes} bytes) but its buffer holds {stored} bytes (corrupt shape or buffer)"
        )


# Resource-variable ops are the only builtins without inputs or without outputs.
_TFL_NO_INPUTS = frozenset({"VAR_HANDLE", "CALL_ONCE"})
_TFL_NO_OUTPUTS = frozenset({"ASSIGN_VARIABLE", "CALL_ONCE"})


def _check_tflite_arity(p: Path, si: int, oi: int, op_name: str | None, op) -> None:
    """An operator whose input or output list is missing is corrupt: LiteRT's delegates index it unchecked."""
    for what, idxs, exempt in (("inputs", op.inputs, _TFL_NO_INPUTS), ("outputs", op.outputs, _TFL_NO_OUTPUTS)):
        if (idxs is None or not len(idxs)) and op_name not in exempt and op_name != "CUSTOM":
            raise ModelFormatError(p, f"subgraph {si}: operator {oi} ({op_name or 'unknown op'}) has no {what} (corrupt operator table)")


# Ops whose output has their first input's shape. LiteRT's delegates size copies of constant inputs
# (a DEQUANTIZEd weight) by the *output's* declared shape, so a corrupt one reads past the buffer.
_TFL_ELEMENTWISE = frozenset(
    {"DEQUANTIZE", "QUANTIZE", "CAST", "RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "ABS", "NEG", "ELU", "LEAKY_RELU"}
)


def _check_tflite_elementwise(p: Path, si: int, oi: int, op_name: str | None, op, tensors) -> None:
    if op_name not in _TFL_ELEMENTWISE or op.inputs is None or op.outputs is None or not len(op.inputs) or not len(op.outputs):
        return
    if op.inputs[0] < 0 or op.outputs[0] < 0:  # an omitted optional tensor
        return
    shape_in, shape_out = (list(tensors[int(i)].shape if tensors[int(i)].shape is not None else []) for i in (op.inputs[0], op.outputs[0]))
    if shape_in and shape_out and shape_in != shape_out:
        raise ModelFormatError(
            p,
            f"subgraph {si}: operator {oi} ({op_name}) maps shape {[int(d) for d in shape_in]} to "
            f"{[int(d) for d in shape_out]}; an elementwise op keeps the shape (corrupt tensor shape)",
        )


def _utf8(p: Path, raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ModelFormatError(p, f"{what} is not valid UTF-8 text (corrupt file)") from None


def _tflite_buffer_size(buf) -> int:
    if buf is None:
        return 0
    if getattr(buf, "offset", 0):  # models over 2 GB keep buffers outside the flatbuffer
        return int(buf.size)
    return len(buf.data) if buf.data is not None else 0


# -- GGUF -----------------------------------------------------------------------------------------


def _probe_gguf(p: Path, size: int) -> dict:
    # The LLM runtime's lean header reader: gguf.GGUFReader builds an array per metadata element
    # (seconds and ~200 MB for a 49k-token vocabulary); this reads the same facts in ~0.1 s.
    from .llm._gguf import GGUFFile

    try:
        f = GGUFFile(p)
    except ModelLoadError:
        raise
    except Exception as exc:  # garbage headers surface as assorted errors
        raise ModelFormatError(p, f"not a valid GGUF file (corrupt or truncated): {_why_unparsable(exc)}") from exc
    try:
        arch = f.meta.get("general.architecture")
        return {
            "architecture": arch,
            "name": f.meta.get("general.name"),
            "tensor_count": len(f.tensors),
            "tensor_types": sorted({t.tensor_type.name for t in f.tensors.values()}),
            "tensor_kinds": _tensor_kinds(f.tensors.values()),
            "context_length": f.meta.get(f"{arch}.context_length") if arch else None,
            "features": _gguf_features(f),
        }
    finally:
        f.close()


def _gguf_features(f) -> list[str] | None:
    """The forward-pass primitives the model needs (placement matches them to backends); None if unknown."""
    try:
        return sorted(f.config().features)
    except ModelLoadError:  # unknown architecture or missing metadata: refused later, by name
        return None


def _tensor_kinds(tensors) -> dict[str, list[str]]:
    """type name -> the tensor kinds using it ("attn_q", "ffn_down", "token_embd"): what placement names."""
    out: dict[str, set[str]] = {}
    for t in tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and len(parts) > 2:
            parts = parts[2:]
        if parts[-1] in ("weight", "bias") and len(parts) > 1:
            parts = parts[:-1]
        out.setdefault(t.tensor_type.name, set()).add(".".join(parts))
    return {k: sorted(v) for k, v in sorted(out.items())}


_PROBES = {"onnx": _probe_onnx, "tflite": _probe_tflite, "gguf": _probe_gguf}


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    p = Path(path)
    if not p.is_dir():
        with open(p, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        with open(f, "rb") as fh:
            h.update(f"{f.relative_to(p).as_posix()}\0{hashlib.file_digest(fh, 'sha256').hexdigest()}\n".encode())
    return h.hexdigest()


def model_sha256(path) -> str:
    """sha256 of a model file (of its files' names and digests, for a directory), memoised per
    (path, size, mtime) in this process."""
    real = os.path.realpath(path)
    st = os.stat(real)
    newest = max([st.st_mtime_ns] + [q.stat().st_mtime_ns for q in Path(real).rglob("*")]) if os.path.isdir(real) else st.st_mtime_ns
    return _digest(real, st.st_size, newest)
