"""A complete edgesdk backend plugin in one file: copy it to start your own.

It runs ONNX models with ``onnx.reference.ReferenceEvaluator`` (pure numpy): slow, but exact, and
it shows every part of the contract: probe -> devices or a reason, check -> support per model,
load -> a Runner with a signature and per-node placement. Import from ``edgesdk.backend`` (and
``edgesdk.errors``) only: it also exports the helpers a backend needs (``typed_backend_options``,
``LlmRunner``/``gguf_refusal`` for GGUF language models, ``OrtRunner`` for an ONNX Runtime session).
"""

from __future__ import annotations

import threading

import numpy as np

import edgesdk
from edgesdk.backend import Backend, Device, NodePlacement, Runner, Support
from edgesdk.errors import BackendError, BackendUnavailable


class ExampleBackend(Backend):
    name = "example"  # must be unique; it prefixes device ids ("example:ref")
    formats = ("onnx",)  # model formats this backend reads
    version = "0.1.0"

    def probe(self):
        # Report zero devices *with the reason* instead of raising anything else.
        try:
            import onnx.reference  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"onnx.reference is missing: {exc} (pip install 'onnx>=1.15')") from exc
        # A low score: automatic placement only picks it when asked (prefer/require "example").
        return [Device(self.name, "example:ref", "cpu", "ONNX reference evaluator (numpy)", None, score=1, capabilities={"fp32", "fp64", "int64"})]

    def check(self, model, device, options):
        custom = [op for op in model.info.get("op_types", ()) if not op.startswith("ai.onnx::")]
        if custom:
            return Support.refuse(f"custom-domain ops are not supported: {', '.join(custom)}")
        return Support(ok=True)

    def load(self, model, device, options):
        import onnx
        from onnx.reference import ReferenceEvaluator

        try:
            proto = onnx.load(model.path)
            evaluator = ReferenceEvaluator(proto)
        except Exception as exc:
            raise BackendError(f"reference evaluator cannot load {model.path}: {exc}") from exc
        return ExampleRunner(evaluator, model, device, proto)


class ExampleRunner(Runner):
    def __init__(self, evaluator, model, device, proto):
        self._ev = evaluator
        self._lock = threading.Lock()  # the evaluator keeps per-run state: serialise
        self.inputs = tuple(model.info["inputs"])
        self.outputs = tuple(model.info["outputs"])
        self.nodes = tuple(NodePlacement(n.name or f"{n.op_type}_{i}", n.op_type, device.id) for i, n in enumerate(proto.graph.node))

    def run(self, feeds, output_names=None):
        names = [o.name for o in self.outputs] if output_names is None else list(output_names)
        with self._lock:
            try:
                outs = self._ev.run(names, dict(feeds))
            except Exception as exc:
                raise BackendError(f"reference evaluator failed: {exc}") from exc
        return {n: np.asarray(v) for n, v in zip(names, outs)}


@edgesdk.hookimpl
def edgesdk_backends():
    return [ExampleBackend()]
