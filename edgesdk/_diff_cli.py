"""``edgesdk diff``: thin CLI over :mod:`edgesdk.diff`, registered into the main CLI by ``edgesdk.cli``."""

from __future__ import annotations

from . import hub
from ._cli_util import options_with_backend_json, print_report
from ._errors import InputError

__all__ = ["add_commands"]


def cmd_diff(args, options_fn) -> int:
    from ._feeds import load_inputs, parse_dims
    from .diff import diff

    if len(args.backend) != 2:
        raise InputError(f"edgesdk diff takes exactly two --backend targets, got {len(args.backend)}")
    report = diff(
        hub.resolve(args.model),
        args.backend[0],
        args.backend[1],
        load_inputs(args.input),
        seed=args.seed,
        dims=parse_dims(args.dim),
        atol=args.atol,
        rtol=args.rtol,
        min_cosine=args.min_cosine,
        locate=False if args.no_locate else (True if args.locate else None),
        options=options_with_backend_json(args, options_fn),
    )
    print_report(report, args.json)
    return 0 if report.ok else 2


def add_commands(sub, add_placement_args, options_fn) -> None:
    p = sub.add_parser("diff", help="run the same inputs on two backends/devices and find where outputs diverge")
    p.add_argument("model", help="model file or hub name")
    p.add_argument(
        "--backend", "-b", action="append", required=True, metavar="TARGET", help="device id, backend or kind (give exactly two; the first is the reference)"
    )
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
