"""The tensor-type table against gguf-py (the field's reference) and against the C kernels' side of it."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402

from edgesdk import _kernels_ref as ref  # noqa: E402
from edgesdk import hub, kernels  # noqa: E402
from edgesdk._errors import QuantizationError, UnsupportedModelError  # noqa: E402
from edgesdk.quant import TYPES, QuantizedTensor, from_gguf, from_gguf_bytes, quant_type, to_gguf_bytes  # noqa: E402
from gguf_blocks import finite_blocks  # noqa: E402
from kernel_bounds import within_f32_bound, within_int8_bound  # noqa: E402

QUANTIZED = [t for t in TYPES.values() if t.quantized]
C = kernels.available()
needs_c = pytest.mark.skipif(not C, reason="C kernels not built")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, NaN payloads aside (the sign of a NaN is not a value)."""
    a, b = np.asarray(a, np.float32).reshape(-1), np.asarray(b, np.float32).reshape(-1)
    na, nb = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and np.array_equal(na, nb) and np.array_equal(a[~na].view(np.uint32), b[~nb].view(np.uint32))


def test_rows_match_gguf_py_constants():
    for t in TYPES.values():
        g = gguf.GGMLQuantizationType[t.name]
        assert t.code == g.value and (t.block, t.nbytes) == gguf.GGML_QUANT_SIZES[g], t.name
        assert t.quantized == (t.sub > 0) and (not t.quantized or t.block % t.sub == 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.sampled_from(list(TYPES.values())), nblocks=st.integers(1, 6), data=st.data())
def test_dequantize_equals_gguf_py_bit_for_bit(t, nblocks, data):
    raw = np.frombuffer(data.draw(st.binary(min_size=t.nbytes * nblocks, max_size=t.nbytes * nblocks)), np.uint8)
    with np.errstate(all="ignore"):
        assert same_bits(t.dequantize(raw), gguf_dequantize(raw.reshape(1, -1), gguf.GGMLQuantizationType[t.name]))


