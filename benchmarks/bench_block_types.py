#!/usr/bin/env python
"""Every block type of the quant-type table vs the memory-bandwidth floor, in one run.

For each type and shape (K x N, default 4096 x 4096; --shapes 4096x4096,4096x11008,11008x4096 adds
the FFN's): weights of random valid blocks, cycling through distinct matrices totalling --set-gib so
every read comes from DRAM; M = 1 at 1 and 2 threads as % of bandwidth: each call is followed by a
read of another matrix of the set (as cold, as many bytes) with the fastest read loop of the
bandwidth probe (kernels.fastest_read), and the share is the median of read time / call time, so the
drift of a shared VM's DRAM bandwidth between probe and call drops out; prompt-sized M = 128 and 512
GFLOP/s at 1 and 2 threads. Q4_0 and Q8_0 appear twice: through the i16x32 repack (the tuned tiles)
and as GGUF blocks (the generic block kernel), which is the in-run reference of the K-quant kernels.
The peer: llama.cpp (llama-cpp-python) decoding the real Gemma 3 270M Q4_K_M file (Q4_K, Q6_K, Q5_0,
Q8_0 tensors) at 1 and 2 threads, as effective weight bandwidth (all tensor bytes read per token x
tokens/s) against the bandwidth the probe measured at the start.

    python benchmarks/bench_block_types.py              # ~0.5 GiB per type, a few minutes
    python benchmarks/bench_block_types.py --set-gib 1  # the target's cold-weight size
    python benchmarks/bench_block_types.py --set-gib 1 --shapes 4096x4096,4096x11008 --types Q4_K,Q5_0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from bench_int4_matmul import GiB, cpu_name, read_weights, time_cycle, time_paired  # noqa: E402
from gguf_blocks import finite_blocks  # noqa: E402
from llama_ref import llama  # noqa: E402

from edgesdk import kernels  # noqa: E402
from edgesdk.quant import TYPES, QuantizedTensor, from_gguf_bytes  # noqa: E402

BLOCK_TYPES = ["Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q5_0", "Q5_1", "IQ4_NL", "Q8_0", "Q4_0"]
REPACKED = ["Q4_0", "Q8_0"]  # also through the i16x32 tiles
LAYOUTS = {"i16x32": "repacked i16x32", "rows8": "GGUF blocks, 8 rows interleaved", "gguf": "GGUF blocks, row by row"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set-gib", type=float, default=0.5)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--types", default=",".join(BLOCK_TYPES))
    ap.add_argument("--shapes", default="4096x4096", help="comma-separated K x N weight shapes, e.g. 4096x11008")
    ap.add_argument("--no-peer", action="store_true", help="skip llama.cpp on Gemma 3 270M")
    a = ap.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in a.shapes.split(",")]
        if any(len(s) != 2 or min(s) < 1 for s in shapes):
            raise ValueError
    except ValueError:
        ap.error(f"--shapes takes K x N pairs such as 4096x11008, got {a.shapes!r}")
    for name in a.types.split(","):
        if name not in TYPES or not TYPES[name].quantized:
            ap.error(f"--types: {name!r} is not a block type of the table ({', '.join(BLOCK_TYPES)})")
        bad = [f"{k}x{n}" for k, n in shapes if k % TYPES[name].block]
        if bad:
            ap.error(f"--shapes: K of {', '.join(bad)} is not a multiple of {name}'s {TYPES[name].block}-element blocks")
    if not kernels.available():
        print("C kernels not available:", kernels.info().reason)
        return 1
    info = kernels.info()
    set_bytes = int(a.set_gib * GiB)
    fastest = {t: kernels.fastest_read(t, set_bytes=set_bytes) for t in (1, 2)}
    bw = {t: r.gbs for t, r in fastest.items()}
    print(f"# {cpu_name()}  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  kernels={info.impl}/{info.simd}  decode reads {info.decode_read}")
    print(f"# DRAM read bandwidth: {bw[1]:.1f} GB/s (1 thread), {bw[2]:.1f} GB/s (2 threads); {a.set_gib:g} GiB distinct weights per type and shape")
    print(
        "# M=1 % bw: median over calls of (time to read the bytes of a matrix as cold as the call's, right after it, with the fastest read loop) / (call time)"
    )
    print("| type | K x N | path | bits/w | M=1 1t ms | % bw | M=1 2t ms | % bw | M=128 1t GFLOP/s | M=128 2t | M=512 1t | M=512 2t |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (k, n) in ((name, shape) for name in a.types.split(",") for shape in shapes):
        t = TYPES[name]
        one = finite_blocks(name, rng, n * k // t.block).reshape(n, -1)
        count = max(2, set_bytes // one.nbytes)
        # distinct content per matrix (identical copies can share cache lines or pre-packing)
        blocks = [one] + [np.roll(one, i * 977, axis=0) for i in range(1, count)]  # whole rows: valid blocks
        for layout in ["i16x32", "gguf"] if name in REPACKED else ["rows8", "gguf"] if t.rows8 else ["gguf"]:
            qts = [
                from_gguf_bytes(b, name, (n, k)) if layout == "i16x32" else QuantizedTensor.from_blocks(b, name, (n, k), interleave=layout == "rows8")
                for b in blocks
            ]
            wbytes = qts[0].nbytes
            # One untimed pass: the copies that made the weights leave dirty lines in the cache, and
            # evicting them writes to DRAM during the first reads; a loaded model's weights are clean.
            x1, out1 = rng.standard_normal((1, k)).astype(np.float32), np.empty((1, n), np.float32)
            for q in qts:
                kernels.matmul(x1, q, out=out1)
            row = [name, f"{k}x{n}", LAYOUTS[layout], f"{8 * wbytes / (n * k):.2f}"]
            for m, th in ((1, 1), (1, 2)):
                x = rng.standard_normal((m, k)).astype(np.float32)
                out = np.empty((m, n), np.float32)
                sec, share = time_paired(
                    lambda i, x=x, out=out, th=th, qts=qts, count=count: kernels.matmul(x, qts[i % count], out=out, threads=th),
                    count,
                    lambda i, th=th, qts=qts, count=count: read_weights(fastest[th], qts[(i + count // 2) % count], th),
                    count,
                    a.budget,
                )
                row += [f"{sec * 1e3:.3f}", f"{100 * share:.0f}%"]
            for m, th in ((128, 1), (128, 2), (512, 1), (512, 2)):
                x = rng.standard_normal((m, k)).astype(np.float32)
                out = np.empty((m, n), np.float32)
                sec = time_cycle(
                    lambda i, x=x, out=out, th=th, qts=qts, count=count: kernels.matmul(x, qts[i % count], out=out, threads=th), count, 2, a.budget
                )
                row.append(f"{2 * m * n * k / sec / 1e9:.1f}")
            print("| " + " | ".join(row) + " |", flush=True)
            del qts
        del blocks
    if not a.no_peer:
        peer(bw)
    return 0


def peer(bw: dict) -> None:
    """llama.cpp decoding Gemma 3 270M Q4_K_M: tokens/s and effective weight bandwidth per thread count."""
    try:
        import llama_cpp

        from edgesdk import hub

        path = hub.path("gemma3-270m")
    except Exception as exc:  # noqa: BLE001 - the peer is optional: say why it is missing
        print(f"# peer skipped: {type(exc).__name__}: {exc}")
        return
    from edgesdk.llm import GGUFFile

    g = GGUFFile(str(path))
    wbytes = sum(t.n_bytes for t in g.tensors.values())
    g.close()
    print(f"\n# peer: llama.cpp {llama_cpp.__version__} decoding {path.name} ({wbytes / 1e6:.0f} MB of tensors read per token)")
    print("| threads | tok/s | effective GB/s | % bw |")
    print("|---|---|---|---|")
    for th in (1, 2):
        llm = llama(model_path=str(path), n_ctx=256, n_threads=th, n_threads_batch=th, verbose=False)  # extra buffer types off
        ids = llm.tokenize(b"The capital of France is")
        llm.eval(ids)
        n_vocab = llm.n_vocab()
        tok = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))))
        ts = []
        for _ in range(48):
            t = time.perf_counter()
            llm.eval([tok])
            ts.append(time.perf_counter() - t)
            tok = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))))
        sec = float(np.median(ts[8:]))
        print(f"| {th} | {1 / sec:.1f} | {wbytes / sec / 1e9:.1f} | {100 * wbytes / sec / 1e9 / bw[th]:.0f}% |")
        llm.close()


if __name__ == "__main__":
    raise SystemExit(main())
