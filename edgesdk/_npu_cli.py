"""``edgesdk diff``, ``edgesdk quantize --for npu`` (ONNX, QDQ for the NPU) and ``edgesdk quantize --to TYPE`` (GGUF
LLMs, llama.cpp's recipes): thin CLI over :mod:`edgesdk.diff`, :mod:`edgesdk.npu_quant` and :mod:`edgesdk.quant`."""

from __future__ import annotations

import json

import attrs

from . import hub
from ._errors import InputError

__all__ = ["add_commands"]


def _backend_options(text):
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--backend-options must be JSON such as '{{\"qnn\": {{\"input_shapes\": {{\"x\": [1, 3, 48, 192]}}}}}}': {exc}") from None
    if not isinstance(value, dict):
        raise InputError("--backend-options must be a JSON object: {backend name: {option: value}}")
    return value


def cmd_diff(args, options_fn) -> int:
    from ._feeds import load_inputs, parse_dims
    from .diff import diff

    if len(args.backend) != 2:
        raise InputError(f"edgesdk diff takes exactly two --backend targets, got {len(args.backend)}")
    opts = options_fn(args)
    opts = attrs.evolve(opts, backend_options=_backend_options(args.backend_options))
    report = diff(hub.resolve(args.model), args.backend[0], args.backend[1], load_inputs(args.input), seed=args.seed,
                  dims=parse_dims(args.dim), atol=args.atol, rtol=args.rtol, min_cosine=args.min_cosine,
                  locate=False if args.no_locate else (True if args.locate else None), options=opts)
    if args.json:
        print(json.dumps(attrs.asdict(report), indent=2, default=str))
    else:
        print(report.summary())
    return 0 if report.ok else 2


# Options that only mean something in one mode of `quantize`: given in the other, they are an error
# rather than silently ignored.
_NPU_ONLY = ("calibration", "eval", "activation_type", "weight_type", "per_channel", "method", "max_samples",
             "evaluate_on", "backend_options")
_GGUF_ONLY = ("eval_text", "eval_ctx", "eval_chunks")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _output(args) -> str | None:
    if args.out and args.output and args.out != args.output:
        raise InputError(f"two outputs given: {args.out!r} and --output {args.output!r}")
    return args.out or args.output


def cmd_quantize(args, options_fn) -> int:
    if args.to is not None:
        return _quantize_gguf(args)
    extra = [_flag(d) for d in _GGUF_ONLY if getattr(args, d) is not None]
    if extra:
        raise InputError(f"{', '.join(extra)} apply to GGUF quantization (--to TYPE), not --for npu")
    from .npu_quant import quantize_for_npu

    if args.calibration is None:
        raise InputError("--for npu needs --calibration DIR (.npz or .npy samples of the model's inputs)")
    output = _output(args)
    if output is None:
        raise InputError("--for npu needs --output FILE for the QDQ model")
    opts = attrs.evolve(options_fn(args), backend_options=_backend_options(args.backend_options))
    report = quantize_for_npu(hub.resolve(args.model), output, args.calibration,
                              activation_type=args.activation_type or "uint8", weight_type=args.weight_type or "uint8",
                              per_channel=bool(args.per_channel), method=args.method or "minmax",
                              max_samples=args.max_samples, eval_data=args.eval, evaluate_on=args.evaluate_on, options=opts)
    if args.json:
        print(json.dumps(attrs.asdict(report), indent=2, default=str))
    else:
        print(report.summary())
    return 0


def _quantize_gguf(args) -> int:
    import sys

    from .quant._gguf_quantize import file_type, quantize_gguf

    extra = [_flag(d) for d in _NPU_ONLY if getattr(args, d) is not None]
    if extra:
        raise InputError(f"{', '.join(extra)} apply to --for npu (ONNX), not to GGUF quantization (--to)")
    file_type(args.to)  # an unknown type fails before any file is read
    output = _output(args)
    if output is None:
        raise InputError("edgesdk quantize --to TYPE needs an output: edgesdk quantize --to Q4_K_M in.gguf out.gguf")
    model = hub.resolve(args.model)
    if str(model).lower().endswith(".onnx"):
        raise InputError(f"{model}: --to quantizes GGUF language models; for an ONNX model use --for npu")
    text = None
    if args.eval_text is not None:
        try:
            with open(args.eval_text, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--eval-text {args.eval_text}: {exc}") from None

    def progress(i, n, name):
        print(f"\r[{i + 1}/{n}] {name:<48}", end="", file=sys.stderr, flush=True)

    tty = sys.stderr.isatty() and not args.json
    try:
        report = quantize_gguf(model, output, args.to, threads=args.threads, eval_text=text,
                               eval_ctx=args.eval_ctx or 512, eval_chunks=args.eval_chunks,
                               progress=progress if tty else None)
    finally:
        if tty:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(attrs.asdict(report), indent=2, default=str))
    else:
        print(report.summary())
    return 0


