"""edgesdk serve against the Session it serves: tok/s through HTTP + SSE vs direct calls, in one run.

    python benchmarks/bench_serve.py [--model hub:smollm2-135m] [--tokens 128] [--rounds 5] [--inproc]

The same chat prompts are generated greedily for exactly ``--tokens`` tokens (``ignore_eos``) by a
Session in this process and by ``edgesdk serve`` on loopback, streaming, round after round in
alternation so drift hits both alike. The server runs as its own process (``edgesdk serve``), as a
client on another device would see it; ``--inproc`` serves from a thread of this process instead
(client, server and engine then share one GIL). Times are taken where an app would take them: from
sending the request to the first and last text piece. Prints median decode tok/s (tokens after the
first, per second), end-to-end tok/s and time to first token, and the server/direct ratios
(target: decode within 5 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

import edgesdk

PROMPTS = [
    "Explain how a heat pump works.",
    "Write a short story about a lighthouse keeper.",
    "List the planets of the solar system and describe each one.",
]


def timed(pieces, t0: float, tokens) -> tuple[float, float, float]:
    """(decode tok/s, end-to-end tok/s, ttft s) of an iterator of text pieces started at ``t0``;
    ``tokens()`` is the generated token count, read once the pieces are exhausted."""
    t_first = t_last = None
    for _ in pieces:
        t_last = time.perf_counter()
        t_first = t_first or t_last
    n = tokens()
    return (n - 1) / (t_last - t_first), n / (t_last - t0), t_first - t0


def direct(session, prompt: str, n: int):
    t0 = time.perf_counter()
    stream = session.generate_stream([{"role": "user", "content": prompt}], max_tokens=n, ignore_eos=True, temperature=0)
    return timed(stream, t0, lambda: session.runner.last_stats.generated_tokens)


def served(http: httpx.Client, model: str, prompt: str, n: int):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": n,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage = {}

    def pieces():
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage.update(chunk.get("usage") or {})
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    yield

    t0 = time.perf_counter()
    return timed(pieces(), t0, lambda: usage["completion_tokens"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process_server(args, log):
    port = free_port()
    cmd = [sys.executable, "-m", "edgesdk.cli", "serve", args.model, "--port", str(port), "--model-name", "bench", "--n-ctx", str(args.n_ctx)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"edgesdk serve did not start; see {log.name}")


def run(args, session, opts, log) -> dict[str, list]:
    """(decode tok/s, e2e tok/s, ttft s) per request, for "direct" and "server"."""
    if args.inproc:
        from edgesdk.serve import BackgroundServer

        served_session = edgesdk.Session(args.model, **opts)  # its own KV cache, as in a server process
        server = BackgroundServer(served_session, model_id="bench")
        proc, url = None, server.url
    else:
        proc, url = start_process_server(args, log)
    results = {"direct": [], "server": []}
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            direct(session, PROMPTS[0], 8)  # warm-up: caches, kernels, the first request's setup
            served(http, "bench", PROMPTS[0], 8)
            for _ in range(args.rounds):
                for p in PROMPTS:
                    results["direct"].append(direct(session, p, args.tokens))
                    results["server"].append(served(http, "bench", p, args.tokens))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        elif server.close():
            served_session.close()
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hub:smollm2-135m", help="GGUF file or hub:<name>")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over the prompts, alternating direct and server")
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, help="engine threads (default: the backend's)")
    ap.add_argument("--inproc", action="store_true", help="serve from a thread of this process instead of a subprocess")
    args = ap.parse_args(argv)

    opts = {"backend_options": {"cpu": {"n_ctx": args.n_ctx}}, **({"threads": args.threads} if args.threads else {})}
    session = edgesdk.Session(args.model, **opts)
    with tempfile.NamedTemporaryFile("w", prefix="bench_serve_", suffix=".log", delete=False) as log:
        results = run(args, session, opts, log)
    session.close()

    print(
        f"edgesdk serve vs direct Session: {args.model}, {args.tokens} tokens x {len(PROMPTS)} prompts x {args.rounds} rounds, "
        f"server {'in-process thread' if args.inproc else 'subprocess'}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in results.items()}
    print(f"{'':<8} {'decode tok/s':>13} {'e2e tok/s':>10} {'TTFT ms':>8}")
    for name, (dec, e2e, ttft) in med.items():
        print(f"{name:<8} {dec:>13.1f} {e2e:>10.1f} {ttft * 1e3:>8.1f}")
    ratio_dec, ratio_e2e = med["server"][0] / med["direct"][0], med["server"][1] / med["direct"][1]
    print(
        f"{'ratio':<8} {ratio_dec:>13.3f} {ratio_e2e:>10.3f} {med['server'][2] / med['direct'][2]:>8.2f}   "
        f"(server/direct; decode target >= 0.95: {'met' if ratio_dec >= 0.95 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
