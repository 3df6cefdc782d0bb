"""``edgesdk chat MODEL [--cloud URL]``: an interactive chat over the hybrid orchestrator."""

from __future__ import annotations

import contextlib
import sys

__all__ = ["add_commands"]

HELP = "type a message; /cloud sends the last question to the cloud (if policy allows), /private <msg> keeps one on the device, /quit ends"


def cmd_chat(args, options_fn) -> int:
    from .. import hub
    from .._session import Session
    from ._cloud import OpenAICompatible
    from ._orchestrator import Orchestrator
    from ._policy import Policy

    import httpx

    cloud = None
    if args.cloud:
        # Connecting gets its own, shorter limit: a down server should fall back to the device fast,
        # while a busy one may take the full --timeout between tokens.
        timeout = httpx.Timeout(args.timeout, connect=args.connect_timeout)
        cloud = OpenAICompatible(args.cloud, model=args.cloud_model, api_key_env=args.api_key_env, timeout_s=timeout, verify_tls=not args.insecure)
    policy = Policy(privacy=args.privacy, min_confidence=args.min_confidence, max_latency_s=args.max_latency)
    with cloud or contextlib.nullcontext(), Session(hub.resolve(args.model), options_fn(args)) as s:
        orch = Orchestrator(s, cloud, policy, audit_log=args.audit_log, max_tokens=args.max_tokens)
        print(f"edgesdk chat on {s.placement.device.id}; cloud: {cloud.http.url if cloud else 'none'}. {HELP}", file=sys.stderr)
        last = None
        for line in sys.stdin:
            msg = line.strip()
            if not msg:
                continue
            if msg in ("/quit", "/exit"):
                break
            if msg == "/cloud":
                if last is None:
                    print("(nothing to escalate yet)", file=sys.stderr)
                    continue
                ans = last.escalate()
                print(ans.text)
            else:
                private = msg.startswith("/private ")
                stream = orch.generate_stream(msg[len("/private ") :] if private else msg, private=private)
                for piece in stream:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                sys.stdout.write("\n")
                ans = stream.answer
            why = "; ".join(ans.reasons) or "default: on the device"
            print(f"[{ans.route}] {why}", file=sys.stderr)
            last = ans
    return 0


def add_commands(sub, add_placement_args, options_fn) -> None:
    p = sub.add_parser("chat", help="interactive chat: on the device, escalating to a cloud engine when policy allows")
    p.add_argument("model", help="GGUF model file or hub name")
    p.add_argument("--cloud", metavar="URL", help="OpenAI-compatible server (e.g. http://127.0.0.1:8000)")
    p.add_argument("--cloud-model", default="default", help="model name to ask the cloud for")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the cloud API key")
    p.add_argument("--privacy", choices=["strict", "redact", "allow"], default="strict")
    p.add_argument("--min-confidence", type=float, default=0.0)
    p.add_argument("--max-latency", type=float, default=None, metavar="S")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="cloud read/write timeout")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S", help="cloud connect timeout")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (testing only)")
    p.add_argument("--audit-log", metavar="FILE.jsonl", help="append every routing decision here")
    add_placement_args(p)
    p.set_defaults(fn=lambda a: cmd_chat(a, options_fn))
