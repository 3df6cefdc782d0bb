"""The contract between edgesdk and a backend plugin.

A plugin module implements the ``edgesdk_backends`` hook (see :mod:`edgesdk.hookspecs`) and returns
instances of :class:`Backend` subclasses. Built-in backends use exactly this API.

Helpers for backend authors are public here too (imported from where they live on first use):
:func:`gguf_refusal` and :class:`LlmRunner` for backends that run GGUF language models,
:func:`typed_backend_options` for a backend's options class, :class:`OrtRunner` (with
:func:`ort_specs`, :func:`parse_ort_type`) for backends built on an ONNX Runtime session, and the
ONNX graph helpers :func:`load_onnx`, :func:`dynamic_inputs`, :func:`fix_input_shapes`, :func:`is_qdq`
for backends that compile static graphs.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import attrs
import numpy as np

if TYPE_CHECKING:  # the helpers are bound on first use (see _HELPERS); type checkers see them here
    from edgesdk_backends.onnxruntime import OrtRunner, ort_specs, parse_ort_type

    from ._modelfile import model_sha256
    from ._onnxgraph import dynamic_inputs, fix_input_shapes, is_qdq, load_onnx
    from ._options import input_shapes, typed_backend_options
    from .llm._runner import LlmRunner, gguf_refusal

__all__ = [
    "BACKEND_API_VERSION",
    "DEVICE_KINDS",
    "Backend",
    "Device",
    "GENERATIVE_MEMBERS",
    "GenerativeRunner",
    "LlmRunner",
    "Model",
    "NodePlacement",
    "OpTime",
    "Runner",
    "Support",
    "TensorSpec",
    "VALUE_KINDS",
    "dynamic_inputs",
    "fix_input_shapes",
    "gguf_refusal",
    "input_shapes",
    "is_qdq",
    "load_onnx",
    "model_sha256",
    "missing_generative",
    "ort_specs",
    "OrtRunner",
    "parse_ort_type",
    "typed_backend_options",
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


#: What a signature entry holds: ONNX has sequences, optionals and maps besides tensors.
VALUE_KINDS = ("tensor", "sequence", "optional", "map")


def _value_kind(instance, attribute, value):
    if value not in VALUE_KINDS:
        raise ValueError(f"{attribute.name} must be one of {VALUE_KINDS}, got {value!r}")


def _element_for_kind(instance, attribute, value):
    if (instance.kind == "tensor") != (value is None):
        raise ValueError(f"a {instance.kind} spec {'takes no' if value is not None else 'needs an'} element spec")


@attrs.frozen
class TensorSpec:
    """A named value of a model signature: a tensor unless ``kind`` says otherwise.

    A tensor has a ``shape`` (symbolic dims kept as strings, unknown ones as None; None when even
    the rank is unknown) and a ``dtype``. The other kinds wrap ``element``, the spec of what they
    hold: a sequence's elements (tensors, or maps), an optional's value (a tensor or a sequence),
    a map's values, with ``key_dtype`` for its keys. For those ``shape`` is None and ``dtype`` is
    the innermost tensor's, so code that only reads ``dtype`` still learns the element type. Build
    them with :meth:`sequence`, :meth:`optional` and :meth:`map`.
    """

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: np.dtype = attrs.field(converter=np.dtype)
    kind: str = attrs.field(default="tensor", validator=_value_kind)
    element: TensorSpec | None = attrs.field(default=None, validator=_element_for_kind)
    key_dtype: np.dtype | None = attrs.field(default=None, converter=attrs.converters.optional(np.dtype))

    @classmethod
    def sequence(cls, name: str, element: TensorSpec) -> TensorSpec:
        return cls(name, None, element.dtype, "sequence", element)

    @classmethod
    def optional(cls, name: str, value: TensorSpec) -> TensorSpec:
        return cls(name, None, value.dtype, "optional", value)

    @classmethod
    def map(cls, name: str, key_dtype, value: TensorSpec) -> TensorSpec:
        return cls(name, None, value.dtype, "map", value, key_dtype)

    def type_str(self, nested: bool = False) -> str:
        """The value type without the name: ``float32[?, 3]``, ``seq(float32)``, ``optional(seq(int64[2]))``."""
        if self.kind == "tensor":
            if self.shape is None:
                return str(self.dtype) if nested else f"{self.dtype}?"
            return f"{self.dtype}[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        inner = self.element.type_str(nested=True)
        if self.kind == "map":
            return f"map({self.key_dtype}, {inner})"
        return f"{'seq' if self.kind == 'sequence' else 'optional'}({inner})"

    def __str__(self) -> str:
        return f"{self.name}: {self.type_str()}"


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
class OpTime:
    """Time the runtime's own profiler recorded for one node (operator), summed over its calls.

    ``calls`` counts executions since the runner was loaded with ``SessionOptions(profile=True)``;
    ``device_id`` is where the node ran when the runtime says (a partitioned model), else None.
    """

    node: str
    op_type: str
    total_s: float
    calls: int
    device_id: str | None = None


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
    dtypes, C-contiguous) and must be safe to call from several threads at once. Values of the
    non-tensor kinds arrive, and are returned, as ONNX Runtime's Python API takes them: a sequence
    as a list of arrays, an optional as its value or None, a map as a dict.
    ``nodes`` reports the actual per-node placement after loading, when the runtime exposes it.
    """

    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    nodes: tuple[NodePlacement, ...] = ()
    #: Why :meth:`op_times` is None even with ``profile=True`` (``edgesdk bench --profile`` says it).
    op_times_note: str = "the backend's runtime reports no per-op times"

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release native resources. Called once by ``Session.close``."""

    def device_memory(self) -> int | None:
        """Bytes this model holds in the device's own memory (weights, caches, buffers) where the runtime
        says; None otherwise. A CPU device's share is in the process's RSS instead."""
        return None

    def op_times(self) -> tuple[OpTime, ...] | None:
        """Per-node times from the runtime's profiler, over every run since load, when the model was
        loaded with ``SessionOptions(profile=True)``; None when this runner cannot report them (the
        default) or profiling was not asked for. Raise :class:`edgesdk.errors.EdgeSDKError` with the
        cause when profiling was asked for but the runtime's profile cannot be read."""
        return None


