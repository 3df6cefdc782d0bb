"""``edgesdk diff`` and ``edgesdk quantize --for npu``: thin CLI over :mod:`edgesdk.diff` and :mod:`edgesdk.npu_quant`."""

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


def cmd_quantize(args, options_fn) -> int:
    from .npu_quant import quantize_for_npu

    opts = attrs.evolve(options_fn(args), backend_options=_backend_options(args.backend_options))
    report = quantize_for_npu(hub.resolve(args.model), args.output, args.calibration, activation_type=args.activation_type,
                              weight_type=args.weight_type, per_channel=args.per_channel, method=args.method,
                              max_samples=args.max_samples, eval_data=args.eval, evaluate_on=args.evaluate_on, options=opts)
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
    p = sub.add_parser("quantize", help="quantize a model (--for npu: QDQ for Qualcomm HTP, with an accuracy report)")
    p.add_argument("model", help="float ONNX model file or hub name")
    p.add_argument("--for", dest="target", required=True, choices=["npu"], help="what to quantize for")
    p.add_argument("--calibration", "-c", required=True, metavar="DIR", help="directory of .npz (keyed by input) or .npy samples")
    p.add_argument("--output", "-o", required=True, help="where to write the QDQ model")
    p.add_argument("--eval", metavar="DIR", help="samples for the accuracy report (default: the calibration samples)")
    p.add_argument("--activation-type", choices=ACTIVATION_TYPES, default="uint8")
    p.add_argument("--weight-type", choices=WEIGHT_TYPES, default="uint8")
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method")
    p.add_argument("--max-samples", type=int, metavar="N")
    p.add_argument("--evaluate-on", metavar="TARGET", help="run the quantized model here for the report (e.g. qnn)")
    p.add_argument("--backend-options", metavar="JSON")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    p.set_defaults(fn=lambda a: cmd_quantize(a, options_fn), prefer=None, require=None, device_class=None)
