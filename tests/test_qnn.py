"""QNN backend on the real HTP (Qualcomm's simulator on x86-64): placement, accuracy, context cache.

Tolerances: a float model runs on HTP in fp16, so outputs of O(1) match the CPU EP to ~1e-2 absolute
(fp16 has an 11-bit mantissa and the Conv/MatMul accumulate 27-2048 products).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgesdk
from conftest import make_onnx
from qnn_helpers import conv_mlp

qnn = pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install edgesdk[qnn])")

FP16_ATOL = 2e-2


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return conv_mlp(tmp_path_factory.mktemp("qnn") / "conv_mlp.onnx")


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "qnn-cache")


def qnn_session(model, cache_dir=None, **kw):
    opts = {"cache_dir": cache_dir} if cache_dir else {"context_cache": False}
    opts.update(kw.pop("qnn", {}))
    return edgesdk.Session(model, require=kw.pop("require", "npu"), backend_options={"qnn": opts}, **kw)


def cpu_run(model, feeds):
    with edgesdk.Session(model, require="onnxruntime:cpu") as s:
        return s.run(feeds)


def test_device_is_an_npu_and_says_simulated():
    dev = next(d for d in edgesdk.devices() if d.backend == "qnn")
    assert dev.kind == "npu"
    assert dev.simulated and "simulator" in dev.name.lower()
    assert dev.details["qnn_sdk"] and dev.details["ep"] == "QNNExecutionProvider"


def test_simulator_is_not_chosen_unless_asked(float_model):
    with edgesdk.Session(float_model) as s:
        assert s.placement.backend != "qnn"
        assert any(r.device == "qnn:htp" for r in s.placement.refusals)
    with edgesdk.Session(float_model, prefer=("qnn",), backend_options={"qnn": {"context_cache": False}}) as s:
        assert s.device.id == "qnn:htp"


def test_float_model_matches_cpu_in_fp16(float_model, rng):
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    with qnn_session(float_model) as s:
        assert s.device.id == "qnn:htp" and s.runner.precision == "fp16"
        # require= makes ORT itself forbid CPU fallback, not only edgesdk's placement check.
        assert s.runner._sess.get_session_options().get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
        assert {n.device_id for n in s.placement.nodes} == {"qnn:htp"}
        got = s.run({"x": x})["y"]
    np.testing.assert_allclose(got, cpu_run(float_model, {"x": x})["y"], atol=FP16_ATOL)


@pytest.fixture(scope="module")
def refused_model(tmp_path_factory):
    """Relu runs on HTP; Det has no QNN implementation; Mod with fmod=1 is rejected by QNN's Mod."""
    from onnx import TensorProto, helper

    F = TensorProto.FLOAT
    return make_onnx(
        tmp_path_factory.mktemp("qnn") / "refused.onnx",
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu0"),
            helper.make_node("Det", ["r"], ["d"], name="det0"),
            helper.make_node("Mod", ["r", "x"], ["y"], fmod=1, name="mod0"),
        ],
        [helper.make_tensor_value_info("x", F, [3, 3])],
        [helper.make_tensor_value_info("d", F, []), helper.make_tensor_value_info("y", F, [3, 3])],
    )


def test_require_npu_lists_each_refused_node_and_why(refused_model, cache_dir):
    with pytest.raises(edgesdk.PlacementError) as ei:
        qnn_session(refused_model, cache_dir)
    msg = str(ei.value)
    assert "qnn:htp: 2 node(s) would fall back" in msg
    assert "det0 (Det) -> onnxruntime:cpu: QNN: Operators of type `Det` are not supported by QNN EP" in msg
    assert "mod0 (Mod) -> onnxruntime:cpu: QNN: QNN Mod Op only support fmod == 0" in msg
    # The cached partition (built with fallback allowed) is refused the same way, without compiling.
    with edgesdk.Session(refused_model, prefer=("qnn",), backend_options={"qnn": {"cache_dir": cache_dir}}) as s:
        assert [n.node for n in s.placement.fallback_nodes] == ["det0", "mod0"]
    with pytest.raises(edgesdk.PlacementError, match="det0 \\(Det\\)"):
        qnn_session(refused_model, cache_dir)