@needs_c
@pytest.mark.parametrize("t", QUANTIZED, ids=lambda t: t.name)
def test_c_decoder_is_the_table_row(t):
    block, nbytes = kernels._ffi.new("int *"), kernels._ffi.new("int *")
    assert kernels._lib.ek_block_type(t.code, block, nbytes) == 0 and (block[0], nbytes[0]) == (t.block, t.nbytes)
    raw = finite_blocks(t.name, np.random.default_rng(t.code), 40)
    codes, scale, mn = t.decoded(raw)
    q = np.empty(t.block, np.int8)
    sc, m = np.empty(t.block // t.sub, np.float32), np.empty(t.block // t.sub, np.float32)
    f = kernels._ffi
    for i in range(len(raw)):
        assert (
            kernels._lib.ek_block_decode(
                t.code,
                f.from_buffer("unsigned char[]", raw[i].copy()),
                f.from_buffer("signed char[]", q),
                f.from_buffer("float[]", sc),
                f.from_buffer("float[]", m),
            )
            == 0
        )
        assert np.array_equal(q, codes[i]) and same_bits(sc, scale[i])
        assert same_bits(m, np.zeros_like(m) if mn is None else mn[i])


@needs_c
@pytest.mark.parametrize("t", QUANTIZED, ids=lambda t: t.name)
def test_matmul_every_type_every_path(t):
    rng = np.random.default_rng(100 + t.code)
    for m, n, k in ((1, 37, 512), (5, 20, 256 * 3), (9, 48, 1024)):
        qt = QuantizedTensor.from_blocks(finite_blocks(t.name, rng, n * k // t.block), t.name, (n, k))
        x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
        for path in kernels.info().simd_runnable:
            kernels.set_simd(path)
            assert within_f32_bound(kernels.matmul(x, qt, act="f32"), x, qt), (path, m, n, k)
            assert within_int8_bound(kernels.matmul(x, qt), x, qt), (path, m, n, k)
    kernels.set_simd("auto")


@needs_c
def test_block_results_identical_for_all_thread_counts():
    rng = np.random.default_rng(7)
    for name in ("Q4_K", "Q6_K", "Q5_0"):
        t = TYPES[name]
        qt = QuantizedTensor.from_blocks(finite_blocks(t.name, rng, 300 * 1024 // t.block), name, (300, 1024))
        x = rng.standard_normal((3, 1024)).astype(np.float32)
        for act in ("int8", "f32"):
            base = kernels.matmul(x, qt, act=act, threads=1)
            for th in (2, 3, 4):
                assert np.array_equal(kernels.matmul(x, qt, act=act, threads=th), base)


ROWS8 = [t for t in QUANTIZED if t.rows8]


def test_rows8_tables_cover_their_blocks():
    assert {t.name for t in ROWS8} == {"Q4_K", "Q5_K", "Q6_K", "Q5_0"}
    for t in ROWS8:
        assert sum(size for size, _ in t.rows8) == t.nbytes and all(size % word == 0 for size, word in t.rows8), t.name


@settings(max_examples=40, deadline=None)
@given(t=st.sampled_from(ROWS8), groups=st.integers(1, 3), nblk=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_rows8_is_a_lossless_permutation(t, groups, nblk, seed):
    """Interleaving 8 rows moves bytes only: the inverse gives the file's bytes back, every value
    decodes the same, and export is bit-exact; each row's block b is its fields' words in place."""
    n, k = 8 * groups, nblk * t.block
    raw = np.random.default_rng(seed).integers(0, 256, (n, nblk * t.nbytes), dtype=np.uint8)
    qt = QuantizedTensor.from_blocks(raw, t.name, (n, k), interleave=True)
    assert qt.rows8 and qt.qdata.shape == raw.shape and qt.nbytes == raw.nbytes
    assert np.array_equal(qt.gguf_blocks(), raw) and np.array_equal(t.deinterleave8(t.interleave8(raw)), raw)
    assert np.array_equal(to_gguf_bytes(qt)[1], raw)
    flat = QuantizedTensor.from_blocks(raw, t.name, (n, k), interleave=False)
    assert not flat.rows8 and np.array_equal(flat.qdata, raw)
    assert same_bits(qt.dequantize(), flat.dequantize()) and np.array_equal(qt.codes(), flat.codes())
    # the layout, spelled out: group g, block b, field f: word w of row r at 8*off_f + (8w + r) * word
    g, b, r = groups - 1, nblk - 1, 5
    grp = qt.qdata.reshape(groups, nblk, 8 * t.nbytes)[g, b]
    off = 0
    for size, word in t.rows8:
        for w in range(size // word):
            at = 8 * off + (8 * w + r) * word
            assert np.array_equal(grp[at : at + word], raw[8 * g + r, b * t.nbytes + off + w * word :][:word])
        off += size


def test_rows8_bad_input_is_a_typed_error():
    t = TYPES["Q4_K"]
    raw = np.zeros((8, t.nbytes), np.uint8)
    with pytest.raises(QuantizationError, match="multiple of 8"):
        attrs.evolve(QuantizedTensor.from_blocks(raw[:4], "Q4_K", (4, 256)), rows8=True)
    with pytest.raises(QuantizationError, match="8-row kernels"):
        attrs.evolve(QuantizedTensor.from_blocks(np.zeros((8, 18), np.uint8), "IQ4_NL", (8, 32)), rows8=True)
    with pytest.raises(UnsupportedModelError, match="no 8-row"):
        TYPES["Q8_0"].interleave8(np.zeros((8, 34), np.uint8))
    with pytest.raises(UnsupportedModelError, match="groups of 8 rows"):
        t.interleave8(np.zeros((12, t.nbytes), np.uint8))
    assert not QuantizedTensor.from_blocks(np.zeros((12, t.nbytes), np.uint8), "Q4_K", (12, 256), interleave=True).rows8  # row by row


@needs_c
def test_rows8_is_chosen_where_the_kernels_read_it():
    """The default layout follows the kernels in effect: interleaved on the x86 SIMD paths, row by
    row on the portable one (whose decoders would gather every row's block first)."""
    raw = np.zeros((8, TYPES["Q4_K"].nbytes), np.uint8)
    try:
        for path in kernels.info().simd_runnable:
            kernels.set_simd(path)
            native = kernels.rows8_native("Q4_K")
            assert native == (path in ("avx2", "avxvnni", "avx512vnni", "amx"))
            assert QuantizedTensor.from_blocks(raw, "Q4_K", (8, 256)).rows8 == native
            assert not kernels.rows8_native("Q8_0")
    finally:
        kernels.set_simd("auto")


@needs_c
def test_non_finite_and_huge_scales_never_crash():
    """Raw random bytes: NaN/Inf/65504 scales. The kernel reads only the declared blocks; outputs may be non-finite."""
    rng = np.random.default_rng(8)
    for t in QUANTIZED:
        raw = rng.integers(0, 256, (16 * 512 // t.block, t.nbytes), dtype=np.uint8)
        qt = QuantizedTensor.from_blocks(raw, t.name, (16, 512))
        y = kernels.matmul(np.ones((2, 512), np.float32), qt)
        assert y.shape == (2, 16)


def test_bad_block_input_is_a_typed_error():
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS is not supported"):
        quant_type("IQ2_XXS")
    with pytest.raises(UnsupportedModelError, match="code 99"):
        quant_type(99)
    with pytest.raises(UnsupportedModelError, match="IQ2_XXS"):
        from_gguf_bytes(np.zeros(66, np.uint8), "IQ2_XXS", (1, 256))
    with pytest.raises(QuantizationError, match="needs 288 bytes"):
        QuantizedTensor.from_blocks(np.zeros(144, np.uint8), "Q4_K", (2, 256))
    with pytest.raises(QuantizationError, match="multiple of 256"):
        QuantizedTensor.from_blocks(np.zeros(144, np.uint8), "Q4_K", (1, 128))
    with pytest.raises(QuantizationError, match="float type"):
        QuantizedTensor.from_blocks(np.zeros(4, np.uint8), "F32", (1, 1))
    with pytest.raises(QuantizationError, match="uint8"):
        QuantizedTensor.from_blocks(np.zeros(72, np.uint16), "Q4_K", (1, 256))


# --- the real K-quant file ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma():
    try:
        p = hub.path("gemma3-270m")
    except hub.HubError as e:
        pytest.skip(str(e))
    return gguf.GGUFReader(str(p))


def test_every_tensor_of_the_real_gemma_file(gemma):
    """Each tensor dequantizes to gguf-py's values bit for bit and round-trips to its own bytes."""
    seen = set()
    for t in gemma.tensors:
        row = quant_type(t.tensor_type)
        seen.add(row.name)
        raw = np.asarray(t.data)
        flat = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
        for r0 in range(0, flat.shape[0], 16384):  # the 262144-row embedding in slices
            part = flat[r0 : r0 + 16384]
            assert same_bits(row.dequantize(part), gguf_dequantize(part, t.tensor_type)), t.name
        if row.quantized and len(t.shape) == 2 and t.name != "token_embd.weight":
            qt = from_gguf(t)
            name, out = to_gguf_bytes(qt)
            assert name == row.name and np.array_equal(out.reshape(-1), raw.reshape(-1)), t.name
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"} <= seen


@needs_c
def test_real_gemma_layers_through_the_kernels(gemma):
    """One tensor of each type of the file through the kernels vs the float64 reference of the same arithmetic."""
    rng = np.random.default_rng(9)
    done = set()
    for t in gemma.tensors:
        name = t.tensor_type.name
        if len(t.shape) != 2 or name in done or t.name == "token_embd.weight":
            continue
        done.add(name)
        qt = from_gguf(t)
        x = rng.standard_normal((4, qt.shape[1])).astype(np.float32)
        assert within_f32_bound(kernels.matmul(x, qt, act="f32"), x, qt), t.name
        assert within_int8_bound(kernels.matmul(x, qt), x, qt), t.name
        np.testing.assert_allclose(kernels.matmul(x, qt, act="f32"), ref.matmul_f32(x, qt), rtol=1e-4, atol=1e-4)
    assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0"} <= done
