"""ONNX's own node test suite (``onnx.backend.test``) through ``Session`` and through raw onnxruntime.

Every node case whose model raw ORT (CPUExecutionProvider) loads and whose expected outputs raw ORT
reproduces must give the same outputs through ``Session`` placed on ``onnxruntime:cpu``; the other
cases are skipped with raw ORT's reason. Outputs are compared as ``onnx.backend.test`` compares them:
same structure (lists for sequences, None for empty optionals), shape and dtype, values within
rtol=1e-3, atol=1e-7 (each case's own tolerances), NaN equal to NaN, strings exactly.

Where the cases come from: the installed onnx wheel no longer ships ``backend/test/data/node``; its
loader (``onnx.backend.test.loader.load_node_model_tests``) builds the node cases in memory by
importing the case generators, which is what this module does too.

Subset (deterministic; every sequence-, optional- and map-typed case is in it):
- all cases but those of three generator modules, ``averagepool``, ``lppool`` and ``maxpool``
  (47 tensor-only pooling cases), whose pure-Python reference outputs take ~10 s of the ~13 s CPU
  all generators need; generators run when their module is imported, so a module is the unit;
- of the function-expanded cases (``*_expanded*``, ~480), only those with a non-tensor signature:
  an expansion has exactly its op's direct case's inputs, outputs and data, so with tensors only
  it tests nothing more at the Session boundary, where validation and output handling live.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

import numpy as np
import pytest
from conftest import make_onnx

import edgesdk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_SLOW_GENERATORS = frozenset({"averagepool", "lppool", "maxpool"})
# One intra-op thread on both sides: a per-session thread pool costs more to start and join than
# these one-node models take to run (single-threaded, the module runs in ~60% of the wall time).
_ONE_THREAD = 1


def _kinds(case) -> set[str]:
    return {v.type.WhichOneof("value") for v in (*case.model.graph.input, *case.model.graph.output)}


def _node_cases():
    import onnx.backend.test.case.node as generators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators divide by zero on purpose (inf/NaN cases)
        for info in pkgutil.walk_packages(generators.__path__, generators.__name__ + "."):
            leaf = info.name.rsplit(".", 1)[-1]
            if leaf in _SLOW_GENERATORS or (not onnx.ONNX_ML and ".ai_onnx_ml" in info.name):
                continue
            importlib.import_module(info.name)
    # expect() collects the cases here; onnx's loader reads the same list.
    cases = [c for c in generators._NodeTestCases if "_expanded" not in c.name or _kinds(c) != {"tensor_type"}]
    return sorted(cases, key=lambda c: c.name)


CASES = _node_cases()


def _value(v):
    """A case's value as ORT's Python API takes and returns it (the generators store some as TensorProto)."""
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, list):
        return [_value(e) for e in v]
    return v


def assert_same(expected, actual, rtol, atol, where="output"):
    """``onnx.backend.test``'s comparison, with sequences, optionals and NaN handled."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{where}: expected a sequence, got {type(actual).__name__}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} elements, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, rtol, atol, f"{where}[{i}]")
        return
    if expected is None:
        assert actual is None, f"{where}: expected an empty optional, got {type(actual).__name__}"
        return
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape}, expected {expected.shape}"
    if expected.dtype == object:
        np.testing.assert_array_equal(actual, expected, err_msg=where)
        return
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype}, expected {expected.dtype}"
    if actual.dtype.name == "bfloat16":  # numpy cannot compare it with a float; onnx allows two bf16 ULPs
        actual, expected, rtol = actual.astype(np.float32), expected.astype(np.float32), max(rtol, 2**-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)


def _feeds_and_expected(case):
    ((inputs, outputs),) = case.data_sets
    feeds = {vi.name: _value(v) for vi, v in zip(case.model.graph.input, inputs)}
    expected = {vi.name: _value(v) for vi, v in zip(case.model.graph.output, outputs)}
    return feeds, expected


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-node")


def _raw_ort_reproduces(path, case, feeds, expected):
    """None when raw ORT loads the model and reproduces the case's outputs, else why not."""
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = _ONE_THREAD
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs = sess.run(list(expected), feeds)
    except Exception as exc:
        return f"raw onnxruntime fails: {str(exc).splitlines()[0][:200]}"
    try:
        for (name, e), a in zip(expected.items(), outs):
            assert_same(e, a, case.rtol, case.atol, name)
    except AssertionError as exc:
        return f"raw onnxruntime does not reproduce the expected outputs: {str(exc).splitlines()[0][:200]}"
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_session_matches_what_raw_ort_reproduces(case, model_dir):
    path = model_dir / f"{case.name}.onnx"
    onnx.save_model(case.model, str(path))
    feeds, expected = _feeds_and_expected(case)
    why = _raw_ort_reproduces(path, case, feeds, expected)
    if why is not None:
        print(why)  # the detail, in the captured output; one reason for all keeps the summary short
        pytest.skip("raw onnxruntime cannot run this case either")
    with edgesdk.Session(str(path), require="onnxruntime:cpu", threads=_ONE_THREAD) as s:
        got = s.run(feeds)
    assert list(got) == list(expected)
    for name, e in expected.items():
        assert_same(e, got[name], case.rtol, case.atol, name)


def test_subset_keeps_every_structured_case():
    structured = [c.name for c in CASES if _kinds(c) - {"tensor_type"}]
    # onnx 1.23 generates 29: 25 with sequences, 8 with optionals (optional(seq) counts twice), no maps.
    assert len(structured) >= 29, structured
    assert {"test_identity_sequence", "test_identity_opt", "test_sequence_insert_at_back", "test_loop16_seq_none"} <= set(structured)
    assert len(CASES) > 1200


