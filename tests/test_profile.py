"""SessionOptions(profile=True) and Session.op_times(): the runtime's own per-node times, per backend.

ORT's profiler writes its JSON only when profiling ends and cannot restart, so the first op_times()
ends the profile and later calls return the same totals (checked here). The QNN EP's per-op CSV
comes from the HTP simulator on x86-64 hosts too. LiteRT's Python API has no profiler: None.
"""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np
import pytest

import edgesdk
from conftest import hub_path, make_onnx
from edgesdk.backend import OpTime
from edgesdk_backends.onnxruntime import OrtRunner, parse_ort_profile

NODES = {"square": "Mul", "relu": "Relu", "softmax": "Softmax"}  # no ORT fusion renames these


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["x", "x"], ["s"], name="square"),
        helper.make_node("Relu", ["s"], ["r"], name="relu"),
        helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1),
    ]
    return make_onnx(
        tmp_path_factory.mktemp("profile") / "three.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 256])],
    )


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temp dir and working dir of this test's own, to see exactly what profiling leaves behind."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    return tmp, cwd


def _leftovers(*dirs):
    return [os.path.join(d, f) for d in dirs for f in os.listdir(d)]


def _feeds(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((16, 256)).astype(np.float32)}


def test_ort_op_times_name_every_node_with_calls_and_time(model, private_tmp):
    with edgesdk.Session(model, profile=True, require="onnxruntime:cpu") as s:
        for i in range(4):
            s.run(_feeds(i))
        times = s.op_times()
        assert all(isinstance(t, OpTime) for t in times)
        by_node = {t.node: t for t in times}
        assert set(by_node) == set(NODES)
        for name, op in NODES.items():
            t = by_node[name]
            assert t.op_type == op and t.calls == 4 and t.total_s > 0 and t.device_id == "onnxruntime:cpu"
        # The profile was ended and read: nothing left on disk, while the session is still open.
        assert _leftovers(*private_tmp) == []
        # op_times() stays callable, with the same totals; later runs are no longer profiled (ORT cannot restart).
        s.run(_feeds(9))
        assert s.op_times() == times
    assert _leftovers(*private_tmp) == []


def test_profile_off_gives_none_and_writes_nothing(model, private_tmp):
    with edgesdk.Session(model, require="onnxruntime:cpu") as s:
        s.run(_feeds())
        assert s.op_times() is None
    assert _leftovers(*private_tmp) == []


def test_closing_without_reading_removes_the_profile(model, private_tmp):
    s = edgesdk.Session(model, profile=True, require="onnxruntime:cpu")
    s.run(_feeds())
    assert len(_leftovers(private_tmp[0])) == 1  # the private profile folder, while profiling
    s.close()
    assert _leftovers(*private_tmp) == []


def test_unreadable_profile_is_a_typed_error_every_time(model, private_tmp):
    import shutil

    from edgesdk.errors import BackendError

    with edgesdk.Session(model, profile=True, require="onnxruntime:cpu") as s:
        s.run(_feeds())
        for d in _leftovers(private_tmp[0]):  # e.g. a temp cleaner removed the profile folder
            shutil.rmtree(d)
        for _ in range(2):
            with pytest.raises(BackendError, match="profile could not be read"):
                s.op_times()
    assert _leftovers(*private_tmp) == []


def test_runs_from_several_threads_all_count(model, private_tmp):
    n_threads, n_runs = 4, 5
    with edgesdk.Session(model, profile=True, require="onnxruntime:cpu") as s:

        def work(seed):
            for i in range(n_runs):
                s.run(_feeds(seed * 100 + i))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {t.node: t.calls for t in s.op_times()} == {n: n_threads * n_runs for n in NODES}


