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

    p = subprocess.run(
        [sys.executable, "-m", "edgesdk.cli", "devices", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EDGESDK_SIMD": "neon" if os.uname().machine == "x86_64" else "avx2"},
    )
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


def test_version():
    import edgesdk as sdk

    assert edgesdk("--version").stdout.strip() == f"edgesdk {sdk.__version__}"


def test_verbosity_flags_before_or_after_the_command():
    from edgesdk.cli import build_parser

    ap = build_parser()
    assert (ap.parse_args(["devices"]).quiet, ap.parse_args(["devices"]).verbose) == (0, 0)
    assert ap.parse_args(["-q", "devices"]).quiet == 1 and ap.parse_args(["devices", "-q"]).quiet == 1
    assert ap.parse_args(["-v", "hub", "verify", "silero-vad"]).verbose == 1  # not reset by the subcommand
    assert ap.parse_args(["hub", "verify", "silero-vad", "-vv"]).verbose == 2


def test_json_of_run_has_structured_placement():
    data = json.loads(edgesdk("run", "face-detection", "--random", "--json").stdout)
    p = data["placement"]
    assert p["device"]["id"] == "tflite:cpu" and p["device"]["kind"] == "cpu" and p["backend"] == "tflite"
    assert sum(p["node_counts"].values()) > 0 and p["fallbacks"] == []
    assert {"backend", "device", "reason"} <= set(p["refusals"][0]) and data["runs"] == 1


def test_json_of_generate_perplexity_and_hub_verify():
    data = json.loads(edgesdk("generate", hub_path("smollm2-135m"), "The capital of France is", "--raw", "-n", "3", "--json").stdout)
    assert "Paris" in data["text"] and data["stats"]["generated_tokens"] == 3 and data["placement"]["device"]["id"]
    text = str(__import__("pathlib").Path(__file__).parent / "data" / "tinyshakespeare-4k.txt")
    data = json.loads(edgesdk("perplexity", "smollm2-135m", text, "--n-ctx", "64", "--max-chunks", "1", "--json").stdout)
    assert data["chunks"] == 1 and data["ppl"] > 1 and len(data["per_chunk"]) == 1
    data = json.loads(edgesdk("hub", "verify", "silero-vad", "--json").stdout)
    assert data == {"name": "silero-vad", "ok": True, "sha256": data["sha256"]} and len(data["sha256"]) == 64


def test_quiet_generate_prints_only_the_text():
    p = edgesdk("-q", "generate", hub_path("smollm2-135m"), "The capital of France is", "--raw", "-n", "3")
    assert "Paris" in p.stdout and p.stderr == ""


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io

    from edgesdk import _progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, enabled, shown in ((Terminal(), True, True), (io.StringIO(), True, False), (Terminal(), False, False)):
        monkeypatch.setattr("sys.stderr", stream)
        _progress.set_enabled(enabled)
        try:
            with _progress.bar(4, "counting", delay=0) as bar:
                bar.update(4)
        finally:
            _progress.set_enabled(True)
        assert ("counting" in stream.getvalue()) == shown