# -- signatures of sequence/optional models, and the refusals around them ----------------------


def _seq(elem_type, shape=None):
    from onnx import helper

    return helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem_type, shape))


def _identity_model(path, type_proto, opset=16):
    from onnx import helper

    return make_onnx(
        path, [helper.make_node("Identity", ["x"], ["y"])], [helper.make_value_info("x", type_proto)], [helper.make_value_info("y", type_proto)], opset=opset
    )


@pytest.fixture(scope="module")
def seq_model(tmp_path_factory):
    from onnx import TensorProto

    return _identity_model(tmp_path_factory.mktemp("seq") / "seq.onnx", _seq(TensorProto.FLOAT, [2]))


@pytest.fixture(scope="module")
def opt_model(tmp_path_factory):
    from onnx import TensorProto, helper

    t = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, ["n"]))
    return _identity_model(tmp_path_factory.mktemp("opt") / "opt.onnx", t)


def test_signature_states_the_value_kind(seq_model, opt_model):
    with edgesdk.Session(seq_model) as s:
        (x,) = s.inputs
        assert x.kind == "sequence" and x.dtype == np.float32 and x.shape is None
        assert x.element.kind == "tensor" and x.element.dtype == np.float32
        assert str(x) == "x: seq(float32)" and s.outputs[0].kind == "sequence"
        # The file states the element shape; ORT does not report it, so the runner's spec has none.
        assert s.model.info["inputs"][0].element.shape == (2,) and x.element.shape is None
    with edgesdk.Session(opt_model) as s:
        (x,) = s.inputs
        assert x.kind == "optional" and x.element.kind == "tensor" and x.element.shape == ("n",)
        assert str(x) == "x: optional(float32[n])"


def test_sequence_and_optional_values_round_trip(seq_model, opt_model):
    a = np.arange(2, dtype=np.float32)
    with edgesdk.Session(seq_model) as s:
        out = s.run({"x": [a, a + 1, np.ones(3, np.float32)]})["y"]  # ORT does not check element shapes either
        assert isinstance(out, list) and [o.tolist() for o in out] == [[0, 1], [1, 2], [1, 1, 1]]
        out = s.run({"x": (a.astype(np.float16), [5, 6])})["y"]  # a tuple, a safe cast, a nested list
        assert [o.dtype for o in out] == [np.float32, np.float32] and out[1].tolist() == [5, 6]
        assert s.run({"x": []})["y"] == []
        with pytest.raises(edgesdk.InputDtypeError, match=r"input 'x' element 1 has dtype float64, expected float32"):
            s.run({"x": [a, a.astype(np.float64)]})
        with pytest.raises(edgesdk.InputDtypeError, match=r"input 'x' must be a list of arrays \(model expects seq\(float32\)\)"):
            s.run({"x": np.stack([a, a])})
    with edgesdk.Session(opt_model) as s:
        assert s.run({"x": None})["y"] is None
        np.testing.assert_array_equal(s.run({"x": a})["y"], a)
        with pytest.raises(edgesdk.InputShapeError, match="input 'x' has shape"):
            s.run({"x": np.ones((2, 2), np.float32)})


def test_unranked_tensor_input_is_not_taken_for_a_scalar(tmp_path):
    from onnx import TensorProto, helper

    # ORT reports an input without a shape as [], like a scalar's; the file says the rank is unknown.
    p = make_onnx(
        tmp_path / "unranked.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with edgesdk.Session(p) as s:
        assert s.inputs[0].shape is None
        x = np.ones((2, 3), np.float32)
        np.testing.assert_array_equal(s.run({"x": x})["y"], x)
        with pytest.raises(edgesdk.InputDtypeError):
            s.run({"x": x.astype(np.float64)})


@pytest.mark.parametrize(
    "type_str, expected",
    [
        ("tensor(float)", "float32[2]"),
        ("seq(tensor(int64))", "seq(int64)"),
        ("optional(tensor(int64))", "optional(int64[2])"),
        ("optional(seq(tensor(float)))", "optional(seq(float32))"),
        ("map(string,tensor(float))", "map(object, float32)"),
        ("seq(map(int64,tensor(float)))", "seq(map(int64, float32))"),
        ("sparse_tensor(float)", "object?"),
    ],
)
def test_parse_ort_type(type_str, expected):
    from edgesdk_backends.onnxruntime import parse_ort_type

    assert parse_ort_type("v", type_str, (2,)).type_str() == expected


def test_tensor_spec_kinds_are_checked():
    with pytest.raises(ValueError, match="kind"):
        edgesdk.TensorSpec("x", None, np.float32, kind="list")
    with pytest.raises(ValueError, match="needs an element"):
        edgesdk.TensorSpec("x", None, np.float32, kind="sequence")
    spec = edgesdk.TensorSpec.sequence("x", edgesdk.TensorSpec("x", None, np.int8))
    assert spec.dtype == np.int8 and spec.kind == "sequence"


def test_qnn_refuses_sequence_models_and_placement_falls_back(seq_model):
    pytest.importorskip("onnxruntime_qnn")
    if not any(d.backend == "qnn" for d in edgesdk.devices()):
        pytest.skip("the qnn backend reports no device here")
    with edgesdk.Session(seq_model, prefer=("qnn",)) as s:
        assert s.placement.backend == "onnxruntime"
        why = next(r.reason for r in s.placement.refusals if r.backend == "qnn")
        assert "HTP runs tensors only" in why and "x: seq(float32[2])" in why
    with pytest.raises(edgesdk.PlacementError, match="HTP runs tensors only"):
        edgesdk.Session(seq_model, require="npu")
