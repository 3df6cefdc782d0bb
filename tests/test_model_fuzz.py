"""Corrupt K-quant GGUF files (Q4_K/Q5_K/Q6_K tensors) give typed errors naming the file and the cause.

Truncations at every region, bit flips, and huge or wrong-typed counts, dims, offsets and metadata
are opened through the GGUF reader and through ``edgesdk.Session``: each either opens or raises an
``EdgeSDKError`` whose text says the cause in words (no bare ``IndexError``/``struct.error``).
Cases where a hang or a giant allocation is plausible (huge values) run in the fuzzer's worker
process (``scripts/fuzz_models.py``) with a timeout.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgesdk
from edgesdk._errors import EdgeSDKError, ModelFormatError
from edgesdk.llm._gguf import GGUFFile

from test_architectures import write_model

# Every matrix K-quantized, as a Q4_K_M/Q5_K_M/Q6_K file mixes them.
KQUANT = {
    "token_embd": "Q6_K",
    "output": "Q6_K",
    "attn_q": "Q4_K",
    "attn_k": "Q4_K",
    "attn_v": "Q6_K",
    "attn_output": "Q5_K",
    "ffn_gate": "Q4_K",
    "ffn_up": "Q5_K",
    "ffn_down": "Q6_K",
}


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_models", os.path.join(os.path.dirname(__file__), "..", "scripts", "fuzz_models.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


fuzz = _fuzz_module()


@pytest.fixture(scope="module")
def kquant(tmp_path_factory):
    """(path, bytes, regions) of a one-layer llama GGUF with K-quant matrices."""
    path = write_model(tmp_path_factory.mktemp("kquant") / "k.gguf", "llama", layers=1, types=KQUANT)
    with edgesdk.Session(path) as s:  # the unmutated file opens
        assert {"Q4_K", "Q5_K", "Q6_K"} <= set(s.model.info["tensor_types"])
    raw = open(path, "rb").read()
    return path, raw, fuzz._regions(path, "gguf", len(raw))


def assert_typed_or_opens(path: str) -> None:
    """Both entry points either open ``path`` or raise a typed error naming it, the cause in words."""
    for open_ in (GGUFFile, edgesdk.Session):
        try:
            opened = open_(path)
        except EdgeSDKError as exc:
            assert path in str(exc), str(exc)
            assert not fuzz._RAW.search(str(exc)), f"a bare exception name in the message: {exc}"
        else:
            opened.close()


def _write(tmp_path, data: bytes, name="m.gguf") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("region", ["header", "metadata", "tensor-infos", "data"])
def test_truncation_in_every_region_is_a_format_error(tmp_path, kquant, region):
    path, raw, regions = kquant
    lo, hi = regions[region]
    for n in sorted({lo, (lo + hi) // 2, hi - 1}):
        p = _write(tmp_path, raw[:n])
        with pytest.raises(ModelFormatError, match="truncated|not a GGUF|bad magic|empty") as e:
            edgesdk.Session(p)
        assert p in str(e.value) and not fuzz._RAW.search(str(e.value))
        assert_typed_or_opens(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bit_flips_before_the_data_give_typed_errors(tmp_path, kquant, data):
    _, raw, regions = kquant
    buf = bytearray(raw)
    end = regions["tensor-infos"][1]
    for _ in range(data.draw(st.integers(1, 6), label="flips")):
        at = data.draw(st.integers(0, end - 1), label="offset")
        buf[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    assert_typed_or_opens(_write(tmp_path, bytes(buf)))


# -- huge and wrong-typed fields, located by name in the file ----------------------------------


def _key_value_at(raw: bytes, key: str) -> tuple[int, int]:
    """(offset of the value-type u32, offset of the value) of metadata ``key``."""
    at = raw.index(struct.pack("<Q", len(key)) + key.encode()) + 8 + len(key)
    return at, at + 4


def _tensor_info_at(raw: bytes, name: str) -> dict[str, int]:
    """Offsets of a tensor info's n_dims, first dim, type code and data offset."""
    at = raw.index(struct.pack("<Q", len(name)) + name.encode(), 24) + 8 + len(name)
    n_dims = struct.unpack_from("<I", raw, at)[0]
    return {"n_dims": at, "dim0": at + 4, "type": at + 4 + 8 * n_dims, "offset": at + 8 + 8 * n_dims}


