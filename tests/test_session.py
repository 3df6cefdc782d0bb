import threading

import attrs
import numpy as np
import pytest

import edgesdk
from edgesdk import InputDtypeError, InputNameError, InputShapeError, PlacementError, SessionOptions


def test_signature_and_run(add_onnx):
    s = edgesdk.Session(add_onnx)
    assert [i.name for i in s.inputs] == ["a", "b", "n"]
    assert s.inputs[0].shape == ("batch", 4) and s.inputs[0].dtype == np.float32
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = s.run({"a": a, "b": a, "n": np.array([3, 4])})
    np.testing.assert_array_equal(out["y"], 2 * a)
    np.testing.assert_array_equal(out["n_out"], [3, 4])
    assert s.placement.device.id == "onnxruntime:cpu"
    assert s.placement.nodes and all(n.device_id == "onnxruntime:cpu" for n in s.placement.nodes)
    assert "onnxruntime:cpu" in str(s.placement)


def test_output_subset_and_unknown_output(add_onnx):
    s = edgesdk.Session(add_onnx)
    a = np.ones((1, 4), np.float32)
    out = s.run({"a": a, "b": a, "n": np.zeros(2, np.int64)}, output_names=["n_out"])
    assert list(out) == ["n_out"]
    with pytest.raises(InputNameError, match="unknown output"):
        s.run({"a": a, "b": a, "n": np.zeros(2, np.int64)}, output_names=["nope"])


def test_input_errors_name_the_problem(add_onnx):
    s = edgesdk.Session(add_onnx)
    a = np.ones((2, 4), np.float32)
    n = np.zeros(2, np.int64)
    with pytest.raises(InputNameError, match="missing input.*'b'"):
        s.run({"a": a, "n": n})
    with pytest.raises(InputNameError, match="unknown input.*'c'"):
        s.run({"a": a, "b": a, "c": a, "n": n})
    with pytest.raises(InputShapeError, match="rank 1, expected rank 2"):
        s.run({"a": a[0], "b": a, "n": n})
    with pytest.raises(InputShapeError, match="dimension 1 is 5, expected 4"):
        s.run({"a": np.ones((2, 5), np.float32), "b": a, "n": n})
    with pytest.raises(InputShapeError, match="'batch' must have one value"):
        s.run({"a": a, "b": np.ones((3, 4), np.float32), "n": n})
    with pytest.raises(InputDtypeError, match="float64.*float32.*not a safe cast"):
        s.run({"a": a.astype(np.float64), "b": a, "n": n})
    with pytest.raises(InputDtypeError):
        s.run({"a": "hello", "b": a, "n": n})
    with pytest.raises(edgesdk.InputError, match="dict"):
        s.run([a, a, n])


def test_safe_casts_and_zero_copy(add_onnx):
    s = edgesdk.Session(add_onnx)
    a = np.ones((2, 4), np.float32)
    feeds = {"a": a, "b": a, "n": np.zeros(2, np.int64)}
    assert s._validate(feeds) is feeds  # already right: passed through, no copy
    conv = s._validate({"a": a.astype(np.float16), "b": [[1, 2, 3, 4]] * 2, "n": np.array([1, 2], np.int8)})
    assert conv["a"].dtype == np.float32 and conv["b"].dtype == np.float32 and conv["n"].dtype == np.int64
    nc = np.ones((4, 2), np.float32).T  # non-contiguous
    assert s._validate({"a": nc, "b": a, "n": feeds["n"]})["a"].flags.c_contiguous
    with pytest.raises(InputDtypeError, match="int64"):
        s._validate({"a": a, "b": a, "n": [1, 2**70]})


def test_require_and_prefer(identity_onnx):
    s = edgesdk.Session(identity_onnx, SessionOptions(prefer=("gpu", "cpu")))
    assert s.placement.device.kind == "cpu"
    with pytest.raises(PlacementError) as ei:
        edgesdk.Session(identity_onnx, SessionOptions(require="dsp"))
    msg = str(ei.value)
    assert "require='dsp'" in msg and "onnxruntime:cpu" in msg
    assert ei.value.refusals
    s2 = edgesdk.Session(identity_onnx, require="onnxruntime:cpu")
    assert s2.placement.device.id == "onnxruntime:cpu"


def test_options_validation_and_presets():
    with pytest.raises(ValueError):
        SessionOptions(threads=0)
    with pytest.raises(ValueError):
        SessionOptions(precision="int3")
    with pytest.raises(ValueError):
        SessionOptions(prefer=("",))
    with pytest.raises(ValueError, match="unknown device class"):
        SessionOptions.for_device("toaster")
    phone = SessionOptions.for_device("phone")
    assert phone.prefer[0] == "npu" and phone.device_class == "phone" and phone.threads == 4
    tuned = attrs.evolve(phone, threads=2)
    assert tuned.threads == 2 and phone.threads == 4
    assert SessionOptions.for_device("car", threads=1).threads == 1
    for name in edgesdk.DEVICE_CLASSES:
        assert SessionOptions.for_device(name).device_class == name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        phone.threads = 1


def test_memory_budget_refuses(identity_onnx):
    big = SessionOptions(memory_budget_mb=1)
    edgesdk.Session(identity_onnx, big)  # tiny model fits
    from edgesdk._plan import place

    class Fake:
        path, format, size, info = identity_onnx, "onnx", 5 * 2**20, {}

    with pytest.raises(PlacementError, match="over the 1 MiB budget"):
        place(Fake(), big, edgesdk.get_registry())


def test_concurrent_runs_are_correct(add_onnx):
    s = edgesdk.Session(add_onnx)
    errors = []

    def worker(k):
        try:
            a = np.full((3, 4), k, np.float32)
            for _ in range(200):
                out = s.run({"a": a, "b": a, "n": np.array([k, k])})
                assert np.all(out["y"] == 2 * k), "cross-talk between threads"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_closed_session(identity_onnx):
    with edgesdk.Session(identity_onnx) as s:
        pass
    with pytest.raises(edgesdk.EdgeSDKError, match="closed"):
        s.run({"x": np.zeros((1, 16), np.float32)})
    with pytest.raises(edgesdk.EdgeSDKError, match="not a generative model"):
        edgesdk.Session(identity_onnx).generate("hi")


def test_bad_arguments(identity_onnx):
    with pytest.raises(TypeError):
        edgesdk.Session(123)
    with pytest.raises(TypeError):
        edgesdk.Session(identity_onnx, options={"threads": 1})
