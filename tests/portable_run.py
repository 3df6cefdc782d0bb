"""What tests/test_portability.py runs natively and under emulated CPUs (qemu-user).

    python tests/portable_run.py OUT.npz [--model SmolLM2.gguf] [--tokens N] [--every-path]

Writes the kernel info, every runnable SIMD path's outputs on the core kernel cases, and (with
--model) the greedy continuation of a fixed prompt and its last-position logits on the path in
effect (--every-path: on each runnable path; the emulated runs are too slow for that). Not collected
by pytest (no test_ prefix): it runs as a program so the interpreter itself runs on the
emulated CPU.
"""

from __future__ import annotations

import argparse
import json

import attrs
import numpy as np

import edgesdk
from edgesdk import kernels
from edgesdk.quant import QuantizedTensor, quantize
from gguf_blocks import random_blocks

# (m, n, k, bits, scheme, block): decode and prefill rows, ragged N and K, every weight scheme; then
# (m, n, k, GGUF block type): the block kernels (hand-written AVX2 for Q4_K, Q5_K, Q6_K, Q5_0; generic Q3_K)
CASES = [
    (1, 40, 96, 4, "sym", 32),
    (3, 37, 100, 4, "asym", 32),
    (5, 70, 64, 8, "sym", 32),
    (9, 33, 200, 4, "sym", 64),
    (2, 48, 130, 8, "sym", 10**6),
    (4, 20, 257, 4, "asym", 128),
    (1, 24, 512, "Q4_K"),
    (5, 17, 256, "Q6_K"),
    (3, 9, 96, "Q5_0"),
    (2, 8, 256, "Q3_K"),
    (2, 7, 256, "Q5_K"),
]
PROMPT = "The capital of France is"


def case_inputs(i: int):
    """The inputs of case i: the same on every CPU (numpy's generator is platform-independent)."""
    rng = np.random.default_rng(1000 + i)
    if len(CASES[i]) == 4:
        m, n, k, qtype = CASES[i]
        x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
        return x, QuantizedTensor.from_blocks(random_blocks(qtype, (n, k), rng, 1.0), qtype, (n, k))
    m, n, k, bits, scheme, bs = CASES[i]
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = (rng.standard_normal((m, k)) * 3).astype(np.float32)
    return x, quantize(w, bits=bits, block_size=bs, scheme=scheme)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--every-path", action="store_true")
    a = ap.parse_args()
    info = kernels.info()
    res: dict[str, np.ndarray] = {}
    for path in info.simd_runnable:
        kernels.set_simd(path)
        for i in range(len(CASES)):
            x, qt = case_inputs(i)
            res[f"{path}/{i}/f32"] = kernels.matmul(x, qt, act="f32")
            res[f"{path}/{i}/int8"] = kernels.matmul(x, qt)
            res[f"{path}/{i}/xq"] = kernels.quantize_activations(x)[0]
    kernels.set_simd(info.simd)
    meta = {"info": attrs.asdict(info), "edgesdk_file": edgesdk.__file__, "text": {}, "llm_loop": {}}
    if a.model:
        from edgesdk.llm import LLM

        llm = LLM(a.model, n_ctx=64)
        meta["llm_impl"], meta["fused"] = llm.impl, llm.model.fused is not None
        ids = llm.tokenizer.encode(PROMPT)
        for path in info.simd_runnable if a.every_path else [info.simd]:
            kernels.set_simd(path)
            res[f"{path}/logits"] = llm.logits(ids)[-1]
            meta["text"][path] = llm.generate(ids, max_tokens=a.tokens)
            meta["llm_loop"][path] = kernels.info().llm_loop
    np.savez(a.out, meta=np.array(json.dumps(meta)), **res)


if __name__ == "__main__":
    main()
