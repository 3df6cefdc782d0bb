"""One model on every available backend/device: latency percentiles, throughput, peak memory, and
session-creation time cold vs cached (QNN context binaries), in one table.

    python benchmarks/bench_backends.py [MODEL|hub:NAME] [--runs 30] [--threads 2] [--qdq] [--json]
    python benchmarks/bench_backends.py hub:smollm2-135m [--tokens 64]     # GGUF: prompt/decode tok/s per device

Default model: PP-OCR cls (``hub:ppocr-cls``) at 1x3x48x192. Each device runs in its own fresh
process (spawned), so "peak RSS" is that process's whole peak (Python + runtime + model), comparable
across rows, and one backend's caches cannot flatter another. With ``--qdq`` the model is also
QDQ-quantized for the NPU (random-free calibration: rendered text images) and the QDQ model gets its
own rows - what an NPU is meant to run. Simulated devices are labelled SIMULATED: their outputs are
real, their timings say nothing about the hardware they imitate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _feeds(model, shape_overrides):
    from edgesdk._feeds import random_feeds
    from edgesdk._modelfile import open_model

    specs = open_model(model).info.get("inputs") or ()
    feeds = random_feeds(specs, seed=0)
    for name, shape in shape_overrides.items():
        feeds[name] = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return feeds


def _child(model, device_id, feeds, runs, warmup, threads, cache_dir, queue):
    """Measure one device in this (fresh) process; put a result dict on ``queue``."""
    import resource

    import edgesdk

    out = {"device": device_id}
    try:
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        bo = {"qnn": {"input_shapes": shapes, "cache_dir": cache_dir}} if device_id.startswith("qnn:") else {}
        opts = edgesdk.SessionOptions(require=device_id, threads=threads, backend_options=bo)
        t0 = time.perf_counter()
        s = edgesdk.Session(model, opts)
        out["create_s"] = time.perf_counter() - t0
        out["cache_hit"] = getattr(s.runner, "cache_hit", None)
        if device_id.startswith("qnn:"):
            s.close()  # second creation: the compiled context binary is now cached
            t0 = time.perf_counter()
            s = edgesdk.Session(model, opts)
            out["create_cached_s"] = time.perf_counter() - t0
            out["cache_hit_second"] = s.runner.cache_hit
            # The first creation also loaded the HTP library; compile once more, uncached, in this
            # warm process so the speed-up compares compilation with loading, nothing else.
            nocache = edgesdk.SessionOptions(require=device_id, threads=threads, backend_options={"qnn": {**bo["qnn"], "context_cache": False}})
            t0 = time.perf_counter()
            edgesdk.Session(model, nocache).close()
            out["compile_warm_s"] = time.perf_counter() - t0
        dev = s.device
        out.update(kind=dev.kind, name=dev.name, simulated=dev.simulated, fallback_nodes=len(s.placement.fallback_nodes), nodes=len(s.placement.nodes))
        for _ in range(warmup):
            s.run(feeds)
        lat = []
        t_all = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(feeds)
            lat.append(time.perf_counter() - t0)
        wall = time.perf_counter() - t_all
        lat_ms = np.array(lat) * 1e3
        out.update(
            p50_ms=float(np.percentile(lat_ms, 50)),
            p90_ms=float(np.percentile(lat_ms, 90)),
            p99_ms=float(np.percentile(lat_ms, 99)),
            throughput=runs / wall,
            runs=runs,
        )
        s.close()
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception as exc:  # one backend failing must not hide the others
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    queue.put(out)


def _child_llm(model, device_id, n_tokens, threads, cache_dir, queue):
    """A GGUF model on one device, in this (fresh) process: prompt and decode tok/s; OpenCL: program build
    time with an empty program cache (cold) and again from the cache it filled (cached)."""
    import resource

    import edgesdk

    out = {"device": device_id}
    try:
        bo = {"opencl": {"cache_dir": cache_dir}} if device_id.startswith("opencl:") else {}
        t0 = time.perf_counter()
        s = edgesdk.Session(model, edgesdk.SessionOptions(require=device_id, threads=threads, backend_options=bo))
        out["create_s"] = time.perf_counter() - t0
        build = getattr(s.runner, "build", None)
        if build is not None:
            from edgesdk_backends.opencl._progcache import ProgramCache
            from edgesdk_backends.opencl._runtime import ClRuntime

            out.update(build_how=build.how, build_s=build.seconds)
            again = ClRuntime(s.runner.llm.model.rt.device, ProgramCache(cache_dir)).build_info
            out.update(build_cached_how=again.how, build_cached_s=again.seconds)
        dev = s.device
        out.update(kind=dev.kind, name=dev.name, simulated=dev.simulated)
        prompt = list(range(1000, 1000 + 64))
        s.generate(prompt, max_tokens=4, ignore_eos=True)  # warm-up: first launches JIT-compile kernels on PoCL
        best = None
        for _ in range(2):
            s.runner.reset()
            s.generate(prompt, max_tokens=n_tokens, ignore_eos=True)
            st = s.runner.last_stats
            if best is None or st.decode_s < best.decode_s:
                best = st
        out.update(
            prompt_tps=best.prefilled_tokens / best.prefill_s, decode_tps=(best.generated_tokens - 1) / best.decode_s, ttft_ms=best.ttft_s * 1e3, runs=n_tokens
        )
        s.close()
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception as exc:  # one backend failing must not hide the others
        # A refused device: its own refusal says why (e.g. the driver cannot compile for this CPU).
        why = next((r.reason for r in getattr(exc, "refusals", ()) if r.device == device_id), str(exc))
        out["error"] = f"{type(exc).__name__}: {' '.join(why.split())[:200]}"
    queue.put(out)


def llm_table(rows, title):
    head = (
        f"{'device':<13} {'kind':<4} {'label':<9} {'create ms':>10} {'build cold ms':>13} {'build cached ms':>15} "
        f"{'prompt tok/s':>12} {'decode tok/s':>12} {'TTFT ms':>8} {'peak RSS':>9}"
    )

    def body(r):
        cold = f"{r['build_s'] * 1e3:13.0f}" if "build_s" in r else f"{'-':>13}"
        cached = f"{r['build_cached_s'] * 1e3:15.0f}" if "build_cached_s" in r else f"{'-':>15}"
        return (
            f"{r['create_s'] * 1e3:10.0f} {cold} {cached} {r['prompt_tps']:12.1f} {r['decode_tps']:12.1f} "
            f"{r['ttft_ms']:8.0f} {r['peak_rss_mib']:7.0f} MiB   {r['name']}"
        )

    return _table(rows, title, head, 13, body)


def measure(model, device_id, feeds, args, cache_dir):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    if feeds is None:  # a GGUF language model
        p = ctx.Process(target=_child_llm, args=(model, device_id, args.tokens, args.threads, cache_dir, q))
    else:
        p = ctx.Process(target=_child, args=(model, device_id, feeds, args.runs, args.warmup, args.threads, cache_dir, q))
    p.start()
    try:
        res = q.get(timeout=args.timeout)
    except Exception:
        res = {"device": device_id, "error": f"no result within {args.timeout} s"}
    p.join(5)
    if p.is_alive():
        p.kill()
    return res


def devices_for(model):
    import edgesdk
    from edgesdk._modelfile import open_model

    reg = edgesdk.get_registry()
    fmt = open_model(model, reg).format
    return [d for d in reg.devices() if fmt in reg.backend(d.backend).formats]


def qdq_model(model, shape, d):
    sys.path.insert(0, str(HERE.parent / "tests"))
    from edgesdk_backends.qnn import quantize_for_npu

    try:
        from qnn_helpers import text_crops  # rendered text: realistic calibration for PP-OCR cls

        cal = [c for c in text_crops(8)] if shape == (1, 3, 48, 192) else None
    except Exception:
        cal = None
    if cal is None:
        rng = np.random.default_rng(0)
        cal = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
    out = str(Path(d) / "model.qdq.onnx")
    report = quantize_for_npu(model, out, cal)
    return out, report


def _table(rows, title, head, width, body):
    """Title, header, rule, then a line per row: device, kind, hardware/SIMULATED and ``body(row)``, or its error."""
    lines = [title, head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['device']:<{width}} error: {r['error']}")
        else:
            label = "SIMULATED" if r.get("simulated") else "hardware"
            lines.append(f"{r['device']:<{width}} {r['kind']:<4} {label:<9} {body(r)}")
    return "\n".join(lines)


def table(rows, title):
    head = f"{'device':<18} {'kind':<4} {'label':<9} {'create ms':>10} {'compile ms':>10} {'cached ms':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'runs/s':>8} {'peak RSS':>9}"

    def body(r):
        cached = f"{r['create_cached_s'] * 1e3:10.1f}" if "create_cached_s" in r else f"{'-':>10}"
        warm = f"{r['compile_warm_s'] * 1e3:10.1f}" if "compile_warm_s" in r else f"{'-':>10}"
        fb = f"  ({r['fallback_nodes']} of {r['nodes']} nodes fell back)" if r.get("fallback_nodes") else ""
        return (
            f"{r['create_s'] * 1e3:10.1f} {warm} {cached} {r['p50_ms']:9.2f} "
            f"{r['p90_ms']:9.2f} {r['p99_ms']:9.2f} {r['throughput']:8.1f} {r['peak_rss_mib']:7.0f} MiB{fb}"
        )

    return _table(rows, title, head, 18, body)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="hub:ppocr-cls")
    ap.add_argument("--shape", default="1,3,48,192", help="shape for the (first) dynamic input, comma-separated")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--qdq", action="store_true", help="also benchmark a QDQ-quantized copy (what an NPU should run)")
    ap.add_argument("--only", action="append", metavar="DEVICE", help="benchmark only these device ids")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--tokens", type=int, default=64, help="GGUF models: new tokens per decode measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgesdk import hub

    model = str(hub.resolve(args.model)) if args.model.startswith("hub:") else args.model
    from edgesdk._modelfile import open_model

    if open_model(model).format == "gguf":
        return main_llm(model, args)
    shape = tuple(int(x) for x in args.shape.split(","))
    from edgesdk._modelfile import open_model
    from edgesdk._onnxgraph import dynamic_inputs

    dyn = dynamic_inputs(open_model(model).info.get("inputs") or ())
    feeds = _feeds(model, {dyn[0].name: shape} if dyn else {})
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as d:
        cache_dir = str(Path(d) / "qnn-cache")  # empty: the first creation is truly cold
        models = [("float", model)]
        if args.qdq:
            qpath, report = qdq_model(model, shape, d)
            models.append(("qdq", qpath))
            results["qdq_report"] = report.summary()
        for label, path in models:
            rows = []
            for dev in devices_for(path):
                if args.only and dev.id not in args.only:
                    continue
                rows.append(measure(path, dev.id, feeds, args, cache_dir))
            results[label] = rows
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        import onnxruntime
        import onnxruntime_qnn
        from onnxruntime_qnn import build_and_package_info as qinfo

        env.update(onnxruntime=onnxruntime.__version__, onnxruntime_qnn=onnxruntime_qnn.__version__, qnn_sdk=qinfo.qnn_version)
    except ImportError:
        pass
    if args.json:
        print(json.dumps({"model": model, "feeds": {k: list(v.shape) for k, v in feeds.items()}, "env": env, **results}, indent=2))
        return 0
    print(f"model {model}  inputs {', '.join(f'{k}{list(v.shape)}' for k, v in feeds.items())}  runs={args.runs}  {env}")
    for label in ("float", "qdq"):
        if label in results:
            print()
            print(table(results[label], f"[{label} model]"))
    if "qdq_report" in results:
        print()
        print(results["qdq_report"])
    print(
        "\ncreate = first Session in a fresh process (QNN: library load + compile + cache write); compile = an uncached"
        "\nSession once the library is loaded; cached = a Session loading the cached context binary (manifest verified)."
    )
    return 0


def main_llm(model, args):
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as d:
        rows = [measure(model, dev.id, None, args, str(Path(d) / "opencl-cache")) for dev in devices_for(model) if not args.only or dev.id in args.only]
    if args.json:
        print(json.dumps({"model": model, "tokens": args.tokens, "rows": rows}, indent=2))
        return 0
    print(f"model {model}  64-token prompt, {args.tokens} new tokens (greedy, EOS ignored), best of 2  cpus={os.cpu_count()}")
    print(llm_table(rows, "[GGUF language model]"))
    print(
        "\ncreate = first Session in a fresh process; build cold = OpenCL program compiled with an empty program cache"
        "\n(PoCL keeps its own kernel cache too); build cached = the same program loaded from the cache it filled."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
