"""The cloud clients against real serving engines on loopback (127.0.0.1 only, bounded requests,
servers stopped by PID).

- MLServer serving an ONNX model over the Open Inference Protocol V2 (custom runtime in
  tests/engines/mlserver). The server lives in its own environment; set ``EDGESDK_MLSERVER`` to its
  ``mlserver`` executable (scripts/setup.sh makes ``.venv-engines``), otherwise it is looked up on PATH.
- llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) serving the SmolLM2 GGUF. It
  compiles llama.cpp (~6 min), so it is an optional extra; the test skips with the reason if absent.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.hybrid import OpenAICompatible, Orchestrator, Policy, V2Client

from conftest import free_port, hub_path, stop_process, wait_http_ready

ROOT = Path(__file__).resolve().parents[1]


def _mlserver_exe():
    exe = os.environ.get("EDGESDK_MLSERVER") or shutil.which("mlserver")
    local = ROOT / ".venv-engines" / "bin" / "mlserver"
    if not exe and local.exists():
        exe = str(local)
    return exe


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    exe = _mlserver_exe()
    if not exe:
        pytest.skip("MLServer not installed (scripts/setup.sh creates .venv-engines with it; or set EDGESDK_MLSERVER)")
    model = hub_path("ppocr-cls")
    d = tmp_path_factory.mktemp("mlserver")
    shutil.copy(ROOT / "tests" / "engines" / "mlserver" / "onnx_runtime.py", d / "onnx_runtime.py")
    port = free_port()
    (d / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
                "metrics_endpoint": None,
            }
        )
    )
    (d / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "ppocr-cls",
                "implementation": "onnx_runtime.OnnxRuntime",
                "parameters": {"uri": model},
            }
        )
    )
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([exe, "start", str(d)], cwd=d, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_http_ready(f"http://127.0.0.1:{port}/v2/models/ppocr-cls/ready", proc):
            pytest.fail(f"MLServer did not become ready: {(d / 'server.log').read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}", model
    finally:
        stop_process(proc)
        log.close()


def test_v2_client_against_mlserver(mlserver):
    url, model = mlserver
    c = V2Client(url, timeout_s=30)
    assert c.ready() and c.ready("ppocr-cls")
    assert c.model_metadata("ppocr-cls")["name"] == "ppocr-cls"
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    remote = c.infer("ppocr-cls", {"x": x})
    local = edgesdk.Session(model).run({"x": x})
    ((name, got),) = remote.items()
    np.testing.assert_allclose(got, next(iter(local.values())), atol=1e-5)
    assert not c.ready("no-such-model")


def test_openai_client_against_llama_cpp_server(llama_server, tmp_path):
    c = OpenAICompatible(llama_server, model="smollm2", timeout_s=120)
    reply = c.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=16)
    assert reply.text.strip() and reply.tokens_out > 0
    streamed = "".join(c.chat_stream([{"role": "user", "content": "What is the capital of France?"}], max_tokens=16))
    assert streamed.strip()
    device = edgesdk.Session(hub_path("smollm2-135m"))
    o = Orchestrator(device, c, Policy(privacy="redact", min_confidence=0.99), audit_log=tmp_path / "a.jsonl", max_tokens=16)
    ans = o.generate("Write one sentence to anna@example.com about Paris.")
    assert ans.route == "cloud" and "anna@example.com" not in (o.audit.records()[-1]["sent"])
    st = o.generate_stream("What is the capital of Italy?")
    assert "".join(st) and st.answer.route in ("device", "cloud")