def _huge_cases(raw: bytes) -> dict[str, list[tuple[int, bytes]]]:
    t = _tensor_info_at(raw, "blk.0.ffn_down.weight")  # a Q6_K matrix
    tok = _tensor_info_at(raw, "token_embd.weight")

    def meta(key, fmt, value):
        return [(_key_value_at(raw, key)[1], struct.pack(fmt, value))]

    def retype(key, code):
        return [(_key_value_at(raw, key)[0], struct.pack("<I", code))]

    u64max = 2**64 - 1
    return {
        "tensor count 2^64-1": [(8, struct.pack("<Q", u64max))],
        "metadata count 2^63": [(16, struct.pack("<Q", 2**63))],
        "key length 2^64-1": [(24, struct.pack("<Q", u64max))],
        "token list count 2^40": [(_key_value_at(raw, "tokenizer.ggml.tokens")[1] + 4, struct.pack("<Q", 2**40))],
        "n_dims 2^32-1": [(t["n_dims"], struct.pack("<I", 2**32 - 1))],
        "dim 2^63": [(t["dim0"], struct.pack("<Q", 2**63))],
        "dim not a multiple of the K block": [(t["dim0"], struct.pack("<Q", 255))],
        "dim 0": [(t["dim0"], struct.pack("<Q", 0))],
        "data offset 2^63": [(t["offset"], struct.pack("<Q", 2**63))],
        "unknown type code": [(t["type"], struct.pack("<I", 9999))],
        "Q6_K tensor retyped Q4_K": [(t["type"], struct.pack("<I", 12))],
        "embeddings retyped F32": [(tok["type"], struct.pack("<I", 0))],
        "context_length 2^32-1": meta("llama.context_length", "<I", 2**32 - 1),
        "block_count 2^32-1": meta("llama.block_count", "<I", 2**32 - 1),
        "embedding_length 0": meta("llama.embedding_length", "<I", 0),
        "head_count 0": meta("llama.attention.head_count", "<I", 0),
        "head_count_kv 3 (does not divide)": meta("llama.attention.head_count_kv", "<I", 3),
        "vocab_size 2^31": meta("llama.vocab_size", "<I", 2**31),
        "embedding_length typed f32": retype("llama.embedding_length", 6),
        "embedding_length typed string": retype("llama.embedding_length", 8),
        "context_length typed array": retype("llama.context_length", 9),
        "value type 2^32-1": retype("llama.block_count", 2**32 - 1),
    }


def test_huge_and_wrong_typed_fields_give_typed_errors(tmp_path, kquant):
    _, raw, _ = kquant
    worker, failures = fuzz.Worker(timeout=60), []
    try:
        for i, (case, patches) in enumerate(_huge_cases(raw).items()):
            buf = bytearray(raw)
            for at, data in patches:
                buf[at : at + len(data)] = data
            p = _write(tmp_path, bytes(buf), f"case{i}.gguf")
            r = worker.open(p)
            if r["outcome"] not in ("typed", "ok"):
                failures.append(f"{case}: {r}")
            elif r["outcome"] == "typed":
                assert p in r["message"]
    finally:
        worker.stop()
    assert not failures, "\n".join(failures)


# -- TFLite files the fuzzer found crashing or hanging LiteRT: refused before LiteRT sees them --------


def _repacked_tflite(tmp_path, name: str, edit) -> str:
    """Hub model ``name`` with ``edit(model, subgraph)`` applied to its object tree, packed again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from conftest import hub_path

    m = schema.ModelT.InitFromPackedBuf(open(hub_path(name), "rb").read(), 0)
    edit(m, m.subgraphs[0])
    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return _write(tmp_path, bytes(b.Output()), "edited.tflite")


def _op_index(m, sg, op_name: str) -> int:
    from ai_edge_litert import schema_py_generated as schema

    code = getattr(schema.BuiltinOperator, op_name)
    return next(
        i
        for i, op in enumerate(sg.operators)
        if max(m.operatorCodes[op.opcodeIndex].builtinCode, m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == code
    )


def _scaled(shape, axis: int, factor: int):
    out = [int(d) for d in shape]  # the parsed arrays are read-only views of the file
    out[axis] *= factor
    return out


def _grow_dequantize_output(m, sg):  # SIGSEGV in XNNPACK before the check
    out = sg.tensors[sg.operators[_op_index(m, sg, "DEQUANTIZE")].outputs[0]]
    out.shape = _scaled(out.shape, 0, 3)


def _grow_constant(m, sg):
    t = next(t for t in sg.tensors if t.buffer and m.buffers[t.buffer].data is not None and len(t.shape))
    t.shape = _scaled(t.shape, 0, 2)


def _huge_activation(m, sg):  # a hang before the check
    t = next(t for t in sg.tensors if not t.buffer and len(t.shape) == 4)
    t.shape = _scaled(t.shape, 2, 2**15)


def _drop_inputs(m, sg):  # SIGSEGV before the check
    sg.operators[_op_index(m, sg, "CONV_2D")].inputs = None


@pytest.mark.parametrize(
    "name,edit,match",
    [
        ("face-detection-full", _grow_dequantize_output, "elementwise op keeps the shape"),
        ("wakeword-okay-nabu", _grow_constant, "buffer holds"),
        ("face-detection", _huge_activation, "corrupt dimension"),
        ("wakeword-okay-nabu", _drop_inputs, "has no inputs"),
    ],
)
def test_corrupt_tflite_is_refused_before_litert(tmp_path, name, edit, match):
    p = _repacked_tflite(tmp_path, name, edit)
    with pytest.raises(ModelFormatError, match=match):
        edgesdk.Session(p)
