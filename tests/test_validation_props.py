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
    min_size=1, max_size=3,
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
            feeds[s.name] = draw(st.one_of(
                hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)),
                st.lists(st.floats(allow_nan=False, width=32), max_size=4),
                st.integers(-300, 300), st.text(max_size=3), st.none(),
            ))
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
    p = make_onnx(os.path.join(d, "m.onnx"), [helper.make_node("Relu", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
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
