"""The contract between edgesdk and a backend plugin.

A plugin module implements the ``edgesdk_backends`` hook (see :mod:`edgesdk.hookspecs`) and returns
instances of :class:`Backend` subclasses. Built-in backends use exactly this API.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs
import numpy as np

__all__ = [
    "BACKEND_API_VERSION",
    "DEVICE_KINDS",
    "Backend",
    "Device",
    "Model",
    "NodePlacement",
    "Runner",
    "Support",
    "TensorSpec",
]

#: Bumped when the Backend/Runner contract changes incompatibly; backends declaring another value are refused.
BACKEND_API_VERSION = 1

DEVICE_KINDS = ("npu", "gpu", "cpu", "dsp")


def _kind(instance, attribute, value):
    if value not in DEVICE_KINDS:
        raise ValueError(f"{attribute.name} must be one of {DEVICE_KINDS}, got {value!r}")


@attrs.frozen
class Device:
    """One processor a backend can run on.

    ``id`` is unique across backends (``"<backend>:<local id>"``). ``score`` is the backend's own
    estimate of how good the device is for general inference (higher is better); placement uses it
    to order devices of the same kind. ``simulated`` marks devices whose timings mean nothing for
    real hardware (an NPU simulator, an OpenCL implementation running on the CPU).
    """

    backend: str
    id: str
    kind: str = attrs.field(validator=_kind)
    name: str
    memory_bytes: int | None = None
    score: int = 0
    simulated: bool = False
    capabilities: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    details: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)


@attrs.frozen
class TensorSpec:
    """A named tensor of a model signature. Symbolic dims are kept as strings, unknown ones as None."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: np.dtype = attrs.field(converter=np.dtype)

    def __str__(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name}: {self.dtype}{shape}"


@attrs.frozen
class Model:
    """A model file that passed edgesdk's integrity checks, handed to backends.

    ``format`` is ``"onnx"``, ``"tflite"``, ``"gguf"`` or a format a plugin registered.
    ``info`` carries what the format probe learned (opsets, op types, architecture...).
    """

    path: str
    format: str
    size: int
    info: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)


@attrs.frozen
class NodePlacement:
    """Where one node (operator) of a model runs; ``reason`` is set when it did not go where asked."""

    node: str
    op_type: str
    device_id: str
    reason: str | None = None


@attrs.frozen
class Support:
    """A backend's answer to "can you run this model on this device?".

    ``ok`` False means refused, with ``reason``. ``ok`` True with ``partial`` True means only some
    nodes run on the device and the rest fall back (listed in ``nodes`` where the backend knows).
    """

    ok: bool
    reason: str | None = None
    partial: bool = False
    nodes: tuple[NodePlacement, ...] = ()

    @classmethod
    def refuse(cls, reason: str) -> "Support":
        return cls(ok=False, reason=reason)


class Runner:
    """A model loaded on one device. Subclasses set ``inputs``/``outputs`` and implement ``run``.

    ``run`` receives feeds that edgesdk has already validated against ``inputs`` (names, shapes,
    dtypes, C-contiguous) and must be safe to call from several threads at once.
    ``nodes`` reports the actual per-node placement after loading, when the runtime exposes it.
    """

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    nodes: tuple[NodePlacement, ...] = ()

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release native resources. Called once by ``Session.close``."""


class Backend:
    """Base class of a backend plugin. Subclasses set ``name`` and ``formats`` and implement the methods.

    ``probe`` returns the devices usable here, or raises :class:`edgesdk.errors.BackendUnavailable`
    with the precise reason (library missing, no hardware, version mismatch). It is called once per
    process and must not be slow. ``check`` must not load the model into the runtime when a cheaper
    answer exists. ``load`` returns a :class:`Runner`.
    """

    name: str = ""
    api_version: int = BACKEND_API_VERSION
    version: str = ""
    formats: tuple[str, ...] = ()

    def probe(self) -> list[Device]:
        raise NotImplementedError

    def check(self, model: Model, device: Device, options) -> Support:
        return Support(ok=model.format in self.formats, reason=None if model.format in self.formats else f"format {model.format!r} not supported")

    def load(self, model: Model, device: Device, options) -> Runner:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

