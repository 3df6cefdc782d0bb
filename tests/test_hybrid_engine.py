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
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk.hybrid import OpenAICompatible, Orchestrator, Policy, V2Client

from conftest import free_port, hub_path

ROOT = Path(__file__).resolve().parents[1]


def _wait_ready(url, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
    (d / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "metrics_endpoint": None,
    }))
    (d / "model-settings.json").write_text(json.dumps({
        "name": "ppocr-cls", "implementation": "onnx_runtime.OnnxRuntime", "parameters": {"uri": model},
    }))
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([exe, "start", str(d)], cwd=d, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not _wait_ready(f"http://127.0.0.1:{port}/v2/models/ppocr-cls/ready", proc):
            pytest.fail(f"MLServer did not become ready: {(d / 'server.log').read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}", model
    finally:
        _stop(proc)
        log.close()


def test_v2_client_against_mlserver(mlserver):
    url, model = mlserver
    c = V2Client(url, timeout_s=30)
    assert c.ready() and c.ready("ppocr-cls")
    assert c.model_metadata("ppocr-cls")["name"] == "ppocr-cls"
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    remote = c.infer("ppocr-cls", {"x": x})
    local = edgesdk.Session(model).run({"x": x})
    (name, got), = remote.items()
    np.testing.assert_allclose(got, next(iter(local.values())), atol=1e-5)
    assert not c.ready("no-such-model")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    try:
        import fastapi, sse_starlette, starlette_context, uvicorn  # noqa: F401,E401
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"llama-cpp-python[server] not installed ({exc}); pip install 'llama-cpp-python[server]'")
    port = free_port()
    gguf = hub_path("smollm2-135m")
    logfile = tmp_path_factory.mktemp("llama") / "server.log"
    log = open(logfile, "w")  # a pipe nobody reads would fill up and stall the server
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "1024", "--model_alias", "smollm2", "--n_threads", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        if not _wait_ready(f"http://127.0.0.1:{port}/v1/models", proc, timeout=120):
            pytest.fail(f"llama.cpp server did not start: {logfile.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


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
