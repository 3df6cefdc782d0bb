"""KV-cache storage types (``kv_dtype`` f32 / f16 / q8_0): what they cost in perplexity, save in memory, do to decode speed.

For SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M (the hub's language models) with the cpu
backend's defaults (kernels, int8 activations, fused C loop), per kv_dtype:

- KV bytes: the cache of an ``n_ctx`` 2048 context (Gemma 3's sliding-window layers hold rings of
  window + 512 positions, so its cache is far smaller than its layer count suggests);
- perplexity of ``tinyshakespeare-20k.txt`` (``LLM.perplexity``, n_ctx 512: llama.cpp's method,
  second half of each chunk scored) and its change against the f32 cache on the same tokens;
- decode tok/s of 64 greedy tokens after a ~1900-token prompt in the 2048-token cache, where each
  token's attention reads ~2k keys per layer (best of ``--rounds``; the prompt is cached after the
  first round, so later rounds time decode only).

    python benchmarks/bench_kv_dtype.py
    python benchmarks/bench_kv_dtype.py --skip-decode --max-chunks 4 --model x.gguf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PPL_TEXT = [ROOT.parent / "shared" / "data" / "tinyshakespeare-20k.txt", ROOT / "tests" / "data" / "tinyshakespeare-4k.txt"]
DECODE_CTX, DECODE_PROMPT, DECODE_TOKENS = 2048, 1900, 64


def default_models() -> list[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_llm import default_models as hub_models  # one list of the hub's language models

    return hub_models()


def measure(path: str, kv_dtype: str, text: str, args) -> dict:
    from edgesdk.llm import LLM

    llm = LLM(path, n_ctx=DECODE_CTX, kv_dtype=kv_dtype, activations=args.activations)
    try:
        row = {"kv_bytes": llm.cache.nbytes}
        if not args.skip_ppl:
            r = llm.perplexity(text, n_ctx=512, max_chunks=args.max_chunks)
            row.update(ppl=r.ppl, stderr=r.stderr, chunks=r.chunks)
        if not args.skip_decode:
            ids = llm.tokenizer.encode(text, add_bos=False)[:DECODE_PROMPT]
            best = 0.0
            for _ in range(args.rounds):
                llm.generate(ids, max_tokens=DECODE_TOKENS, ignore_eos=True)
                best = max(best, llm.last_stats.decode_tok_s)
            row["decode_tok_s"] = best
        return row
    finally:
        llm.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="GGUF file (repeatable; default: the hub's SmolLM2 and Gemma 3)")
    ap.add_argument("--max-chunks", type=int, help="perplexity over the first N chunks only")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="decode rounds per dtype (best is reported)")
    ap.add_argument("--activations", default="int8", choices=["int8", "f32"])
    args = ap.parse_args()

    from edgesdk.llm._model import KV_DTYPES

    text_path = next(p for p in PPL_TEXT if p.is_file())
    text = text_path.read_text(encoding="utf-8")
    print(
        f"# {text_path.name}, activations {args.activations}, KV bytes at n_ctx {DECODE_CTX}; "
        f"decode: {DECODE_TOKENS} tokens after a {DECODE_PROMPT}-token prompt, best of {args.rounds}"
    )
    print("| model | kv_dtype | KV cache | vs f32 | perplexity | delta vs f32 | decode tok/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.model or default_models():
        base = None
        for kv in KV_DTYPES:
            row = measure(path, kv, text, args)
            base = base or row
            speed = f"{row['decode_tok_s']:.0f}" if "decode_tok_s" in row else "-"
            ppl = delta = "-"
            if "ppl" in row:
                ppl = f"{row['ppl']:.4f} +/- {row['stderr']:.3f} ({row['chunks']} chunks)"
                # Same tokens and chunks for every dtype: the paired change is far tighter than either stderr.
                delta = f"{(row['ppl'] / base['ppl'] - 1) * 100:+.3f}%"
            print(
                f"| {Path(path).name} | {kv} | {row['kv_bytes'] / 2**20:.1f} MiB | {row['kv_bytes'] / base['kv_bytes']:.3f}x | {ppl} | {delta} | {speed} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
