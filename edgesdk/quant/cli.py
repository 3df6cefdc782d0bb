"""``edgesdk quantize``: ``--to TYPE`` quantizes a GGUF LLM with llama.cpp's recipes (:mod:`edgesdk.quant`);
``--for NAME`` hands the model to a :class:`QuantizeTarget` a plugin contributes through the
``edgesdk_quantize_targets`` hook (the qnn backend's ``--for npu``: ONNX to QDQ for the Hexagon NPU)."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import _progress, hub
from .._cli_util import print_report
from .._errors import InputError

__all__ = ["QuantizeTarget", "add_commands"]

log = logging.getLogger("edgesdk.cli")

_GGUF = None  # the mode key of --to TYPE among the --for targets' names


class QuantizeTarget:
    """One ``edgesdk quantize --for NAME`` mode (subclass it; return instances from ``edgesdk_quantize_targets``).

    ``name`` is the value of ``--for``; ``title`` describes it in ``--help``; ``formats`` are the
    model formats it takes, so ``--to`` given such a model points the user at this mode.
    """

    name: str = ""
    title: str = ""
    formats: tuple[str, ...] = ()

    def add_arguments(self, group) -> None:
        """Add this mode's options to ``group`` (an argparse argument group). Leave each default None
        (``store_true`` flags: ``default=None``): a value not None is how an option given in another
        mode is detected and refused."""

    def run(self, args, output: str | None, options_fn) -> int:
        """Quantize ``args.model`` (a file or hub name) to ``output`` (the positional output or
        ``--output``; None when neither was given) and return the exit status. ``args.json`` asks for
        JSON on stdout; ``options_fn(args)`` is the SessionOptions the command line describes."""
        raise NotImplementedError


class _Recording:
    """An argument group that remembers the long flag of every option added to it."""

    def __init__(self, group):
        self._group = group
        self.flags: dict[str, str] = {}  # dest -> flag

    def add_argument(self, *names, **kw):
        action = self._group.add_argument(*names, **kw)
        self.flags[action.dest] = next((n for n in action.option_strings if n.startswith("--")), action.dest)
        return action


def _mode(name) -> str:
    return "GGUF quantization (--to TYPE)" if name is _GGUF else f"--for {name}"


def _refuse_other_modes(args, mode, owned: dict) -> None:
    """Options of one mode given in another are an error rather than silently ignored."""
    for other, flags in owned.items():
        given = [flag for dest, flag in flags.items() if getattr(args, dest, None) is not None]
        if other != mode and given:
            raise InputError(f"{', '.join(given)} apply to {_mode(other)}, not {_mode(mode)}")


def _output(args) -> str | None:
    if args.out and args.output and args.out != args.output:
        raise InputError(f"two outputs given: {args.out!r} and --output {args.output!r}")
    return args.out or args.output


def cmd_quantize(args, options_fn, targets: dict, owned: dict) -> int:
    _refuse_other_modes(args, args.target, owned)
    if args.target is None:
        return _quantize_gguf(args, targets)
    return targets[args.target].run(args, _output(args), options_fn)


def _quantize_gguf(args, targets: dict) -> int:
    from ._gguf_quantize import file_type, quantize_gguf

    target = file_type(args.to)[0]  # an unknown type fails before any file is read
    output = _output(args)
    if output is None:
        raise InputError("edgesdk quantize --to TYPE needs an output: edgesdk quantize --to Q4_K_M in.gguf out.gguf")
    model = hub.resolve(args.model)
    fmt = Path(str(model)).suffix.lower().lstrip(".")
    takers = [t.name for t in targets.values() if fmt in t.formats]
    if takers:
        raise InputError(f"{model}: --to quantizes GGUF language models; for {fmt.upper()} models use " + " or ".join(f"--for {n}" for n in takers))
    text = None
    if args.eval_text is not None:
        try:
            with open(args.eval_text, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--eval-text {args.eval_text}: {exc}") from None

    # A bar on stderr counting tensors (hidden off a terminal and with -q: _progress decides), closed when
    # the last tensor is written so the perplexity runs (--eval-text) draw their own bar alone.
    with _progress.bar(None, f"quantizing to {target}", unit="tensor") as bar:

        def progress(i, n, name):
            bar.total = n
            bar.set_postfix_str(name, refresh=False)
            bar.update(i - bar.n)
            if i == n:
                bar.close()

        report = quantize_gguf(
            model, output, args.to, threads=args.threads, eval_text=text, eval_ctx=args.eval_ctx or 512, eval_chunks=args.eval_chunks, progress=progress
        )
    print_report(report, args.json)
    return 0


def _add_targets(p, targets) -> tuple[dict, dict]:
    """Each target's argument group; a target that fails to add its options is skipped, not fatal."""
    usable, owned = {}, {}
    for t in targets:
        if not t.name or t.name in usable:
            log.warning("quantize target %r skipped: %s", t, "no name" if not t.name else "the name is already taken")
            continue
        group = _Recording(p.add_argument_group(f"--for {t.name}" + (f" ({t.title})" if t.title else "")))
        try:
            t.add_arguments(group)
        except Exception as exc:  # e.g. an option another mode already defines
            log.warning("quantize target %s skipped: add_arguments raised %s: %s", t.name, type(exc).__name__, exc)
            continue
        usable[t.name], owned[t.name] = t, group.flags
    return usable, owned


def add_commands(sub, add_placement_args, options_fn, targets=()) -> None:
    """Register ``quantize``; ``targets`` are the plugins' :class:`QuantizeTarget` objects."""
    from ._gguf_quantize import FILE_TYPES

    targets = list(targets)
    modes = "".join(f", --for {t.name} {t.title}" for t in targets if t.name)
    p = sub.add_parser("quantize", help=f"quantize a model: --to TYPE a GGUF LLM (llama.cpp's recipes){modes}; each reports the accuracy")
    p.add_argument("model", help="input model: a GGUF file (--to) or what the --for target takes; file or hub name")
    p.add_argument("out", nargs="?", help="output file (same as --output)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--to", metavar="TYPE", help=f"GGUF file type, as llama-quantize: {', '.join(FILE_TYPES)}")
    for_ = mode.add_argument("--for", dest="target", choices=(), help="quantize for this target (provided by a plugin)")
    p.add_argument("--output", "-o", help="where to write the quantized model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    g = _Recording(p.add_argument_group("--to TYPE (GGUF)"))
    g.add_argument("--eval-text", metavar="FILE", help="also measure perplexity of the input and output on this text")
    g.add_argument("--eval-ctx", type=int, metavar="N", help="perplexity context length (default 512)")
    g.add_argument("--eval-chunks", type=int, metavar="N", help="score at most N chunks of the text")
    usable, owned = _add_targets(p, targets)
    for_.choices = list(usable)  # known only now: a target whose options clash is left out
    owned[_GGUF] = g.flags
    p.set_defaults(fn=lambda a: cmd_quantize(a, options_fn, usable, owned), prefer=None, require=None, device_class=None)