def add_commands(sub, add_placement_args, options_fn) -> None:
    from .npu_quant import ACTIVATION_TYPES, METHODS, WEIGHT_TYPES

    p = sub.add_parser("diff", help="run the same inputs on two backends/devices and find where outputs diverge")
    p.add_argument("model", help="model file or hub name")
    p.add_argument("--backend", "-b", action="append", required=True, metavar="TARGET",
                   help="device id, backend or kind (give exactly two; the first is the reference)")
    p.add_argument("--input", "-i", action="append", metavar="NAME=FILE.npy", help="inputs not given are random")
    p.add_argument("--dim", action="append", metavar="SYMBOL=N", help="value of a symbolic dimension for random inputs (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, help="tolerance relative to max|reference| (default 1e-2, 0.1 for QDQ models)")
    p.add_argument("--min-cosine", type=float, help="cosine similarity below this diverges (default 0.999, 0.99 for QDQ models)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--locate", action="store_true", help="always search for the first diverging node")
    g.add_argument("--no-locate", action="store_true", help="compare final outputs only")
    p.add_argument("--backend-options", metavar="JSON", help='e.g. \'{"qnn": {"input_shapes": {"x": [1, 3, 48, 192]}}}\'')
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    p.set_defaults(fn=lambda a: cmd_diff(a, options_fn), prefer=None, require=None, device_class=None)

    if "quantize" in sub.choices:  # another module owns `quantize`; it must dispatch --for npu here
        return
    from .quant._gguf_quantize import FILE_TYPES

    p = sub.add_parser("quantize", help="quantize a model: --to TYPE a GGUF LLM (llama.cpp's recipes), --for npu an "
                                        "ONNX model (QDQ for Qualcomm HTP); both report the accuracy")
    p.add_argument("model", help="input: a GGUF file (--to) or a float ONNX model (--for npu); file or hub name")
    p.add_argument("out", nargs="?", help="output file (same as --output)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--to", metavar="TYPE", help=f"GGUF file type, as llama-quantize: {', '.join(FILE_TYPES)}")
    mode.add_argument("--for", dest="target", choices=["npu"], help="what to quantize an ONNX model for")
    p.add_argument("--output", "-o", help="where to write the quantized model")
    g = p.add_argument_group("--to TYPE (GGUF)")
    g.add_argument("--eval-text", metavar="FILE", help="also measure perplexity of the input and output on this text")
    g.add_argument("--eval-ctx", type=int, metavar="N", help="perplexity context length (default 512)")
    g.add_argument("--eval-chunks", type=int, metavar="N", help="score at most N chunks of the text")
    g = p.add_argument_group("--for npu (ONNX)")
    g.add_argument("--calibration", "-c", metavar="DIR", help="(required) directory of .npz (keyed by input) or .npy samples")
    g.add_argument("--eval", metavar="DIR", help="samples for the accuracy report (default: the calibration samples)")
    g.add_argument("--activation-type", choices=ACTIVATION_TYPES, help="default uint8")
    g.add_argument("--weight-type", choices=WEIGHT_TYPES, help="default uint8")
    g.add_argument("--per-channel", action="store_true", default=None)
    g.add_argument("--method", choices=METHODS, help="calibration method (default minmax)")
    g.add_argument("--max-samples", type=int, metavar="N")
    g.add_argument("--evaluate-on", metavar="TARGET", help="run the quantized model here for the report (e.g. qnn)")
    g.add_argument("--backend-options", metavar="JSON")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    p.set_defaults(fn=lambda a: cmd_quantize(a, options_fn), prefer=None, require=None, device_class=None)
