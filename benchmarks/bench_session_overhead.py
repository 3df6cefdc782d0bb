"""Session.run overhead against calling onnxruntime.InferenceSession.run directly, in one run.

    python benchmarks/bench_session_overhead.py [--calls 20000] [--rounds 7]

Both sides run the same model file with the same ORT session options (1 intra-op thread) on the
same input arrays; batches of calls alternate between the two so drift hits both equally. Prints
median µs per call, the overhead in µs and the ratio, and checks that contiguous inputs of the
right dtype reach the backend without a copy.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import edgesdk
from edgesdk import hub


def identity_model(d: Path) -> str:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = d / "identity_1x16.onnx"
    onnx.save(m, str(p))
    return str(p)


def per_call_us(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def measure(name, path, feeds, calls, rounds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    raw = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    names = [o.name for o in raw.get_outputs()]
    s = edgesdk.Session(path, threads=1, require="onnxruntime:cpu")
    validated = s._validate(feeds)
    zero_copy = all(validated[k] is feeds[k] for k in feeds)
    raw_fn = lambda: raw.run(names, feeds)  # noqa: E731
    sdk_fn = lambda: s.run(feeds)  # noqa: E731
    np.testing.assert_array_equal(raw_fn()[0], sdk_fn()[names[0]])
    for fn in (raw_fn, sdk_fn):
        per_call_us(fn, max(calls // 10, 10))  # warm-up
    raw_t, sdk_t = [], []
    for _ in range(rounds):
        raw_t.append(per_call_us(raw_fn, calls))
        sdk_t.append(per_call_us(sdk_fn, calls))
    r, e = statistics.median(raw_t), statistics.median(sdk_t)
    return name, r, e, zero_copy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000, help="calls per timed batch (identity model)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        x = np.ones((1, 16), np.float32)
        rows.append(measure("identity 1x16", identity_model(Path(d)), {"x": x}, args.calls, args.rounds))
    try:
        vad = str(hub.path("silero-vad"))
        feeds = {"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
        rows.append(measure("silero-vad 576 samples", vad, feeds, max(args.calls // 20, 50), args.rounds))
    except hub.HubError as exc:
        print(f"(silero-vad skipped: {exc})", file=sys.stderr)
    print(
        f"machine: {platform.machine()} {edgesdk._sysinfo.cpu_name()}, {edgesdk._sysinfo.cpu_count()} cores, "
        f"onnxruntime {ort.__version__}, Python {platform.python_version()}"
    )
    print(f"{'model':<24} {'raw ORT µs':>11} {'Session µs':>11} {'overhead µs':>12} {'ratio':>7} {'zero-copy':>10}")
    for name, r, e, zc in rows:
        print(f"{name:<24} {r:>11.2f} {e:>11.2f} {e - r:>12.2f} {e / r:>7.3f} {'yes' if zc else 'NO':>10}")
    print("target: overhead <= 2 µs per call; zero copies of contiguous right-dtype inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
