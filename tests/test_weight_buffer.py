"""Weight memory (edgesdk.quant._buffer): 2 MiB-aligned buffers for weights from 2 MiB on, plain
arrays below; what the kernels and the bandwidth probe read."""

import gc
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesdk.quant import TYPES, QuantizedTensor, from_gguf_bytes, to_gguf_bytes
from edgesdk.quant._buffer import HUGE_PAGE, weight_buffer
from gguf_blocks import finite_blocks

LINUX = sys.platform.startswith("linux")


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 700), min_size=1, max_size=3),
    dtype=st.sampled_from([np.uint8, np.int8, np.float16, np.float32, np.int64]),
)
def test_shape_dtype_and_contents_of_any_size(shape, dtype):
    a = weight_buffer(tuple(shape), dtype)
    assert a.shape == tuple(shape) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    v = np.arange(a.size).astype(dtype).reshape(a.shape)
    a[...] = v
    assert np.array_equal(a, v)


@pytest.mark.skipif(not LINUX, reason="2 MiB alignment is Linux's transparent huge pages")
@pytest.mark.parametrize("nbytes", [HUGE_PAGE, HUGE_PAGE + 4096 + 3, 5 * HUGE_PAGE - 1])
def test_large_buffers_start_on_a_huge_page(nbytes):
    a = weight_buffer(nbytes)
    assert a.ctypes.data % HUGE_PAGE == 0 and a.nbytes == nbytes


def test_small_buffers_are_plain_arrays():
    a = weight_buffer((HUGE_PAGE - 1,))
    assert a.base is None and a.nbytes == HUGE_PAGE - 1  # np.empty's own memory, no mapping


def test_a_view_keeps_the_mapping_alive():
    a = weight_buffer((3 * HUGE_PAGE,))
    a[:] = 7
    tail = a[-16:]
    del a
    gc.collect()
    assert (tail == 7).all()  # reading freed memory would crash or show garbage


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="negative"):
        weight_buffer((4, -1))


@pytest.mark.skipif(not LINUX, reason="2 MiB alignment is Linux's transparent huge pages")
@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0"])
def test_imported_weights_live_in_weight_buffers(qtype):
    n, k = 2048, 2048  # > 2 MiB in either layout: rows8 interleaved Q4_K, i16x32 Q8_0
    blocks = finite_blocks(qtype, np.random.default_rng(1), n * k // TYPES[qtype].block).reshape(n, -1)
    qt = QuantizedTensor.from_blocks(blocks, qtype, (n, k), interleave=True) if qtype == "Q4_K" else from_gguf_bytes(blocks, qtype, (n, k))
    assert qt.qdata.ctypes.data % HUGE_PAGE == 0
    assert np.array_equal(to_gguf_bytes(qt)[1].reshape(n, -1), blocks)  # the same bits
