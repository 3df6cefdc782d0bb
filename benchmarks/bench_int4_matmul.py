#!/usr/bin/env python
"""INT4 block-32 matmul vs the memory-bandwidth floor, ONNX Runtime MatMulNBits and numpy fp32.

One run on this machine:
  1. DRAM read bandwidth of a streaming kernel over >= 1 GiB, at 1 and 2 threads;
  2. edgesdk INT4 (block 32, sym, fp16 scales) matmul for K x N = 4096x4096, 4096x11008,
     11008x4096 at M = 1, 32, 128, 1 and 2 threads, cycling through distinct weight
     matrices totalling >= 1 GiB so every read comes from DRAM;
  3. the same shapes through onnxruntime MatMulNBits (accuracy_level 0 and 4) and numpy
     fp32 matmul, also cold;
  4. a table: ms per matmul, effective GB/s (each implementation's own weight bytes / time),
     % of the bandwidth, GFLOP/s, speedup vs the best ORT level. edgesdk's M = 1 rows are paired
     per call (each call is followed by a read of another, as cold matrix with the probe's
     fastest read loop; % = median of read time / call time, so a shared VM's drift drops out);
     the other rows, ORT's among them (its profiler times the node, so no read can sit beside
     a call), take the bandwidth probed once at the start.

    python benchmarks/bench_int4_matmul.py            # full run (~3 GiB RAM, a few minutes)
    python benchmarks/bench_int4_matmul.py --quick    # smoke test: 256 MiB sets, fewer shapes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time

import numpy as np

from edgesdk import kernels
from edgesdk.quant import QuantizedTensor, matmulnbits_model
from edgesdk.quant._buffer import weight_buffer

GiB = 1 << 30
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096)]  # (K, N)
MS = [1, 32, 128]
THREADS = [1, 2]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def random_q4(rng, k: int, n: int) -> QuantizedTensor:
    """Distinct random INT4 block-32 content; quantizing real floats would take minutes per GiB. The
    codes sit in the pages a loaded model's weights get (huge pages where the OS gives them)."""
    g, s = -(-n // 16), -(-k // 32)
    q = weight_buffer((g, s, 256))
    q[:] = rng.integers(0, 256, (g, s, 256), dtype=np.uint8)
    d = (rng.random((g, s, 16), dtype=np.float32) * 0.02 + 0.001).astype(np.float16)
    return QuantizedTensor((n, k), 4, 32, "sym", q, d, source="bench-random")


def read_weights(how, q: QuantizedTensor, threads: int) -> None:
    """Every byte of q's arrays, in place (a copy would be timed too), read the way `how` reads memory."""
    for arr in (q.qdata, q.scales, q.mins):
        if arr is not None:
            how.read(arr, threads=threads)


def time_cycle(fn, count: int, min_calls: int, budget_s: float, at_least: int = 3) -> float:
    """Median seconds per call of fn(i), i cycling over count distinct weight sets.

    Calls continue until min_calls were made (a full pass over >= 1 GiB for the
    bandwidth-bound M=1) and budget_s has elapsed (or every set was used once).
    The median, not the mean, because this machine is shared: a preempted call is an
    outlier, not a property of the kernel."""
    return float(np.median(_cycle(fn, count, min_calls, budget_s, at_least)[0]))


def time_paired(fn, count: int, read, min_calls: int, budget_s: float, at_least: int = 3) -> tuple[float, float]:
    """(median seconds per call of fn(i), median share of the memory read rate) with i cycling as in
    time_cycle, each call followed by read(i): a read, with the fastest read loop, of the bytes of a
    call far from i in the cycle (as cold as call i's, and as many). The share is the median over
    calls of read time / call time: on a shared VM DRAM bandwidth drifts by tens of percent within a
    minute, and a probe run once per benchmark then credits or blames the kernel for the drift."""
    ts, reads = _cycle(fn, count, min_calls, budget_s, at_least, read)
    return float(np.median(ts)), float(np.median(np.array(reads) / np.array(ts)))


def _cycle(fn, count: int, min_calls: int, budget_s: float, at_least: int, read=None) -> tuple[list, list]:
    """Seconds of each timed fn(i) (and of each read(i) right after it, when read is given); the
    stopping rule of time_cycle."""
    fn(0)
    if read:
        read(0)
    ts, reads, t0 = [], [], time.perf_counter()
    while True:
        i = (len(ts) + 1) % count
        t = time.perf_counter()
        fn(i)
        ts.append(time.perf_counter() - t)
        if read:
            t = time.perf_counter()
            read(i)
            reads.append(time.perf_counter() - t)
        el = time.perf_counter() - t0
        if len(ts) >= min_calls and (el >= budget_s or len(ts) >= count) and len(ts) >= at_least:
            return ts, reads


def ort_session(weights, m_threads: int, level: int):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    # one graph, one MatMulNBits node per distinct weight; each run() asks for one output
    base = [matmulnbits_model(w, accuracy_level=level) for w in weights]
    nodes, inits, outs = [], [], []
    for i, mdl in enumerate(base):
        g = mdl.graph
        ren = {t.name: f"{t.name}_{i}" for t in g.initializer}
        for t in g.initializer:
            t.name = ren[t.name]
            inits.append(t)
        node = g.node[0]
        node.input[:] = ["X"] + [ren[x] for x in node.input[1:]]
        node.output[0] = f"Y{i}"
        node.name = f"mm{i}"
        nodes.append(node)
        outs.append(helper.make_tensor_value_info(f"Y{i}", onnx.TensorProto.FLOAT, ["M", weights[i].shape[0]]))
    graph = helper.make_graph(nodes, "bench", [base[0].graph.input[0]], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=list(base[0].opset_import))
    model.ir_version = base[0].ir_version
    so = ort.SessionOptions()
    so.intra_op_num_threads = m_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # per-node kernel times from ORT's profiler: one sample per cold matmul, without
    # session/Python overhead (which favours ORT slightly)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"edgesdk_bench_prof_{os.getpid()}")
    # >2 GiB protobufs cannot be serialized; external data keeps large sets loadable
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"edgesdk_bench_{os.getpid()}.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=os.path.basename(path) + ".data")
    del base, model, graph, nodes, inits
    gc.collect()
    try:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    finally:
        for p in (path, path + ".data"):
            if os.path.exists(p):
                os.remove(p)
    return sess


def _ort_node_times(prof_path: str, skip_runs: int, runs_per_m: list[int], count: int) -> list[float]:
    """Median MatMulNBits kernel seconds per M from an ORT profile (runs in call order)."""
    with open(prof_path) as f:
        events = json.load(f)
    os.remove(prof_path)
    runs, cur = [], None
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["name"].startswith("mm"):
            idx = int(e["name"][2:].split("_")[0])
            if idx == 0 or cur is None:
                cur = []
                runs.append(cur)
            cur.append(e["dur"] * 1e-6)
    runs = runs[skip_runs:]
    out, pos = [], 0
    for r in runs_per_m:
        samples = [d for run in runs[pos : pos + r] for d in run]
        pos += r
        out.append(float(np.median(samples)) if samples else float("nan"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 MiB sets, one shape, M=1 and 32: a smoke test")
    ap.add_argument("--set-gib", type=float, default=None, help="distinct weight bytes per shape (default 1.0)")
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--json", help="also write results to this JSON file")
    ap.add_argument("--budget", type=float, default=None, help="seconds per compute-bound measurement")
    args = ap.parse_args(argv)
    if not kernels.available():
        print("C kernels not available:", kernels.info().reason)
        return 1

    set_bytes = int((args.set_gib if args.set_gib else (0.25 if args.quick else 1.0)) * GiB)
    shapes = SHAPES[:1] if args.quick else SHAPES
    ms = [1, 32] if args.quick else MS
    budget = args.budget if args.budget else (0.3 if args.quick else 1.0)
    rng = np.random.default_rng(0)
    info = kernels.info()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {cpu_name()}  {os.cpu_count()} CPUs  kernels={info.impl}/{info.simd}  decode reads {info.decode_read}  {info.build}"
    )
    import onnxruntime as ort

    print(f"# onnxruntime {ort.__version__}  numpy {np.__version__}  weight set {set_bytes / GiB:.2f} GiB per shape")

    fastest = {t: kernels.fastest_read(t, set_bytes=max(set_bytes, GiB if not args.quick else set_bytes)) for t in THREADS}
    bw = {t: r.gbs for t, r in fastest.items()}
    for t in THREADS:
        print(f"# DRAM read bandwidth, {t} thread(s): {bw[t]:.1f} GB/s")
    print("# % BW of edgesdk's M=1 rows: median over calls of (time to read a matrix as cold as the call's, right after it) / (call time);")
    print("# of the other rows: GB/s over the bandwidth above (ORT's kernel times come from its profiler, so cannot be paired)")

    rows = []

    def add(impl, k, n, m, t, sec, wbytes, share=None):
        print(f"  {impl:<24} K={k:<5} N={n:<5} M={m:<3} threads={t}: {sec * 1e3:9.3f} ms", file=sys.stderr, flush=True)
        gbs = wbytes / sec / 1e9
        pct = 100 * (share if share is not None else gbs / bw[t])
        rows.append(dict(impl=impl, K=k, N=n, M=m, threads=t, ms=sec * 1e3, gbs=gbs, pct_bw=pct, gflops=2 * m * n * k / sec / 1e9))

    for k, n in shapes:
        one = random_q4(rng, k, n)
        count = max(2, -(-set_bytes // one.nbytes))
        weights = [one] + [random_q4(rng, k, n) for _ in range(count - 1)]
        wbytes = one.nbytes
        for m in ms:
            x = rng.standard_normal((m, k)).astype(np.float32)
            out = np.empty((m, n), np.float32)
            for t in THREADS:

                def run(i, x=x, out=out, t=t, weights=weights):
                    kernels.matmul(x, weights[i], out=out, threads=t)

                if m == 1:

                    def runf(i, x=x, out=out, t=t, weights=weights):
                        kernels.matmul(x, weights[i], out=out, threads=t, act="f32")

                    def read(i, t=t, weights=weights, count=count):
                        read_weights(fastest[t], weights[(i + count // 2) % count], t)

                    sec, share = time_paired(run, count, read, 3 * count, budget)
                    add("edgesdk int8-act", k, n, m, t, sec, wbytes, share)
                    sec, share = time_paired(runf, count, read, count, budget)
                    add("edgesdk f32-act", k, n, m, t, sec, wbytes, share)
                else:
                    add("edgesdk int8-act", k, n, m, t, time_cycle(run, count, 1, budget), wbytes)
        if not args.no_ort:
            ort_bytes = n * (k // 2) + n * (k // 32) * 4  # 4-bit codes + fp32 scales
            for level in (0, 4):
                for t in THREADS:
                    sess = ort_session(weights, t, level)
                    passes = {}
                    for m in ms:
                        feed = {"X": rng.standard_normal((m, k)).astype(np.float32)}
                        sess.run(None, feed)  # warm-up pass (allocations), not profiled below
                        passes[m] = 3 if m == 1 else 1
                    prof_start = len(passes)
                    for m in ms:
                        feed = {"X": rng.standard_normal((m, k)).astype(np.float32)}
                        for _ in range(passes[m]):
                            sess.run(None, feed)
                    durs = _ort_node_times(sess.end_profiling(), prof_start, [passes[m] for m in ms], count)
                    for m, sec in zip(ms, durs):
                        add(f"ORT MatMulNBits acc{level}", k, n, m, t, sec, ort_bytes)
                    del sess
                    gc.collect()
        del weights, one
        gc.collect()
        if not args.no_numpy:
            fbytes = 4 * k * n
            fcount = max(2, -(-set_bytes // fbytes))
            wf = [rng.standard_normal((k, n), dtype=np.float32) for _ in range(fcount)]
            for m in ms:
                x = rng.standard_normal((m, k)).astype(np.float32)
                for t in THREADS:
                    _blas_threads(t)

                    def runn(i, x=x, wf=wf):
                        np.dot(x, wf[i])

                    sec = time_cycle(runn, fcount, fcount if m == 1 else 1, budget)
                    add("numpy fp32", k, n, m, t, sec, fbytes)
            _blas_threads(None)
            del wf
            gc.collect()

    best_ort = {}
    for r in rows:
        if r["impl"].startswith("ORT"):
            key = (r["K"], r["N"], r["M"], r["threads"])
            best_ort[key] = min(best_ort.get(key, np.inf), r["ms"])
    print()
    print(f"| {'impl':<24} | {'K x N':>11} | {'M':>3} | {'thr':>3} | {'ms':>8} | {'GB/s':>6} | {'% BW':>5} | {'GFLOP/s':>7} | {'vs best ORT':>11} |")
    print("|" + "|".join("-" * w for w in (26, 13, 5, 5, 10, 8, 7, 9, 13)) + "|")
    for r in sorted(rows, key=lambda r: (r["K"], r["N"], r["M"], r["threads"], r["impl"])):
        b = best_ort.get((r["K"], r["N"], r["M"], r["threads"]))
        ratio = f"{b / r['ms']:.2f}x" if b else "-"
        print(
            f"| {r['impl']:<24} | {r['K']:>5}x{r['N']:<5} | {r['M']:>3} | {r['threads']:>3} | {r['ms']:>8.3f} | "
            f"{r['gbs']:>6.1f} | {r['pct_bw']:>5.1f} | {r['gflops']:>7.1f} | {ratio:>11} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(bandwidth_gbs=bw, rows=rows, cpu=cpu_name(), kernels=str(info)), f, indent=1)
    return 0


def _blas_threads(n):
    """Set numpy's OpenBLAS thread count (threadpoolctl if installed, else the bundled
    OpenBLAS' own setter found among the loaded libraries)."""
    n = n or (os.cpu_count() or 1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        return
    except ImportError:
        pass
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return
    for path in libs:
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return


if __name__ == "__main__":
    sys.exit(main())