def test_parse_ort_profile_keeps_kernels_only_and_maps_providers():
    events = [
        {"cat": "Session", "name": "model_loading_uri", "dur": 500},
        {"cat": "Session", "name": "session_initialization", "dur": 3000},
        {"cat": "Node", "name": "mm_kernel_time", "dur": 40, "args": {"op_name": "MatMul", "provider": "CUDAExecutionProvider"}},
        {"cat": "Node", "name": "mm_fence_before", "dur": 1, "args": {"op_name": "MatMul"}},
        {"cat": "Node", "name": "_kernel_time", "dur": 10, "args": {"op_name": "Relu", "provider": "CPUExecutionProvider", "node_index": "3"}},
        {"cat": "Session", "name": "SequentialExecutor::Execute", "dur": 60},
        {"cat": "Session", "name": "model_run", "dur": 70},
        {"cat": "Node", "name": "mm_kernel_time", "dur": 20, "args": {"op_name": "MatMul", "provider": "CUDAExecutionProvider"}},
    ]
    times = parse_ort_profile(events, {"CUDAExecutionProvider": "onnxruntime:cuda", "CPUExecutionProvider": "onnxruntime:cpu"})
    assert times == (OpTime("mm", "MatMul", pytest.approx(60e-6), 2, "onnxruntime:cuda"), OpTime("Relu_3", "Relu", pytest.approx(10e-6), 1, "onnxruntime:cpu"))


def test_caches_artifacts_flags():
    from edgesdk_backends.onnxruntime import OnnxRuntimeBackend
    from edgesdk_backends.qnn import QnnBackend
    from edgesdk_backends.tflite import TFLiteBackend

    assert QnnBackend.caches_artifacts is True
    assert OnnxRuntimeBackend.caches_artifacts is False and TFLiteBackend.caches_artifacts is False
    try:
        from edgesdk_backends.opencl import OpenCLBackend
    except ImportError:
        return
    assert OpenCLBackend.caches_artifacts is True


# --- TFLite ------------------------------------------------------------------------------------------


def test_tflite_reports_none_even_when_asked():
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    from model_cases import face_image

    with edgesdk.Session(hub_path("face-detection"), profile=True, require="tflite:cpu") as s:
        s.run({"input": face_image()})
        assert s.op_times() is None  # LiteRT's Python API has no profiler hook


# --- OpenCL: artifact_cache=False neither reads nor writes the program cache ---------------------------


def test_opencl_artifact_cache_false_builds_from_source_and_stores_nothing(tmp_path):
    pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from edgesdk import SessionOptions
    from edgesdk._errors import BackendUnavailable
    from edgesdk_backends.opencl import OpenCLBackend, OpenCLOptions

    backend = OpenCLBackend()
    try:
        device = backend.probe()[0]
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    oo = OpenCLOptions(cache_dir=str(tmp_path / "clcache"))
    rt = backend.runtime_for(device.id, oo, SessionOptions(artifact_cache=False))
    assert rt.build_info.how == "source" and rt.build_info.entry is None
    assert not (tmp_path / "clcache").exists() or not os.listdir(tmp_path / "clcache")
    assert rt is not backend.runtime_for(device.id, oo, SessionOptions(artifact_cache=False))  # nothing kept in-process either
    assert backend.runtime_for(device.id, oo, SessionOptions()) is backend.runtime(device.id, oo)


# --- QNN (HTP simulator on x86-64) ---------------------------------------------------------------------


def _qnn_device():
    pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed")
    devs = [d for d in edgesdk.devices() if d.backend == "qnn"]
    if not devs:
        pytest.skip("the qnn backend has no device here")
    return devs[0]


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    from qnn_helpers import conv_mlp

    return conv_mlp(tmp_path_factory.mktemp("qnnprof") / "conv_mlp.onnx")


