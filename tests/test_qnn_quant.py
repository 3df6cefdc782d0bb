"""QDQ quantization for the NPU, and QDQ models on the real HTP simulator.

Tolerances: a uint8 QDQ model is compared with the float model within a few quantization steps of
the output range (~1/255 of it per step); the HTP and ONNX Runtime's QDQ reference semantics may
round each requantization differently, so they agree within a few output LSBs, not bit-exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgesdk
from edgesdk._errors import QuantizationError
from edgesdk_backends.qnn import load_calibration, quantize_for_npu
from qnn_helpers import CLS_SHAPE, cls_qdq, conv_mlp, text_crops

qnn = pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install edgesdk[qnn])")


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    return conv_mlp(tmp_path_factory.mktemp("npuq") / "conv_mlp.onnx")


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}


def qnn_run(model, feeds, **qnn_opts):
    with edgesdk.Session(model, require="npu", backend_options={"qnn": {"context_cache": False, **qnn_opts}}) as s:
        assert all(n.device_id == "qnn:htp" for n in s.placement.nodes), s.placement
        return s.runner.precision, [s.run(f) for f in feeds]


def test_small_model_qdq_on_htp(float_model, tmp_path):
    out = tmp_path / "conv_mlp.qdq.onnx"
    report = quantize_for_npu(float_model, out, lambda: batches(16), eval_data=list(batches(4, seed=9)))
    assert report.calibration_samples == 16 and report.eval_samples == 4 and report.qdq_nodes > 0
    (y,) = report.outputs
    # Sigmoid outputs in (0, 1): uint8 steps of ~1/255 plus the calibration range error.
    assert y.max_abs < 0.05 and y.cosine > 0.999, report.summary()
    assert "accuracy vs the float model" in report.summary()

    feeds = list(batches(3, seed=5))
    precision, got = qnn_run(out, feeds)
    assert precision == "quantized"
    with edgesdk.Session(float_model, require="onnxruntime:cpu") as ref:
        for f, g in zip(feeds, got):
            np.testing.assert_allclose(g["y"], ref.run(f)["y"], atol=0.05)


def test_real_model_from_wheel_qdq_on_htp():
    path, report = cls_qdq()
    (out,) = report.outputs
    assert report.input_shapes == {"x": CLS_SHAPE}  # fixed from the calibration samples: HTP compiles static shapes
    assert out.max_abs < 0.05 and out.cosine > 0.999, report.summary()
    feeds = text_crops(4, seed=3)
    precision, got = qnn_run(path, feeds)
    assert precision == "quantized"
    with edgesdk.Session(edgesdk.hub.path("ppocr-cls"), require="onnxruntime:cpu") as ref:
        for f, g in zip(feeds, got):
            want = ref.run(f)
            (k,) = want
            assert np.argmax(g[k]) == np.argmax(want[k])  # same text direction
            np.testing.assert_allclose(g[k], want[k], atol=0.05)


def test_calibration_sources(tmp_path, float_model):
    spec = edgesdk.Session(float_model, require="onnxruntime:cpu").inputs
    rng = np.random.default_rng(0)
    d = tmp_path / "cal"
    d.mkdir()
    np.save(d / "a.npy", rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    np.save(d / "b.npy", rng.standard_normal((3, 1, 3, 16, 16)).astype(np.float32))  # a stack of 3 samples
    np.savez(d / "c.npz", x=rng.standard_normal((1, 3, 16, 16)))  # float64: cast to the model's float32
    samples = load_calibration(d, spec)
    assert len(samples) == 5 and all(s["x"].dtype == np.float32 and s["x"].shape == (1, 3, 16, 16) for s in samples)
    assert len(load_calibration(batches(10), spec, limit=4)) == 4

    with pytest.raises(QuantizationError, match="no .npz or .npy"):
        load_calibration(tmp_path, spec)
    with pytest.raises(QuantizationError, match="lacks input"):
        load_calibration([{"y": np.zeros((1, 3, 16, 16), np.float32)}], spec)
    with pytest.raises(QuantizationError, match="one static shape"):
        load_calibration([{"x": np.zeros((1, 3, 16, 16), np.float32)}, {"x": np.zeros((1, 3, 8, 16), np.float32)}], spec)
    with pytest.raises(QuantizationError, match="already QDQ"):
        quantize_for_npu(cls_qdq()[0], tmp_path / "twice.onnx", text_crops(1))
    with pytest.raises(QuantizationError, match="activation_type"):
        quantize_for_npu(float_model, tmp_path / "x.onnx", d, activation_type="int4")


def test_quantize_cli(float_model, tmp_path, capsys):
    from edgesdk.cli import main

    d = tmp_path / "cal"
    d.mkdir()
    for i, b in enumerate(batches(4)):
        np.savez(d / f"{i}.npz", **b)
    out = tmp_path / "q.onnx"
    assert main(["quantize", "--for", "npu", float_model, "--calibration", str(d), "-o", str(out), "--per-channel"]) == 0
    text = capsys.readouterr().out
    assert "per-channel" in text and "y: max|e|=" in text and out.exists()
    assert main(["quantize", "--for", "npu", float_model, "--calibration", str(tmp_path / "none"), "-o", str(out)]) == 1
