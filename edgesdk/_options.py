"""Session options and device-class presets (frozen attrs value objects)."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from .backend import DEVICE_KINDS

__all__ = ["SessionOptions", "DeviceClass", "DEVICE_CLASSES", "PRECISIONS", "SELECTIONS", "OBJECTIVES", "input_shapes", "typed_backend_options"]

PRECISIONS = ("auto", "fp32", "fp16", "int8", "int4")
#: How placement picks among the devices that can run a model (see edgesdk._plan / edgesdk._trial).
SELECTIONS = ("preference", "measured")
#: What a measured placement minimises: the median time of a run, or the energy of one.
OBJECTIVES = ("latency", "energy")


def _target(value: str) -> str:
    """A placement target: a device kind, a backend name, or a device id ('backend:local')."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"placement target must be a non-empty string (a kind {DEVICE_KINDS}, a backend name or a device id), got {value!r}")
    return value.strip().lower()


def _prefer(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    return tuple(_target(v) for v in value)


def _opt_target(value):
    return None if value is None else _target(value)


def _positive_or_none(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be a positive int or None, got {value!r}")


def _opt_name(instance, attribute, value):
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string or None, got {value!r}")


def input_shapes(value, what: str = "input_shapes") -> Mapping[str, tuple[int, ...]]:
    """``{input name: shape}`` with every dim a positive int (None: no shapes); ValueError naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must map input name -> shape, got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if isinstance(v, (str, bytes)):
            raise ValueError(f"{what}[{k!r}] must be a sequence of ints, got {v!r}")
        try:
            shape = tuple(int(d) for d in v)
        except (TypeError, ValueError):
            raise ValueError(f"{what}[{k!r}] must be a sequence of ints, got {v!r}") from None
        if not shape or any(d < 1 for d in shape) or any(isinstance(d, bool) for d in v):
            raise ValueError(f"{what}[{k!r}] must be positive ints, got {v!r}")
        out[str(k)] = shape
    return out


def _trial_s(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
        raise ValueError(f"{attribute.name} must be a number of seconds in (0, 600], got {value!r}")


def _one_of(choices):
    def check(instance, attribute, value):
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _avoid(value) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise ValueError("avoid must map a placement target (kind, backend or device id) to the reason it is avoided")
    return {_target(k): v for k, v in value.items()}


def _adapters(value) -> Mapping[str, str]:
    import os

    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k and isinstance(v, (str, os.PathLike)) for k, v in value.items()):
        raise ValueError("adapters must map an adapter name to the path of its GGUF LoRA file")
    return {k: os.fspath(v) for k, v in value.items()}


def _backend_options(value) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()):
        raise ValueError("backend_options must map a backend name to a dict of that backend's options")
    return {k: dict(v) for k, v in value.items()}


@attrs.frozen
class DeviceClass:
    """Defaults that suit one class of device. Turn it into options with ``SessionOptions.for_device``."""

    name: str
    description: str
    threads: int | None
    memory_budget_mb: int | None
    prefer: tuple[str, ...] = attrs.field(converter=_prefer)
    precision: str = attrs.field(validator=_one_of(PRECISIONS))


DEVICE_CLASSES: Mapping[str, DeviceClass] = {
    d.name: d
    for d in (
        # Phones: big.LITTLE cores, the NPU is the efficient place; keep to the performance cores.
        DeviceClass("phone", "smartphone SoC: NPU first, few big cores, tight memory", 4, 1536, ("npu", "gpu", "cpu"), "int8"),
        DeviceClass("pc", "laptop/desktop: GPU or NPU when present, plenty of memory", None, 8192, ("gpu", "npu", "cpu"), "fp16"),
        # Cars: predictable latency matters more than peak speed; safety domain keeps memory bounded.
        DeviceClass("car", "automotive head unit: NPU, bounded memory, deterministic latency", 4, 4096, ("npu", "dsp", "gpu", "cpu"), "int8"),
        DeviceClass("xr", "XR headset: GPU busy rendering, so NPU first, then DSP", 2, 2048, ("npu", "dsp", "cpu", "gpu"), "int8"),
        DeviceClass("iot", "microcontroller-class board or gateway: CPU/DSP, very small memory", 1, 256, ("dsp", "npu", "cpu"), "int8"),
    )
}


@attrs.frozen
class SessionOptions:
    """How a Session places and runs a model.

    ``prefer`` orders placement targets; each entry is a device kind (``"npu"``), a backend name
    (``"onnxruntime"``) or a device id (``"onnxruntime:cpu"``). ``require`` names a target that must
    run the whole model: any fallback is then an error, not a warning. ``threads`` caps CPU threads,
    ``memory_budget_mb`` refuses devices that report less free memory than the model needs,
    ``precision`` is a hint backends may use (``"auto"`` keeps the model's own).
    ``backend_options`` passes typed options to one backend, keyed by backend name.
    ``avoid`` maps targets placement must not use to the reason, which the refusal reports
    (a pipeline uses it for devices whose memory its other stages already hold).
    ``adapters`` maps a name to a GGUF LoRA adapter file loaded beside a GGUF model; a generation
    picks one per request (``generate(..., adapter="name")``).

    Settings every backend of a kind understands are fields here, not backend options, so the
    core never needs to know which backend a model lands on; each backend maps them to its own
    (a backend option of the same meaning, when given, wins):

    - ``n_ctx``: KV-cache length in tokens of a language model (None: the backend's default).
    - ``kv_dtype``: how the KV cache stores keys/values (None: the backend's default; the cpu backend's is "f16"); a
      backend that cannot store the type asked for refuses the model with the reason.
    - ``artifact_cache``: False keeps compiled artifacts of this model (QNN context binaries) out
      of the compiled-artifact cache, for a temporary model that will never be loaded again.
    - ``input_shapes``: fixed shapes (``{name: [dims]}``) for inputs with dynamic dimensions, for
      backends that compile static graphs (QNN's HTP); backends that run any shape ignore it.
    - ``profile``: ask the runtime to record per-node times (ORT's profiler, QNN's profiling level);
      ``Session.op_times()`` returns them. Slows every run a little: for ``edgesdk bench --profile``.

    ``select="measured"`` replaces the preference order by a measurement: the first time a model
    meets a set of candidate devices, each runs a short trial (a warm-up, then timed runs for at
    most ``trial_s`` seconds) and the fastest by median wins — or, with ``objective="energy"`` and a
    readable energy counter (Linux RAPL), the one using the least energy per run. The result is
    kept in the ``placement`` cache and reused until the model, a device, a runtime version or these
    options change. ``require``/``avoid`` still filter the candidates; simulated devices compete only
    when a target names them. ``placement.trials`` holds every candidate's numbers.
    """

    prefer: tuple[str, ...] = attrs.field(default=("npu", "gpu", "cpu"), converter=_prefer)
    require: str | None = attrs.field(default=None, converter=_opt_target)
    threads: int | None = attrs.field(default=None, validator=_positive_or_none)
    memory_budget_mb: int | None = attrs.field(default=None, validator=_positive_or_none)
    precision: str = attrs.field(default="auto", validator=_one_of(PRECISIONS))
    device_class: str | None = None
    backend_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_backend_options, eq=False, hash=False)
    avoid: Mapping[str, str] = attrs.field(factory=dict, converter=_avoid, eq=False, hash=False)
    adapters: Mapping[str, str] = attrs.field(factory=dict, converter=_adapters, eq=False, hash=False)
    n_ctx: int | None = attrs.field(default=None, validator=_positive_or_none)
    kv_dtype: str | None = attrs.field(default=None, validator=_opt_name)
    artifact_cache: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    input_shapes: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict, converter=input_shapes, eq=False, hash=False)
    profile: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    select: str = attrs.field(default="preference", validator=_one_of(SELECTIONS))
    objective: str = attrs.field(default="latency", validator=_one_of(OBJECTIVES))
    trial_s: float = attrs.field(default=2.0, validator=_trial_s)

    @classmethod
    def for_device(cls, name: str, **overrides) -> "SessionOptions":
        """Options preset for a device class (phone, pc, car, xr, iot); keyword overrides win."""
        try:
            dc = DEVICE_CLASSES[name]
        except KeyError:
            raise ValueError(f"unknown device class {name!r}; known: {', '.join(DEVICE_CLASSES)}") from None
        base = dict(prefer=dc.prefer, threads=dc.threads, memory_budget_mb=dc.memory_budget_mb, precision=dc.precision, device_class=dc.name)
        base.update(overrides)
        return cls(**base)

    def options_for(self, backend: str) -> dict[str, Any]:
        """The backend-specific options given for ``backend`` (a fresh dict)."""
        return dict(self.backend_options.get(backend, {}))


def typed_backend_options(cls, value, backend: str):
    """A backend's frozen attrs options object from an instance, a dict of its fields, or None (defaults).

    Unknown keys are refused by name, so a misspelt option is never silently ignored.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{backend} options must be a {cls.__name__} object or a dict, got {type(value).__name__}")
    known = {a.name for a in attrs.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown {backend} option(s) {unknown}; known: {sorted(known)}")
    return cls(**value)
