"""The CLI as a user runs it: a subprocess, real models, exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import hub_path


def edgesdk(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_devices_lists_backends_and_kinds():
    out = edgesdk("devices").stdout
    assert "onnxruntime:cpu" in out and "tflite:cpu" in out and "kernels:" in out
    data = json.loads(edgesdk("devices", "--json").stdout)
    ort = next(b for b in data["backends"] if b["name"] == "onnxruntime")
    assert ort["available"] and ort["devices"][0]["kind"] == "cpu"
    k = data["kernels"]
    if k["impl"] == "c":  # the path that runs, and every one that could
        assert k["simd"] == k["simd_runnable"][0] and k["simd_runnable"][-1] == "portable"


def test_devices_says_what_was_asked_and_what_runs():
    import os

    p = subprocess.run([sys.executable, "-m", "edgesdk.cli", "devices", "--json"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "EDGESDK_SIMD": "neon" if os.uname().machine == "x86_64" else "avx2"})
    k = json.loads(p.stdout)["kernels"]
    if k["impl"] != "c":
        pytest.skip("C kernels not built")
    assert k["simd_requested"] in ("neon", "avx2") and "not built for this architecture" in k["simd_note"]
    assert k["simd"] == k["simd_runnable"][0]


def test_info_shows_signature_and_backends():
    out = edgesdk("info", hub_path("ppocr-cls")).stdout
    assert "input  x: float32" in out and "onnxruntime:cpu          yes" in out and "tflite:cpu               no" in out
    data = json.loads(edgesdk("info", "face-detection", "--json").stdout)
    assert data["format"] == "tflite" and data["inputs"] == ["input: float32[1, 128, 128, 3]"]


def test_run_with_npy_inputs_and_outputs(tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 128, 128, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = edgesdk("run", "face-detection", "--input", f"input={tmp_path / 'x.npy'}", "-o", str(tmp_path / "out")).stdout
    assert "runs on tflite:cpu" in out and "regressors: float32[1, 896, 16]" in out
    saved = np.load(tmp_path / "out" / "regressors.npy")
    import edgesdk as sdk

    np.testing.assert_array_equal(saved, sdk.Session("hub:face-detection").run({"input": x})["regressors"])


def test_run_errors_are_one_clear_line(tmp_path):
    p = edgesdk("run", str(tmp_path / "missing.onnx"), check=False)
    assert p.returncode == 1 and "no such file" in p.stderr and "Traceback" not in p.stderr
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    p = edgesdk("run", "face-detection", "--input", f"input={tmp_path / 'bad.npy'}", check=False)
    assert p.returncode == 1 and "rank 2, expected rank 4" in p.stderr
    p = edgesdk("run", "face-detection", "--require", "npu", check=False)
    assert p.returncode == 1 and "require='npu'" in p.stderr
    p = edgesdk("run", "face-detection", "--input", "nonsense", check=False)
    assert p.returncode == 1 and "NAME=FILE.npy" in p.stderr


def test_hub_commands():
    assert "silero-vad" in edgesdk("hub", "list").stdout
    assert "ok sha256=" in edgesdk("hub", "verify", "silero-vad").stdout
