"""``edgesdk quantize --for npu``: the qnn backend's quantize target (ONNX -> QDQ for the HTP).

Contributed to the core's ``quantize`` command through the ``edgesdk_quantize_targets`` hook.
"""

from __future__ import annotations

from edgesdk import hub
from edgesdk._cli_util import options_with_backend_json, print_report
from edgesdk._errors import InputError
from edgesdk.quant.cli import QuantizeTarget

from ._quant import ACTIVATION_TYPES, METHODS, WEIGHT_TYPES

__all__ = ["NpuQuantizeTarget"]


class NpuQuantizeTarget(QuantizeTarget):
    name = "npu"
    title = "an ONNX model, QDQ for Qualcomm HTP"
    formats = ("onnx",)

    def add_arguments(self, g) -> None:
        g.add_argument("--calibration", "-c", metavar="DIR", help="(required) directory of .npz (keyed by input) or .npy samples")
        g.add_argument("--eval", metavar="DIR", help="samples for the accuracy report (default: the calibration samples)")
        g.add_argument("--activation-type", choices=ACTIVATION_TYPES, help="default uint8")
        g.add_argument("--weight-type", choices=WEIGHT_TYPES, help="default uint8")
        g.add_argument("--per-channel", action="store_true", default=None)
        g.add_argument("--method", choices=METHODS, help="calibration method (default minmax)")
        g.add_argument("--max-samples", type=int, metavar="N")
        g.add_argument("--evaluate-on", metavar="TARGET", help="run the quantized model here for the report (e.g. qnn)")
        g.add_argument("--backend-options", metavar="JSON")

    def run(self, args, output, options_fn) -> int:
        from ._quant import quantize_for_npu

        if args.calibration is None:
            raise InputError("--for npu needs --calibration DIR (.npz or .npy samples of the model's inputs)")
        if output is None:
            raise InputError("--for npu needs --output FILE for the QDQ model")
        report = quantize_for_npu(
            hub.resolve(args.model),
            output,
            args.calibration,
            activation_type=args.activation_type or "uint8",
            weight_type=args.weight_type or "uint8",
            per_channel=bool(args.per_channel),
            method=args.method or "minmax",
            max_samples=args.max_samples,
            eval_data=args.eval,
            evaluate_on=args.evaluate_on,
            options=options_with_backend_json(args, options_fn),
        )
        print_report(report, args.json)
        return 0
