"""QNN backend parts that need no onnxruntime-qnn: options, the missing-package reason, log parsing, cache entries."""

from __future__ import annotations

import json
import sys

import pytest

import edgesdk
import edgesdk.errors
from edgesdk_backends.qnn import QnnBackend, QnnOptions
from edgesdk_backends.qnn._cache import CTX_MODEL, ContextCache
from edgesdk_backends.qnn._diagnose import parse_reasons


def test_options_are_validated():
    with pytest.raises(ValueError, match="performance_mode"):
        QnnOptions(performance_mode="turbo")
    with pytest.raises(ValueError, match="unknown qnn option"):
        QnnOptions.from_value({"perf": "burst"})
    with pytest.raises(ValueError, match="input_shapes"):
        QnnOptions(input_shapes={"x": [1, 0]})
    with pytest.raises(ValueError, match="soc_model"):
        QnnOptions(soc_model="SM0000")
    assert QnnOptions(soc_model="sm8750").soc_model == 69
    assert QnnOptions.from_value(QnnOptions(precision="fp16").to_dict()) == QnnOptions(precision="fp16")
    po = QnnOptions(performance_mode="power_saver", profiling_level="basic").provider_options_for("fp16")
    assert po["htp_performance_mode"] == "power_saver" and po["enable_htp_fp16_precision"] == "1" and po["soc_model"] == "57"
    assert po["offload_graph_io_quantization"] == "0" and po["profiling_level"] == "basic"
    assert "enable_htp_fp16_precision" not in QnnOptions().provider_options_for("quantized")
    assert QnnOptions().resolved_precision(["ai.onnx::Conv", "ai.onnx::QuantizeLinear"]) == "quantized"
    assert QnnOptions().resolved_precision(["ai.onnx::Conv"]) == "fp16"


def test_missing_package_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)
    with pytest.raises(edgesdk.errors.BackendUnavailable, match=r"onnxruntime-qnn is not installed: pip install edgesdk\[qnn\]"):
        QnnBackend().probe()


def test_reasons_are_parsed_from_the_ep_log():
    log = (
        "2026-01-01 00:00:00.000000001 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] Validation FAILED for 1 nodes in OrtNodeUnit (Det) :\n"
        "\tOperator type: Det Node name: det0 Node index: 1\n"
        "\tREASON : Operators of type `Det` are not supported by QNN EP.\n\n"
        "\x1b[0;93m2026-01-01 00:00:00.000000002 [W:onnxruntime:, qnn_model_wrapper.cc:565 CreateQnnNode] QNN.backendValidateOpConfig() "
        "failed for node `add64_2` of type `ElementWiseAdd` with error code 3110\n\x1b[m\n"
        "2026-01-01 00:00:00.000000003 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] Validation FAILED for 1 nodes in OrtNodeUnit (Add) :\n"
        "\tOperator type: Add Node name: add64 Node index: 2\n"
        "\tREASON : Failed to add node.\n"
    )
    r = parse_reasons(log)
    assert r["det0"] == "Operators of type `Det` are not supported by QNN EP."
    assert r["add64"] == "the HTP backend rejected it as QNN op ElementWiseAdd (validation error 3110)"


def test_cache_entry_verification(tmp_path):
    cache = ContextCache(tmp_path)
    key = cache.make_key({"model_sha256": "ab", "provider_options": {"backend_type": "htp"}})
    assert cache.lookup(key) is None
    staging = cache.staging_dir()
    (staging / CTX_MODEL).write_bytes(b"ctx-model")
    (staging / "model_ctx_qnn.bin").write_bytes(b"binary" * 100)
    entry = cache.commit(staging, key, [("n0", "Relu", "qnn:htp", None)], {"precision": "fp16"})
    assert not staging.exists() and entry.path.name == key
    hit = cache.lookup(key)
    assert hit is not None and hit.nodes == (("n0", "Relu", "qnn:htp", None),)
    (entry.path / "model_ctx_qnn.bin").write_bytes(b"binary" * 99 + b"BINARY")
    assert cache.lookup(key) is None and not entry.path.exists()  # corrupt -> removed, never loaded
    staging = cache.staging_dir()
    (staging / CTX_MODEL).write_bytes(b"x")
    entry = cache.commit(staging, key, [], {})
    man = json.loads((entry.path / "manifest.json").read_text())
    man["key"] = "someone-else"
    (entry.path / "manifest.json").write_text(json.dumps(man))
    assert cache.lookup(key) is None
