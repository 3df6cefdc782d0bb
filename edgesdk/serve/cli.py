"""``edgesdk serve MODEL``: registered into the main CLI by ``edgesdk.cli``."""

from __future__ import annotations

import argparse
import logging

import attrs

__all__ = ["add_commands"]

log = logging.getLogger("edgesdk.serve")


def _adapter_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _non_negative_int(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _api_key(args) -> str | None:
    # From the environment by default: a key on the command line is visible to every local user (ps).
    from .. import _env

    return args.api_key or _env.get("EDGESDK_SERVE_API_KEY")


def cmd_serve(args, options_fn) -> int:
    from .._errors import EdgeSDKError
    from ..llm.cli import _session
    from . import serve  # fails now, with the pip command, if starlette/uvicorn are missing

    names = [name for name, _ in args.adapter or ()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EdgeSDKError(f"--adapter given twice for {', '.join(dupes)}")
    adapters = dict(args.adapter or ())

    def options(a):
        return attrs.evolve(options_fn(a), adapters=adapters) if adapters else options_fn(a)

    session = _session(args, options, args.n_ctx, args.kv_dtype)
    model_id = args.model_name or (args.model[len("hub:") :] if args.model.startswith("hub:") else None)
    # After a signal, serve() returns once in-flight requests finished or were cancelled; the
    # Session is closed only when no generation is still inside the engine (the OS reclaims it otherwise).
    if serve(
        session,
        args.host,
        args.port,
        shutdown_timeout=args.shutdown_timeout,
        model_id=model_id,
        queue_size=args.queue,
        max_tokens=args.max_tokens,
        api_key=_api_key(args),
    ):
        session.close()
    return 0


def add_commands(sub, add_placement_args, options_fn) -> None:
    from ..llm._model import KV_DTYPES

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP API for a GGUF model (chat, completions, streaming, tools, JSON schema)")
    p.add_argument("model", help="GGUF model file or hub:<name>")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--port", type=_non_negative_int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--adapter", action="append", type=_adapter_arg, metavar="NAME=PATH", help="GGUF LoRA adapter, requested as model '<model-name>:NAME' (repeatable)"
    )
    p.add_argument("--queue", type=_non_negative_int, default=16, metavar="N", help="requests that may wait behind the running one; more get 429 (default 16)")
    p.add_argument("--model-name", help="model id clients ask for (default: hub name or file name without .gguf)")
    p.add_argument("--max-tokens", type=_positive_int, default=512, help="max_tokens of a request that gives none (default 512)")
    p.add_argument(
        "--shutdown-timeout", type=float, default=10.0, metavar="S", help="on SIGTERM, seconds in-flight requests get before they are cancelled (default 10)"
    )
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ (default: $EDGESDK_SERVE_API_KEY; none: open)")
    p.add_argument("--n-ctx", type=_positive_int, help="KV-cache length (default: the model's context length)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV-cache storage (cpu backend; default f16)")
    add_placement_args(p)
    p.set_defaults(fn=lambda a: cmd_serve(a, options_fn))
