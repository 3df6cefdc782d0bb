"""A bounded soak: threads mixing ONNX ``run``, TFLite ``run`` and LLM ``generate``, plus ``close()``
racing a generation. No deadlock, no wrong output, no leaked threads or file descriptors.

Short here (``EDGESDK_SOAK_SECONDS``, default 10 s); ``EDGESDK_SOAK_SECONDS=60`` is the full soak.
"""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest

import edgesdk
from edgesdk._feeds import random_feeds

from conftest import hub_path, make_onnx, smollm2_path

SECONDS = float(os.environ.get("EDGESDK_SOAK_SECONDS", "10"))
PROMPT, N_TOKENS = "The capital of France is", 8


def _onnx(tmp_path) -> str:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    return make_onnx(
        tmp_path / "mlp.onnx",
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])],
        initializers=[w],
    )


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Job:
    """One kind of call and its reference output, computed once before the soak."""

    def __init__(self, name, call, same):
        self.name, self.call, self.same = name, call, same
        self.reference = call()
        self.calls = 0

    def check(self) -> None:
        out = self.call()
        assert self.same(out, self.reference), f"{self.name}: output differs from the reference"
        self.calls += 1


def _tensor_job(name, session, seed):
    feeds = random_feeds(session.inputs, seed=seed)
    same = lambda a, b: all(np.array_equal(a[k], b[k]) for k in b)  # noqa: E731 - deterministic CPU kernels
    return Job(name, lambda: session.run(feeds), same)


def _soak(jobs_per_thread, seconds: float) -> None:
    stop, errors = time.monotonic() + seconds, []

    def loop(jobs):
        i = 0
        try:
            while time.monotonic() < stop:
                jobs[i % len(jobs)].check()
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(jobs,), daemon=True) for jobs in jobs_per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)  # a generation in flight at the deadline still finishes
    assert not [t for t in threads if t.is_alive()], "a soak thread is stuck (deadlock?)"
    assert not errors, errors


def _close_during_generate(path, reference: str, delay: float) -> None:
    """close() while another thread generates: the generation finishes or fails typed, never crashes or hangs."""
    s = edgesdk.Session(path)
    outcome = {}

    def gen():
        try:
            outcome["text"] = s.generate(PROMPT, max_tokens=64, temperature=0.0)
        except edgesdk.EdgeSDKError as exc:
            outcome["error"] = exc
        except BaseException as exc:  # noqa: BLE001
            outcome["untyped"] = exc

    t = threading.Thread(target=gen, daemon=True)
    t.start()
    time.sleep(delay)
    s.close()
    t.join(120)
    assert not t.is_alive(), "generate did not return after close()"
    assert "untyped" not in outcome, outcome
    if "text" in outcome:
        assert outcome["text"].startswith(reference), outcome["text"]
    with pytest.raises(edgesdk.EdgeSDKError, match="closed"):
        s.generate(PROMPT, max_tokens=2)


def _close_during_stream(s) -> None:
    """An open stream's next step after close() raises a typed error (and frees the model's lock)."""
    stream = s.generate_stream(PROMPT, max_tokens=64, temperature=0.0)
    next(stream)
    closer = threading.Thread(target=s.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "close() waited for a suspended stream"
    with pytest.raises(edgesdk.EdgeSDKError, match="closed"):
        next(stream)


def test_soak(tmp_path):
    llm_path, tfl_path = smollm2_path(), hub_path("wakeword-okay-nabu")
    onnx_path = _onnx(tmp_path)
    for p in (onnx_path, tfl_path, llm_path):  # runtimes' one-time thread pools and caches, before counting
        edgesdk.Session(p).close()
    gc.collect()
    threads0, fds0 = threading.active_count(), _open_fds()

    onnx, tfl, llm = (edgesdk.Session(p) for p in (onnx_path, tfl_path, llm_path))
    try:
        o, t = _tensor_job("onnx", onnx, 1), _tensor_job("tflite", tfl, 2)
        g = Job("generate", lambda: str(llm.generate(PROMPT, max_tokens=N_TOKENS, temperature=0.0)), str.__eq__)
        _soak([[o], [t], [g], [o, t, g]], SECONDS)
        assert o.calls and t.calls and g.calls
        print(f"soak {SECONDS:g} s: {o.calls} onnx runs, {t.calls} tflite runs, {g.calls} generations, all equal to the reference")
        _close_during_stream(llm)
    finally:
        for s in (onnx, tfl, llm):
            s.close()
    _close_during_generate(llm_path, g.reference, 0.2)

    gc.collect()
    assert threading.active_count() == threads0, [t.name for t in threading.enumerate()]
    assert _open_fds() <= fds0, sorted(os.listdir("/proc/self/fd"))