def test_qnn_per_op_times_from_the_qnn_profile_and_cache_key_unchanged(conv_model, private_tmp, tmp_path):
    dev = _qnn_device()
    cache = {"cache_dir": str(tmp_path / "qnn-cache")}
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    with edgesdk.Session(conv_model, require=dev.id, backend_options={"qnn": cache}) as s:
        assert not s.runner.cache_hit
        assert s.op_times() is None
    # Profiling options stay out of the context-cache key: the profiled session loads the same binary.
    with edgesdk.Session(conv_model, profile=True, require=dev.id, backend_options={"qnn": cache}) as s:
        assert s.runner.cache_hit
        for _ in range(3):
            s.run(x)
        times = s.op_times()
        assert times and all(t.device_id == dev.id and t.calls == 3 for t in times)
        by_node = {t.node: t for t in times}
        # Per QNN op, named after ORT's nodes, with their op types.
        assert by_node["relu0"].op_type == "Relu" and by_node["sigmoid0"].op_type == "Sigmoid"
        assert not any(t.node.startswith("QNNExecutionProvider") for t in times)
        assert sum(t.total_s for t in times) > 0 and all(t.total_s >= 0 for t in times)
        assert s.op_times() == times
        # A basic-level profile has no per-op events: ORT's one fused node per QNN partition instead.
    with edgesdk.Session(conv_model, profile=True, require=dev.id, backend_options={"qnn": {**cache, "profiling_level": "basic"}}) as s:
        assert s.runner.cache_hit
        for _ in range(2):
            s.run(x)
        (t,) = s.op_times()
        assert t.device_id == dev.id and t.calls == 2 and t.total_s > 0 and t.node.startswith("QNNExecutionProvider")
    # The app's own profiling_file is used and left in place; QNN appends to it, yet each session counts its own runs.
    mine = tmp_path / "mine.csv"
    for _ in range(2):
        with edgesdk.Session(conv_model, profile=True, require=dev.id, backend_options={"qnn": {**cache, "profiling_file": str(mine)}}) as s:
            s.run(x)
            assert {t.calls for t in s.op_times()} == {1}
    assert mine.exists()
    assert _leftovers(*private_tmp) == []


def test_parse_qnn_profile_apportions_cycles():
    from edgesdk_backends.qnn import parse_qnn_profile

    text = """Msg Timestamp,Message,Time,Unit of Measurement,Timing Source,Event Level,Event Identifier
0,FINALIZE,42577,US,BACKEND,ROOT,QNN (finalize) time
0,BACKEND,400,CYCLES,BACKEND,ROOT,Accelerator (execute) time (cycles)
0,NODE,100,CYCLES,BACKEND,SUB-EVENT,Input OpId_2 (cycles)
0,NODE,300,CYCLES,BACKEND,SUB-EVENT,matmul0/MatMulAddFusion_2:OpId_31 (cycles)
0,BACKEND,40,US,BACKEND,ROOT,Accelerator (execute) time
0,EXECUTE,45,US,BACKEND,ROOT,QNN (execute) time
0,BACKEND,400,CYCLES,BACKEND,ROOT,Accelerator (execute) time (cycles)
0,NODE,100,CYCLES,BACKEND,SUB-EVENT,Input OpId_2 (cycles)
0,NODE,300,CYCLES,BACKEND,SUB-EVENT,matmul0/MatMulAddFusion_2:OpId_31 (cycles)
0,BACKEND,40,US,BACKEND,ROOT,Accelerator (execute) time
"""
    times = parse_qnn_profile(text.splitlines(), "qnn:htp", {"matmul0/MatMulAddFusion": "Gemm"})
    assert times == (
        OpTime("Input", "Input", pytest.approx(20e-6), 2, "qnn:htp"),
        OpTime("matmul0/MatMulAddFusion_2", "Gemm", pytest.approx(60e-6), 2, "qnn:htp"),
    )
    assert parse_qnn_profile(text.splitlines()[:2], "qnn:htp") == ()  # basic level: no per-op events


def test_ort_runner_enable_profiling_is_private():
    import onnxruntime as ort

    so = ort.SessionOptions()
    path = OrtRunner.enable_profiling(so)
    try:
        assert so.enable_profiling and so.profile_file_prefix.startswith(path) and os.path.isdir(path)
    finally:
        os.rmdir(path)
