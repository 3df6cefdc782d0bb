"""Typed options of the QNN backend, validated when built, turned into QNN EP provider options."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from edgesdk.backend import input_shapes, typed_backend_options

__all__ = ["QnnOptions", "PERFORMANCE_MODES", "PRECISIONS", "PROFILING_LEVELS", "SOC_MODELS"]

PERFORMANCE_MODES = (
    "default",
    "burst",
    "balanced",
    "high_performance",
    "sustained_high_performance",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "low_balanced",
    "extreme_power_saver",
)
#: "auto": quantized when the model has QuantizeLinear/DequantizeLinear nodes, else fp16.
PRECISIONS = ("auto", "fp16", "quantized")
PROFILING_LEVELS = ("off", "basic", "detailed")

#: Snapdragon SoC -> QNN soc_model id (HTP arch in the comment). fp16 compilation needs one.
SOC_MODELS = {
    "SA8295": 39,  # v68
    "SM8550": 43,  # v73, Snapdragon 8 Gen 2
    "SM8650": 57,  # v75, Snapdragon 8 Gen 3
    "SM8750": 69,  # v79, Snapdragon 8 Elite
    "SM8850": 87,  # v81, Snapdragon 8 Elite Gen 5
}
DEFAULT_SOC = "SM8650"


def _one_of(choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise ValueError(f"qnn option {attribute.name} must be one of {choices}, got {value!r}")

    return check


def _soc(value):
    if isinstance(value, str):
        key = value.strip().upper()
        if key in SOC_MODELS:
            return SOC_MODELS[key]
        if not key.isdigit():
            raise ValueError(f"qnn option soc_model must be a QNN soc id or one of {sorted(SOC_MODELS)}, got {value!r}")
        value = int(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"qnn option soc_model must be a positive int or one of {sorted(SOC_MODELS)}, got {value!r}")
    return value


def _shapes(value) -> Mapping[str, tuple[int, ...]]:
    return input_shapes(value, "qnn option input_shapes")


def _opt_path(value):
    import os

    return None if value is None else os.fspath(value)


@attrs.frozen
class QnnOptions:
    """How the QNN backend compiles and runs a model on the Hexagon NPU (HTP).

    Pass as ``SessionOptions(backend_options={"qnn": QnnOptions(...).to_dict()})`` or as a plain
    dict with the same keys; unknown keys are an error, not ignored.

    - ``performance_mode``: HTP power/clock vote (``burst`` for latency, ``power_saver`` for battery).
    - ``precision``: ``fp16`` runs a float model in half precision; ``quantized`` requires a QDQ model
      (see ``edgesdk quantize --for npu``); ``auto`` picks by whether the model has Q/DQ nodes.
    - ``soc_model``: target SoC (QNN id or name such as ``"SM8650"``); fp16 compilation needs one, so
      ``None`` means the default :data:`DEFAULT_SOC`.
    - ``profiling_level`` / ``profiling_file``: QNN op profiling, written as CSV by the EP.
      ``SessionOptions(profile=True)`` turns it on at ``detailed`` (per-op events) into a private
      file that ``Session.op_times()`` reads; a level or file given here wins (``basic`` has no per-op
      events, so ``op_times()`` then reports ORT's per-partition times).
    - ``context_cache``: store compiled QNN context binaries and reuse them (a second Session on the
      same model skips compilation); ``cache_dir`` overrides ``$EDGESDK_CACHE_DIR/qnn``.
    - ``input_shapes``: fixed shapes for dynamic inputs (HTP compiles static graphs only).
    - ``io_quantization_on_cpu``: let the CPU quantize graph inputs / dequantize outputs of a QDQ
      model (ORT's default); off by default so the whole model runs on the NPU.
    - ``provider_options``: raw QNN EP options (strings), for settings not covered here; they win.
    """

    performance_mode: str = attrs.field(default="burst", validator=_one_of(PERFORMANCE_MODES))
    precision: str = attrs.field(default="auto", validator=_one_of(PRECISIONS))
    soc_model: int | None = attrs.field(default=None, converter=attrs.converters.optional(_soc))
    profiling_level: str = attrs.field(default="off", validator=_one_of(PROFILING_LEVELS))
    profiling_file: str | None = attrs.field(default=None, converter=_opt_path)
    context_cache: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    cache_dir: str | None = attrs.field(default=None, converter=_opt_path)
    input_shapes: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict, converter=_shapes)
    io_quantization_on_cpu: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    provider_options: Mapping[str, str] = attrs.field(factory=dict, converter=lambda d: {str(k): str(v) for k, v in (d or {}).items()})

    @classmethod
    def from_value(cls, value) -> "QnnOptions":
        """A QnnOptions from a QnnOptions, a dict of its fields, or None (defaults)."""
        if isinstance(value, Mapping) and "options" in value and len(value) == 1:
            return cls.from_value(value["options"])
        return typed_backend_options(cls, value, "qnn")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def resolved_precision(self, op_types) -> str:
        from edgesdk.backend import is_qdq

        if self.precision != "auto":
            return self.precision
        return "quantized" if is_qdq(op_types) else "fp16"

    def provider_options_for(self, precision: str) -> dict[str, str]:
        """QNN EP provider options (all strings) for a model compiled at ``precision``."""
        po = {
            "backend_type": "htp",
            "htp_performance_mode": self.performance_mode,
            "offload_graph_io_quantization": "1" if self.io_quantization_on_cpu else "0",
        }
        if precision == "fp16":
            po["enable_htp_fp16_precision"] = "1"
            po["soc_model"] = str(self.soc_model or SOC_MODELS[DEFAULT_SOC])
        elif self.soc_model:
            po["soc_model"] = str(self.soc_model)
        if self.profiling_level != "off":
            po["profiling_level"] = self.profiling_level
            if self.profiling_file:
                po["profiling_file_path"] = self.profiling_file
        po.update(self.provider_options)
        return po
