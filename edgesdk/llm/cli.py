"""``edgesdk generate`` and ``edgesdk perplexity``: registered into the main CLI by ``edgesdk.cli``."""

from __future__ import annotations

import sys

import attrs

from .._clijson import dump, placement_dict, stats_dict
from ._model import KV_DTYPES

__all__ = ["add_commands"]


def _session(args, options_fn, n_ctx=None, kv_dtype=None):
    from .. import hub
    from .._session import Session

    # Generic fields, not one backend's options: whichever backend the model lands on honours them.
    given = {k: v for k, v in (("n_ctx", n_ctx), ("kv_dtype", kv_dtype)) if v}
    return Session(hub.resolve(args.model), attrs.evolve(options_fn(args), **given))


def _runner(session):
    runner = session.runner
    if not hasattr(runner, "generate_stream"):
        from .._errors import GenerationError

        raise GenerationError(f"{session.model.path if hasattr(session, 'model') else 'the model'} is not a language model")
    return runner


def cmd_generate(args, options_fn) -> int:
    kw = dict(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=tuple(args.stop or ()),
    )
    if args.speculative:
        kw["speculative"] = args.speculative
    kw.update(_constraint(args))
    with _session(args, options_fn, args.n_ctx, args.kv_dtype) as s:
        runner = _runner(s)
        draft = _session(args.__class__(**{**vars(args), "model": args.draft}), options_fn, args.n_ctx, args.kv_dtype) if args.draft else None
        try:
            if draft is not None:
                kw["draft"] = draft
            prompt = args.prompt if args.raw or not runner.tokenizer.chat_template else [{"role": "user", "content": args.prompt}]
            text = "".join(s.generate_stream(prompt, **kw)) if args.json else _stream(s, prompt, kw)
        finally:
            if draft is not None:
                draft.close()
        if args.json:
            dump({"text": text, "stats": stats_dict(runner.last_stats), "placement": placement_dict(s.placement)})
        elif not args.quiet:  # stderr, so stdout is exactly the generated text
            print(f"{_where(s.placement)}; {runner.last_stats.summary()}", file=sys.stderr)
    return 0


def _stream(session, prompt, kw) -> None:
    """Write each piece to stdout as it is decoded."""
    try:
        for piece in session.generate_stream(prompt, **kw):
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:  # an error message (incomplete structured output) starts on its own line
        sys.stdout.write("\n")
        sys.stdout.flush()


def _where(placement) -> str:
    """The placement's first line (the device it runs on), without the refusals that follow."""
    return placement.summary().splitlines()[0]


def _read(path: str, what: str) -> str:
    from .._errors import GenerationError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise GenerationError(f"cannot read the {what} {path!r}: {exc}") from None


def _constraint(args) -> dict:
    """The structured-output options given on the command line (files read, JSON parsed)."""
    import json

    from .._errors import GenerationError

    out = {}
    if args.json_schema:
        text = _read(args.json_schema, "JSON schema")
        try:
            out["response_format"] = json.loads(text)
        except ValueError as exc:
            raise GenerationError(f"{args.json_schema!r} is not JSON: {exc}") from None
    if args.grammar:
        out["grammar"] = _read(args.grammar, "grammar")
    if args.regex:
        out["regex"] = args.regex
    return out


def cmd_perplexity(args, options_fn) -> int:
    from .._errors import GenerationError

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise GenerationError(f"cannot read {args.file!r}: {exc}") from None
    with _session(args, options_fn, args.n_ctx, args.kv_dtype) as s:
        r = _runner(s).perplexity(text, n_ctx=args.n_ctx, max_chunks=args.max_chunks)
        where = placement_dict(s.placement)
    if args.json:
        dump({**attrs.asdict(r), "placement": where})
        return 0
    print(
        f"perplexity: {r.ppl:.4f} +/- {r.stderr:.4f} ({r.chunks} chunks of {r.n_ctx} tokens, "
        f"{r.scored_tokens} scored of {r.text_tokens}; llama.cpp method: second half of each chunk)"
    )
    return 0


def add_commands(sub, add_placement_args, options_fn) -> None:
    p = sub.add_parser("generate", help="generate text with a GGUF language model (streams to stdout)")
    p.add_argument("model", help="GGUF model file or hub name")
    p.add_argument("prompt")
    p.add_argument("--raw", action="store_true", help="use the prompt as is (default: as a user turn of the chat template)")
    p.add_argument("--max-tokens", "-n", type=int, default=256)
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--speculative", choices=["prompt_lookup"], help="draft-free speculative decoding")
    p.add_argument("--draft", metavar="MODEL", help="draft model (same vocabulary) for speculative decoding")
    p.add_argument("--n-ctx", type=int, help="KV-cache length (default: the model's context length)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV-cache storage (cpu default f16; the opencl backend stores f32 only)")
    p.add_argument("--json-schema", metavar="FILE", help="constrain the output to this JSON schema (or OpenAI response_format)")
    p.add_argument("--grammar", metavar="FILE", help="constrain the output to this Lark or GBNF grammar")
    p.add_argument("--regex", metavar="RE", help="constrain the output to this regular expression")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, stats, placement) at the end instead of streaming")
    add_placement_args(p)
    p.set_defaults(fn=lambda a: cmd_generate(a, options_fn))

    p = sub.add_parser("perplexity", help="perplexity of a GGUF language model over a text file (llama.cpp's method)")
    p.add_argument("model", help="GGUF model file or hub name")
    p.add_argument("file", help="UTF-8 text file")
    p.add_argument("--n-ctx", type=int, default=512, help="chunk length in tokens (default 512)")
    p.add_argument("--max-chunks", type=int, help="score only the first N chunks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV-cache storage (cpu default f16; the opencl backend stores f32 only)")
    add_placement_args(p)
    p.set_defaults(fn=lambda a: cmd_perplexity(a, options_fn))
