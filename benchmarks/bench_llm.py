"""LLM decode benchmark: edgesdk's cpu backend against llama.cpp (llama-cpp-python) on the same GGUFs.

Runs SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M (the hub's two language models) by default, or the
``--model`` files given.

Reports, per engine and thread count: prompt processing tok/s (a 128-token prompt), decode tok/s
(128 new tokens, end-of-sequence ignored), time to first token, peak RSS (each engine and thread
count runs in its own process, so RSS is not shared). Decode is also shown as effective weight
bandwidth (weight bytes read per token x tok/s), the number to compare with DRAM bandwidth.
Then: perplexity of both engines on the same tokens (llama.cpp's chunked method), and the speed-up
of prompt-lookup speculation on an input-grounded rewrite task (with a check that greedy output is
unchanged).

    python benchmarks/bench_llm.py                      # both models, everything, 1 and 2 threads
    python benchmarks/bench_llm.py --threads 2 --no-llama --skip-ppl --model x.gguf

The last table holds each model's ratios against the targets (decode vs llama.cpp, prompt vs
llama.cpp, peak RSS vs llama.cpp) and the decode's effective weight bandwidth as a share of the DRAM
read bandwidth measured in the same run (the physical limit of token generation).

llama.cpp is optional (``pip install llama-cpp-python``, the ``bench`` extra). Its extra (repacked
weight) buffer types crash decode on CPUs with AMX (tests/llama_ref.py says more), so they are off:
the peer runs llama.cpp's regular CPU kernels, which is what it runs on every CPU without AMX.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PPL_TEXT = [ROOT.parent / "shared" / "data" / "tinyshakespeare-20k.txt", ROOT / "tests" / "data" / "tinyshakespeare-4k.txt"]

REWRITE_PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after decades of salt and wind. "
    "Every evening the keeper climbed the narrow stairs, lit the lamp, and watched the beam sweep across the dark "
    "water. Ships passing in the night trusted that light to guide them safely past the rocks below. When the "
    "keeper finally retired, the town decided to keep the lamp burning, and volunteers took turns climbing the "
    "stairs each night."
)
REWRITE_TASK = (
    "Rewrite the following paragraph exactly, but replace the word 'keeper' with 'guardian'. Output only the rewritten paragraph.\n\n" + REWRITE_PARAGRAPH
)


# Decode and prompt speed-ups over llama.cpp each model is meant to reach (issue targets).
TARGETS = {"SmolLM2-135M-Instruct.Q4_1.gguf": (2.0, 3.0), "gemma-3-270m-q4_k_m.gguf": (1.5, 3.0)}


def default_models() -> list[str]:
    from edgesdk import hub

    found = []
    for name in ("smollm2-135m", "gemma3-270m"):
        try:
            found.append(str(hub.path(name)))
        except hub.HubError as exc:
            print(f"# skipping {name}: {exc}", file=sys.stderr)
    if not found:
        sys.exit("neither hub model is installed (see README: scripts/setup.sh), or pass --model")
    return found


def dram_bandwidth(threads: int) -> float:
    """GB/s of streaming reads over 1 GiB (edgesdk.kernels.memory_read_gbs, as bench_int4_matmul.py and edgesdk bench)."""
    from edgesdk import kernels

    return kernels.memory_read_gbs(threads)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


_IDS_ENV = "BENCH_LLM_PROMPT_IDS"


def prompt_ids(n: int) -> list[int]:
    """``n`` tokens of English prose, from our tokenizer (both engines get the same ids). A worker reads
    them from the file the parent wrote: a tokenizer built in the worker (Gemma's 262k-token vocabulary
    is ~60 MB) would count in the peak RSS of whichever engine it measures."""
    if os.environ.get(_IDS_ENV):
        return json.loads(Path(os.environ[_IDS_ENV]).read_text())[:n]
    from edgesdk.llm import GGUFFile, Tokenizer

    text = next(p for p in PPL_TEXT if p.exists()).read_text(encoding="utf-8")
    return Tokenizer(GGUFFile(ARGS.model)).encode(text)[:n]


def _share_prompt_ids(folder: Path) -> None:
    """Tokenize once here, for every worker of this model (see prompt_ids)."""
    path = folder / (Path(ARGS.model).name + ".ids.json")
    path.write_text(json.dumps(prompt_ids(max(ARGS.prompt_tokens, 1024))))
    os.environ[_IDS_ENV] = str(path)


# --- workers (one process each) ----------------------------------------------------------------


def worker_edgesdk(threads: int, n_prompt: int, n_gen: int, repeat: int) -> dict:
    os.environ["EDGESDK_THREADS"] = str(threads)
    import edgesdk
    from edgesdk import kernels

    ids = prompt_ids(n_prompt)
    t0 = time.perf_counter()
    s = edgesdk.Session(ARGS.model, threads=threads, backend_options={"cpu": {"n_ctx": 1024}})
    load_s = time.perf_counter() - t0
    r = s.runner
    kernels.set_threads(threads)
    pp, tg, ttft = [], [], []
    for i in range(repeat + 1):  # the first round warms caches and the thread pool
        r.reset()
        s.generate(ids, max_tokens=n_gen, ignore_eos=True)
        st = r.last_stats
        if i:
            pp.append(st.prompt_tok_s)
            tg.append(st.decode_tok_s)
            ttft.append(st.ttft_s)
    weight_bytes = sum(lin.packed_bytes for L in r.llm.model.layers for lin in (L.wqkv, L.wo, L.w_gate_up, L.w_down)) + r.llm.model.lm_head.packed_bytes
    return dict(
        engine="edgesdk",
        threads=threads,
        load_s=load_s,
        pp_tok_s=max(pp),
        tg_tok_s=max(tg),
        ttft_ms=1e3 * min(ttft),
        peak_rss_mb=peak_rss_mb(),
        weight_mb=weight_bytes / 1e6,
        impl=r.llm.impl,
        kernels=str(kernels.info().simd),
    )


def _llama(n_ctx: int, threads: int, logits_all: bool = False):
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from llama_ref import llama  # the tests' reference constructor: extra (repacked) buffer types off

    kw = dict(model_path=ARGS.model, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads, logits_all=logits_all, verbose=False)
    return llama(**kw), "use_extra_bufts=False"


def worker_llama(threads: int, n_prompt: int, n_gen: int, repeat: int) -> dict:
    import llama_cpp

    ids = prompt_ids(n_prompt)
    t0 = time.perf_counter()
    llm, bufts = _llama(1024, threads)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def next_token() -> int:
        # Llama.scores is only filled with logits_all=True; read the last row from the context instead.
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))))

    pp, tg, ttft = [], [], []
    for i in range(repeat + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        tok = next_token()
        t1 = time.perf_counter()
        for _ in range(n_gen - 1):
            llm.eval([tok])
            tok = next_token()
        t2 = time.perf_counter()
        if i:
            pp.append(len(ids) / (t1 - t0))
            tg.append((n_gen - 1) / (t2 - t1))
            ttft.append(t1 - t0)
    return dict(
        engine="llama.cpp",
        threads=threads,
        load_s=load_s,
        pp_tok_s=max(pp),
        tg_tok_s=max(tg),
        ttft_ms=1e3 * min(ttft),
        peak_rss_mb=peak_rss_mb(),
        version=llama_cpp.__version__,
        buffers=bufts,
    )


def worker_ppl(engine: str, threads: int, n_ctx: int) -> dict:
    os.environ["EDGESDK_THREADS"] = str(threads)
    from edgesdk.llm import LLM
    from edgesdk.llm._perplexity import perplexity_from_logits

    path = next(p for p in PPL_TEXT if p.exists())
    text = path.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    if engine == "edgesdk":
        llm = LLM(ARGS.model, n_ctx=n_ctx, threads=threads)
        res = llm.perplexity(text, n_ctx=n_ctx)
        extra = dict(impl=llm.impl)
    else:
        ref = LLM(ARGS.model, n_ctx=16, impl="numpy")  # only its tokenizer: both engines score the same ids
        tokens = ref.tokenizer.encode(text, add_bos=False)
        llm, bufts = _llama(n_ctx, threads, logits_all=True)
        same_tok = llm.tokenize(text.encode(), add_bos=False, special=False) == tokens

        def score(chunk, first):
            llm.reset()
            llm.eval(chunk)
            return np.array(llm.scores[first : len(chunk)], np.float32)

        # llama.cpp's method, as LLM.perplexity applies it: BOS first in each chunk when the model wants one
        res = perplexity_from_logits(tokens, n_ctx, score, bos_id=ref.tokenizer.bos_id if ref.tokenizer.add_bos else None)
        extra = dict(buffers=bufts, same_tokenization=bool(same_tok))
    return dict(
        engine=engine,
        ppl=res.ppl,
        stderr=res.stderr,
        chunks=res.chunks,
        scored=res.scored_tokens,
        n_ctx=n_ctx,
        text=path.name,
        seconds=time.perf_counter() - t0,
        **extra,
    )


def worker_parity(n_prompt: int, n_gen: int) -> dict:
    """The pure-numpy reference (fp32) against the kernels with exact fp32 and with int8 activations."""
    from edgesdk.llm import LLM

    ids = prompt_ids(n_prompt)
    ref = LLM(ARGS.model, n_ctx=256, impl="numpy")
    a = ref.logits(ids)
    ga = ref.generate(ids, max_tokens=n_gen, ignore_eos=True)
    out = dict(positions=len(ids), greedy_tokens=n_gen, logit_range=float(np.abs(a).max()))
    for act in ("f32", "int8"):
        fast = LLM(ARGS.model, n_ctx=256, activations=act)
        b = fast.logits(ids)
        out[act] = dict(
            impl=fast.impl,
            fused=fast.model.fused is not None,
            max_abs_logit_diff=float(np.abs(a - b).max()),
            argmax_agreement=float((a.argmax(-1) == b.argmax(-1)).mean()),
            greedy_identical=ga == fast.generate(ids, max_tokens=n_gen, ignore_eos=True),
        )
    return out


def worker_spec(threads: int, n_gen: int) -> dict:
    os.environ["EDGESDK_THREADS"] = str(threads)
    import edgesdk

    s = edgesdk.Session(ARGS.model, threads=threads, backend_options={"cpu": {"n_ctx": 2048}})
    msgs = [{"role": "user", "content": REWRITE_TASK}]
    out = {}
    for mode in (None, "prompt_lookup", None, "prompt_lookup"):  # second round is the measured one
        s.runner.reset()
        t0 = time.perf_counter()
        text = s.generate(msgs, max_tokens=n_gen, speculative=mode)
        wall = time.perf_counter() - t0
        st = s.runner.last_stats
        out[mode or "plain"] = dict(
            text=text, wall_s=wall, decode_tok_s=st.decode_tok_s, tokens=st.generated_tokens, acceptance=st.acceptance_rate, passes=st.forward_passes
        )
    p, q = out["plain"], out["prompt_lookup"]
    return dict(
        threads=threads,
        identical=p["text"] == q["text"],
        speedup_decode=q["decode_tok_s"] / p["decode_tok_s"],
        speedup_wall=p["wall_s"] / q["wall_s"],
        acceptance=q["acceptance"],
        tokens=p["tokens"],
        plain_tok_s=p["decode_tok_s"],
        spec_tok_s=q["decode_tok_s"],
        forward_passes=q["passes"],
    )


# --- driver -----------------------------------------------------------------------------------


def run_worker(*argv) -> dict | None:
    cmd = [sys.executable, __file__, "--model", ARGS.model, "--worker", *map(str, argv)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"  worker {argv} failed (exit {p.returncode}): {p.stderr.strip()[-800:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def have_llama() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def main() -> None:
    import platform

    machine = platform.processor() or platform.machine()
    try:
        from edgesdk._sysinfo import cpu_name

        machine = cpu_name()
    except Exception:
        pass
    # In a worker: the probe's 1 GiB buffer would otherwise be every later worker's peak RSS (Linux
    # carries ru_maxrss across fork and exec).
    bw = {t: run_worker("bandwidth", t)["gb_s"] for t in ARGS.threads}
    print(f"# {machine} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("# DRAM read bandwidth: " + ", ".join(f"{t} thread(s) {v:.1f} GB/s" for t, v in bw.items()))
    reports = []
    for model in ARGS.models:
        ARGS.model = model
        reports.append(run_model(machine))
    print(f"\n{'model':<34} {'thr':>3} {'decode x':>8} {'target':>6} {'prompt x':>8} {'target':>6} {'RSS x':>6} {'decode GB/s':>11} {'% of DRAM':>9}")
    for rep in reports:
        want_tg, want_pp = TARGETS.get(rep["model"], (None, None))
        for th in ARGS.threads:
            e = next((r for r in rep["speed"] if r["engine"] == "edgesdk" and r["threads"] == th), None)
            l = next((r for r in rep["speed"] if r["engine"] == "llama.cpp" and r["threads"] == th), None)
            if not e:
                continue
            gbs = e["tg_tok_s"] * e["weight_mb"] / 1e3
            ratio = lambda k, e=e, l=l: f"{e[k] / l[k]:.2f}" if l else "-"  # noqa: E731
            print(
                f"{rep['model']:<34} {th:>3} {ratio('tg_tok_s'):>8} {want_tg or '-':>6} {ratio('pp_tok_s'):>8} {want_pp or '-':>6} "
                f"{ratio('peak_rss_mb'):>6} {gbs:>11.1f} {100 * gbs / bw[th]:>8.0f}%"
            )
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps({"bandwidth_gb_s": bw, "models": reports}, indent=2))


def run_model(machine: str) -> dict:
    rows, report = [], {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine, "cpus": os.cpu_count(), "model": Path(ARGS.model).name}
    engines = ["edgesdk"] + (["llama"] if have_llama() and not ARGS.no_llama else [])
    os.environ.pop(_IDS_ENV, None)
    _share_prompt_ids(Path(tempfile.mkdtemp(prefix="bench-llm-")))
    print(f"\n## {report['model']}")
    for th in ARGS.threads:
        for eng in engines:
            r = run_worker(eng, th, ARGS.prompt_tokens, ARGS.gen_tokens, ARGS.repeat)
            if r:
                rows.append(r)
    report["speed"] = rows
    print(f"\n{'engine':<10} {'thr':>3} {'pp tok/s':>9} {'tg tok/s':>9} {'ttft ms':>8} {'peak RSS MB':>11} {'weight GB/s':>11}")
    wmb = next((r["weight_mb"] for r in rows if "weight_mb" in r), None)
    for r in rows:
        bw = f"{r['tg_tok_s'] * wmb / 1e3:.1f}" if wmb else "?"
        print(f"{r['engine']:<10} {r['threads']:>3} {r['pp_tok_s']:>9.1f} {r['tg_tok_s']:>9.1f} {r['ttft_ms']:>8.1f} {r['peak_rss_mb']:>11.0f} {bw:>11}")
    for th in ARGS.threads:
        e = next((r for r in rows if r["engine"] == "edgesdk" and r["threads"] == th), None)
        l = next((r for r in rows if r["engine"] == "llama.cpp" and r["threads"] == th), None)
        if e and l:
            print(
                f"ratio edgesdk/llama.cpp at {th} thread(s): decode {e['tg_tok_s'] / l['tg_tok_s']:.2f}x, "
                f"prompt {e['pp_tok_s'] / l['pp_tok_s']:.2f}x, peak RSS {e['peak_rss_mb'] / l['peak_rss_mb']:.2f}x"
            )
    if not ARGS.skip_ppl:
        th = max(ARGS.threads)
        report["perplexity"] = [r for r in (run_worker("ppl", e, th, ARGS.ppl_ctx) for e in ["edgesdk"] + (["llama"] if "llama" in engines else [])) if r]
        for r in report["perplexity"]:
            print(
                f"perplexity {r['engine']:<10} {r['ppl']:.4f} +/- {r['stderr']:.4f} ({r['chunks']} x {r['n_ctx']} tokens of {r['text']}, {r['seconds']:.1f} s)"
            )
        if len(report["perplexity"]) == 2:
            a, b = (r["ppl"] for r in report["perplexity"])
            print(f"perplexity difference: {100 * (a - b) / b:+.2f}% (same tokens: {report['perplexity'][1].get('same_tokenization')})")
    if not ARGS.skip_parity:
        r = run_worker("parity", 32, 16)
        if r:
            report["parity"] = r
            for act in ("f32", "int8"):
                q = r[act]
                print(
                    f"numpy reference vs {q['impl']} ({act} activations, fused C: {q['fused']}) over {r['positions']} positions: "
                    f"max |logit diff| {q['max_abs_logit_diff']:.2g} (logits up to {r['logit_range']:.1f}), argmax agreement "
                    f"{q['argmax_agreement']:.0%}, {r['greedy_tokens']} greedy tokens identical: {q['greedy_identical']}"
                )
    if not ARGS.skip_spec:
        r = run_worker("spec", max(ARGS.threads), ARGS.gen_tokens)
        if r:
            report["speculative"] = r
            print(
                f"prompt-lookup speculation ({r['threads']} threads, rewrite task, {r['tokens']} tokens): decode {r['plain_tok_s']:.1f} -> "
                f"{r['spec_tok_s']:.1f} tok/s ({r['speedup_decode']:.2f}x, wall {r['speedup_wall']:.2f}x), acceptance {r['acceptance']:.0%}, "
                f"identical greedy output: {r['identical']}"
            )
    return report


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", dest="models", default=None, help="GGUF file(s) (default: the hub's smollm2-135m and gemma3-270m)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="measured rounds after one warm-up (best is reported)")
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--skip-ppl", action="store_true")
    ap.add_argument("--skip-spec", action="store_true")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = args.models or default_models()
    args.model = args.models[0]
    return args


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        kind, *rest = ARGS.worker
        if kind == "edgesdk":
            res = worker_edgesdk(*map(int, rest))
        elif kind == "llama":
            res = worker_llama(*map(int, rest))
        elif kind == "parity":
            res = worker_parity(int(rest[0]), int(rest[1]))
        elif kind == "bandwidth":
            res = {"gb_s": dram_bandwidth(int(rest[0]))}
        elif kind == "ppl":
            res = worker_ppl(rest[0], int(rest[1]), int(rest[2]))
        else:
            res = worker_spec(int(rest[0]), int(rest[1]))
        print(json.dumps(res))
    else:
        main()