def test_fallback_allowed_shows_npu_cpu_split(refused_model):
    x = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    with edgesdk.Session(refused_model, prefer=("qnn",), backend_options={"qnn": {"context_cache": False}}) as s:
        split = {n.node: n.device_id for n in s.placement.nodes}
        assert split["relu0"] == "qnn:htp" and split["det0"] == split["mod0"] == "onnxruntime:cpu"
        assert "fallback det0 (Det) -> onnxruntime:cpu: QNN: Operators of type `Det`" in str(s.placement)
        got = s.run({"x": x})
    ref = cpu_run(refused_model, {"x": x})
    np.testing.assert_allclose(got["d"], ref["d"], rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(got["y"], ref["y"], atol=FP16_ATOL)


def test_context_cache_hit_corrupt_and_rebuild(float_model, cache_dir, rng):
    from pathlib import Path

    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    with qnn_session(float_model, cache_dir) as s1:
        assert not s1.runner.cache_hit and s1.runner.cache_entry
        first = s1.run({"x": x})["y"]
        entry = Path(s1.runner.cache_entry)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"model_ctx.onnx"} and len(manifest["files"]) == 2
    assert not list(Path(cache_dir).glob(".build-*"))  # nothing half-built left behind

    with qnn_session(float_model, cache_dir) as s2:
        assert s2.runner.cache_hit and s2.runner.cache_entry == str(entry)
        assert [n.node for n in s2.placement.nodes] == [n.node for n in s1.placement.nodes]  # original nodes, not "EPContext"
        np.testing.assert_array_equal(s2.run({"x": x})["y"], first)

    binary = next(entry.glob("*.bin"))
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    with qnn_session(float_model, cache_dir) as s3:
        assert not s3.runner.cache_hit  # detected by the manifest hash, rebuilt
        np.testing.assert_array_equal(s3.run({"x": x})["y"], first)
    with qnn_session(float_model, cache_dir) as s4:
        assert s4.runner.cache_hit

    (entry / "manifest.json").write_text("{not json")
    with qnn_session(float_model, cache_dir) as s5:
        assert not s5.runner.cache_hit
    # Other options compile to another binary, so they get another entry.
    with qnn_session(float_model, cache_dir, qnn={"performance_mode": "power_saver"}) as s6:
        assert not s6.runner.cache_hit and s6.runner.cache_entry != str(entry)


def test_cache_dir_from_environment(float_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "envcache"))
    with edgesdk.Session(float_model, require="qnn") as s:
        assert s.runner.cache_entry.startswith(str(tmp_path / "envcache" / "qnn"))


def test_dynamic_inputs_need_shapes(tmp_path):
    from onnx import TensorProto, helper

    m = make_onnx(
        tmp_path / "dyn.onnx",
        [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    with pytest.raises(edgesdk.PlacementError, match="HTP compiles static shapes only"):
        qnn_session(m)
    with qnn_session(m, qnn={"input_shapes": {"x": [2, 4]}}) as s:
        x = np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], np.float32)
        assert s.inputs[0].shape == (2, 4)
        np.testing.assert_allclose(s.run({"x": x})["y"], np.maximum(x, 0), rtol=1e-3)


def test_profiling_writes_the_ep_csv(float_model, tmp_path):
    prof = tmp_path / "profile.csv"
    with qnn_session(float_model, qnn={"profiling_level": "basic", "profiling_file": str(prof), "performance_mode": "high_performance"}) as s:
        s.run({"x": np.zeros((1, 3, 16, 16), np.float32)})
    assert "QNN (execute) time" in prof.read_text()
