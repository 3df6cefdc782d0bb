"""Property tests: whatever an app passes to run(), it works or raises a typed InputError."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edgesdk
from edgesdk._validate import InputValidator
from edgesdk.backend import TensorSpec

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_]

specs_strategy = st.lists(
    st.tuples(st.sampled_from(DTYPES), st.lists(st.one_of(st.integers(1, 4), st.sampled_from(["n", "m", None])), max_size=3)),
    min_size=1,
    max_size=3,
).map(lambda items: tuple(TensorSpec(f"in{i}", tuple(shape), dt) for i, (dt, shape) in enumerate(items)))


@st.composite
def feeds_for(draw, specs):
    feeds = {}
    for s in specs:
        if draw(st.booleans()):  # a well-formed value
            sym = {}
            shape = tuple(d if isinstance(d, int) else sym.setdefault(d, draw(st.integers(1, 3))) if d else draw(st.integers(1, 3)) for d in s.shape)
            feeds[s.name] = draw(hnp.arrays(s.dtype, shape))
        else:
            feeds[s.name] = draw(
                st.one_of(
                    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),
                    st.lists(st.floats(allow_nan=False, width=32), max_size=4),
                    st.integers(-300, 300),
                    st.text(max_size=3),
                    st.none(),
                )
            )
    if draw(st.booleans()) and feeds:
        feeds.pop(draw(st.sampled_from(sorted(feeds))))
    if draw(st.booleans()):
        feeds["extra"] = np.zeros(1)
    return feeds


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), specs=specs_strategy)
def test_validator_accepts_or_raises_typed(data, specs):
    v = InputValidator(specs)
    feeds = data.draw(feeds_for(specs))
    try:
        out = v(feeds)
    except edgesdk.InputError:
        return
    assert set(out) == {s.name for s in specs}
    for s in specs:
        x = out[s.name]
        assert isinstance(x, np.ndarray) and x.dtype == s.dtype and x.flags.c_contiguous
        assert len(x.shape) == len(s.shape)
        for d, n in zip(s.shape, x.shape):
            if isinstance(d, int):
                assert d == n


@pytest.fixture(scope="module")
def session(request):
    from conftest import make_onnx
    from onnx import TensorProto, helper
    import tempfile, os

    d = tempfile.mkdtemp()
    p = make_onnx(
        os.path.join(d, "m.onnx"),
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    return edgesdk.Session(p)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
def test_session_run_never_leaks_backend_errors(session, x):
    try:
        out = session.run({"x": x})
    except edgesdk.InputError:
        assert not (x.ndim == 2 and x.shape[1] == 3 and np.can_cast(x.dtype, np.float32, "safe"))
        return
    np.testing.assert_array_equal(out["y"], np.maximum(x.astype(np.float32), 0))


# -- ONNX sequence / optional / map inputs -----------------------------------------------------

F32_SEQ = TensorSpec.sequence("s", TensorSpec("s", None, np.float32))
RANKED_SEQ = TensorSpec.sequence("s", TensorSpec("s", (2, "n"), np.float32))
OPT_SEQ = TensorSpec.optional("o", F32_SEQ)


def test_sequence_element_with_unsafe_dtype_names_input_and_index():
    v = InputValidator((F32_SEQ,))
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 's' element 2 has dtype float64, expected float32; .*not a safe cast"):
        v({"s": [np.ones(2, np.float32), [1.0], np.ones(2)]})
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 's' element 0: values of kind <U1 cannot be converted to float32"):
        v({"s": [["a"]]})


def test_non_list_for_a_sequence_is_refused():
    v = InputValidator((F32_SEQ,))
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 's' must be a list of arrays \(model expects seq\(float32\)\), got ndarray; list\(x\)"):
        v({"s": np.ones((2, 2), np.float32)})
    for bad in (None, 3.0, {"a": 1}):
        with pytest.raises(edgesdk.InputDtypeError, match="must be a list of arrays"):
            v({"s": bad})


def test_none_for_a_non_optional_tensor_is_refused():
    v = InputValidator((TensorSpec("x", (1,), np.float32), F32_SEQ))
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 'x' is None, but it is not optional \(model expects float32\)"):
        v({"x": None, "s": []})
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 's' element 1 is None, but it is not optional"):
        v({"x": np.ones(1, np.float32), "s": [np.ones(1, np.float32), None]})


def test_sequence_shapes_checked_only_where_stated():
    v = InputValidator((RANKED_SEQ,))
    ok = [np.ones((2, 1), np.float32), np.ones((2, 5), np.float32)]  # "n" may differ between elements
    assert v({"s": ok})["s"] is ok
    with pytest.raises(edgesdk.InputShapeError, match=r"input 's' element 1 has shape \[3, 1\]: dimension 0 is 3, expected 2"):
        v({"s": [ok[0], np.ones((3, 1), np.float32)]})
    unstated = [np.ones(()), np.ones((4, 4))]
    assert InputValidator((TensorSpec.sequence("s", TensorSpec("s", None, np.float64)),))({"s": unstated})["s"] is unstated


def test_sequence_conversions_and_no_copy():
    v = InputValidator((F32_SEQ,))
    a = np.ones(3, np.float32)
    feeds = {"s": [a, a]}
    assert v(feeds) is feeds  # a list of matching arrays goes through untouched
    out = v({"s": (a.astype(np.float16), [1, 2], np.ones((4, 2), np.float32).T)})["s"]
    assert type(out) is list and all(x.dtype == np.float32 and x.flags.c_contiguous for x in out)


def test_optional_takes_none_or_its_inner_kind():
    v = InputValidator((OPT_SEQ, TensorSpec.optional("t", TensorSpec("t", (2,), np.int64))))
    feeds = {"o": None, "t": None}
    assert v(feeds) is feeds
    out = v({"o": [np.ones(1, np.float16)], "t": np.array([1, 2], np.int32)})
    assert out["o"][0].dtype == np.float32 and out["t"].dtype == np.int64
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 'o' must be a list of arrays \(model expects seq\(float32\)\)"):
        v({"o": np.ones(1, np.float32), "t": None})
    with pytest.raises(edgesdk.InputShapeError, match=r"input 't' has shape \[3\]: dimension 0 is 3, expected 2"):
        v({"o": None, "t": np.ones(3, np.int64)})


def test_map_keys_must_match_the_key_dtype():
    v = InputValidator((TensorSpec.map("m", np.dtype(object), TensorSpec("m", None, np.float32)),))
    assert v({"m": {"a": 1.0}})["m"] == {"a": 1.0}
    with pytest.raises(edgesdk.InputDtypeError, match=r"input 'm' has key 1 of type int \(model expects map\(object, float32\)\)"):
        v({"m": {1: 1.0}})
    with pytest.raises(edgesdk.InputDtypeError, match="must be a dict"):
        v({"m": [("a", 1.0)]})
    ints = InputValidator((TensorSpec.map("m", np.int64, TensorSpec("m", None, np.float32)),))
    assert ints({"m": {np.int64(3): 1.0}})
    with pytest.raises(edgesdk.InputDtypeError, match="key True of type bool"):
        ints({"m": {True: 1.0}})


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.lists(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)), max_size=3),
        st.lists(st.one_of(st.none(), st.integers(-3, 3), st.lists(st.floats(allow_nan=False, width=32), max_size=3)), max_size=3),
        hnp.arrays(np.float32, (2,)),
        st.none(),
        st.text(max_size=2),
    ),
    optional=st.booleans(),
)
def test_sequence_validator_accepts_or_raises_typed(value, optional):
    spec = TensorSpec.optional("s", RANKED_SEQ) if optional else RANKED_SEQ
    try:
        out = InputValidator((spec,))({"s": value})["s"]
    except edgesdk.InputError:
        return
    if out is None:
        assert optional and value is None
        return
    assert type(out) is list and len(out) == len(value)
    for x in out:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
        assert x.ndim == 2 and x.shape[0] == 2


def test_random_feeds_follow_value_kinds():
    from edgesdk._feeds import random_feeds

    f32 = TensorSpec("x", None, np.float32)
    feeds = random_feeds([TensorSpec.sequence("s", f32), TensorSpec.optional("o", TensorSpec("v", (2,), np.float32))])
    assert isinstance(feeds["s"], list) and feeds["s"][0].shape == (1,) and feeds["o"].shape == (2,)