@runtime_checkable
class GenerativeRunner(Protocol):
    """The contract of a runner that generates text (a language model); ``Session.generate`` calls it.

    A runner claims it by having a ``generate`` attribute (or by subclassing this class); then
    ``Session`` checks at load that it has every member of :data:`GENERATIVE_MEMBERS` and refuses it
    otherwise with a :class:`edgesdk.errors.PluginError` naming the missing ones. It is a
    :class:`Runner` too: ``run``/``inputs``/``outputs``, and ``close`` called once.
    :class:`LlmRunner` implements all of it for a backend that gives edgesdk's LLM engine its
    forward pass; subclass that rather than writing these by hand.

    ``prompt`` is a string or a chat (a list of ``{"role", "content"}`` dicts, rendered with the
    model's chat template); keywords are :class:`edgesdk.llm.GenerationConfig` fields.
    """

    def generate(self, prompt, **kwargs) -> str:
        """The generated text; the conversation's KV cache is kept for the next call (see ``reset``)."""

    def generate_stream(self, prompt, **kwargs) -> Iterator[str]:
        """Like ``generate``, yielding text pieces as they are decoded; closing the iterator cancels."""

    def perplexity(self, text: str, n_ctx: int = 512, max_chunks: int | None = None):
        """The model's perplexity on ``text`` in windows of ``n_ctx`` tokens (llama.cpp's method)."""

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        """``messages`` rendered with the model's chat template, as the model will read them."""

    def reset(self) -> None:
        """Forget the conversation (the KV cache ``generate`` reuses between calls)."""

    def close(self) -> None:
        """Release native resources; called once."""

    @property
    def tokenizer(self):
        """The model's tokenizer (``encode``/``decode``, ``vocab_size``)."""

    @property
    def last_stats(self):
        """Statistics of the latest generation (:class:`edgesdk.llm.GenerationStats`), None before the first."""


#: Every member :class:`GenerativeRunner` requires, in the order they are reported when missing.
GENERATIVE_MEMBERS = ("generate", "generate_stream", "perplexity", "apply_chat_template", "reset", "close", "tokenizer", "last_stats")

_ABSENT = object()


def missing_generative(runner) -> tuple[str, ...] | None:
    """None when ``runner`` does not claim to be generative, else the :data:`GENERATIVE_MEMBERS` it lacks.

    Looked up without calling properties: a check at load must not run the model's code.
    """

    def has(name):
        return inspect.getattr_static(runner, name, _ABSENT) is not _ABSENT

    if not (has("generate") or GenerativeRunner in type(runner).__mro__):
        return None
    return tuple(m for m in GENERATIVE_MEMBERS if not has(m))


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
    #: True when ``load`` keeps compiled artifacts between processes (QNN context binaries, OpenCL
    #: program binaries) unless ``SessionOptions(artifact_cache=False)``: ``edgesdk bench`` then
    #: reports a cold and a cached load time.
    caches_artifacts: bool = False

    def probe(self) -> list[Device]:
        raise NotImplementedError

    def check(self, model: Model, device: Device, options) -> Support:
        return Support(ok=model.format in self.formats, reason=None if model.format in self.formats else f"format {model.format!r} not supported")

    def load(self, model: Model, device: Device, options) -> Runner:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# -- helpers for backend authors ---------------------------------------------------------------
# They live beside the code they belong to; those modules import this one, so each is imported
# on first use rather than here.
_HELPERS = {
    "gguf_refusal": "edgesdk.llm._runner",
    "LlmRunner": "edgesdk.llm._runner",
    "typed_backend_options": "edgesdk._options",
    "input_shapes": "edgesdk._options",
    "model_sha256": "edgesdk._modelfile",
    "dynamic_inputs": "edgesdk._onnxgraph",
    "fix_input_shapes": "edgesdk._onnxgraph",
    "is_qdq": "edgesdk._onnxgraph",
    "load_onnx": "edgesdk._onnxgraph",
    "OrtRunner": "edgesdk_backends.onnxruntime",
    "ort_specs": "edgesdk_backends.onnxruntime",
    "parse_ort_type": "edgesdk_backends.onnxruntime",
}


def __getattr__(name: str):
    module = _HELPERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
