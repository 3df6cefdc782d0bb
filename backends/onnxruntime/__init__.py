"""ONNX Runtime backend: the CPU execution provider always, plus every other local EP installed.

Per-node placement comes from ORT's own graph-assignment record, so a node that falls back to the
CPU EP is listed, never hidden.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import attrs

import edgesdk
from edgesdk._errors import BackendError, BackendUnavailable
from edgesdk._sysinfo import cpu_name, total_memory
from edgesdk.backend import Backend, Device, NodePlacement, Runner, TensorSpec, typed_backend_options

log = logging.getLogger("edgesdk.backends.onnxruntime")


@attrs.frozen
class OrtOptions:
    """Options of the onnxruntime backend: ``SessionOptions(backend_options={"onnxruntime": {...}})``.

    - ``provider_options``: options of the execution provider the device runs on (ORT takes strings).
    """

    provider_options: Mapping[str, str] = attrs.field(factory=dict, converter=lambda d: {str(k): str(v) for k, v in (d or {}).items()})

    @classmethod
    def from_value(cls, value) -> "OrtOptions":
        """An OrtOptions from an OrtOptions, a dict of its fields, or None (defaults)."""
        return typed_backend_options(cls, value, "onnxruntime")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

# EP name -> (device kind, short id). The QNN EP belongs to the dedicated qnn backend.
_EP_KINDS = {
    "CUDAExecutionProvider": ("gpu", "cuda"),
    "TensorrtExecutionProvider": ("gpu", "tensorrt"),
    "NvTensorRTRTXExecutionProvider": ("gpu", "tensorrt-rtx"),
    "ROCMExecutionProvider": ("gpu", "rocm"),
    "MIGraphXExecutionProvider": ("gpu", "migraphx"),
    "DmlExecutionProvider": ("gpu", "directml"),
    "WebGpuExecutionProvider": ("gpu", "webgpu"),
    "CoreMLExecutionProvider": ("npu", "coreml"),
    "NnapiExecutionProvider": ("npu", "nnapi"),
    "VitisAIExecutionProvider": ("npu", "vitisai"),
    "OpenVINOExecutionProvider": ("cpu", "openvino"),
    "XnnpackExecutionProvider": ("cpu", "xnnpack"),
    "CANNExecutionProvider": ("npu", "cann"),
}
_NOT_LOCAL = {"AzureExecutionProvider": "runs models remotely in Azure, not on this device"}
_OWNED_ELSEWHERE = {"QNNExecutionProvider": "served by the 'qnn' backend"}
_SCORES = {"gpu": 80, "npu": 90, "cpu": 50, "dsp": 40}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = ("onnx",)

    def __init__(self):
        self.notes: list[str] = []
        self._ep_of: dict[str, str] = {}

    def probe(self):
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise BackendUnavailable(f"onnxruntime is not importable: {exc} (pip install onnxruntime)") from exc
        self.version = ort.__version__
        devs = [
            Device(self.name, "onnxruntime:cpu", "cpu", f"{cpu_name()} (CPU EP)", total_memory(), _SCORES["cpu"],
                   capabilities={"fp32", "fp16", "int8", "int4"}, details={"ep": "CPUExecutionProvider", "ort": ort.__version__})
        ]
        self._ep_of["onnxruntime:cpu"] = "CPUExecutionProvider"
        for ep in ort.get_available_providers():
            if ep == "CPUExecutionProvider":
                continue
            if ep in _NOT_LOCAL or ep in _OWNED_ELSEWHERE:
                self.notes.append(f"{ep} skipped: {_NOT_LOCAL.get(ep) or _OWNED_ELSEWHERE[ep]}")
                continue
            kind, short = _EP_KINDS.get(ep, ("gpu", ep.replace("ExecutionProvider", "").lower()))
            did = f"onnxruntime:{short}"
            self._ep_of[did] = ep
            devs.append(Device(self.name, did, kind, ep, None, _SCORES[kind], details={"ep": ep, "ort": ort.__version__}))
        return devs

    def load(self, model, device, options):
        import onnxruntime as ort

        ep = self._ep_of[device.id]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        try:
            oo = OrtOptions.from_value(options.options_for(self.name) or None)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"invalid onnxruntime backend options: {exc}") from exc
        providers = [(ep, dict(oo.provider_options))]
        if ep != "CPUExecutionProvider":
            providers.append(("CPUExecutionProvider", {}))
            if options.require is not None:
                so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            sess = ort.InferenceSession(model.path, sess_options=so, providers=[p for p, _ in providers],
                                        provider_options=[o for _, o in providers])
        except Exception as exc:
            raise BackendError(f"onnxruntime could not load {model.path} on {ep}: {exc}") from exc
        declared = model.info.get("inputs", ()) + model.info.get("outputs", ())
        return OrtRunner(sess, device, {v: k for k, v in self._ep_of.items()}, ort.RunOptions(), declared)


_ORT_TYPES = {
    "float": "float32", "float16": "float16", "double": "float64", "bfloat16": "object",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "string": "object",
}


def parse_ort_type(name: str, type_str: str, shape=None) -> TensorSpec:
    """The TensorSpec of an ORT type string: ``tensor(float)``, ``seq(tensor(int64))``,
    ``optional(seq(tensor(float)))``, ``map(string,tensor(float))``, ``seq(map(int64,tensor(float)))``.

    ``shape`` is the NodeArg's: ORT reports the tensor's own (through an optional, the inner
    tensor's) and ``[]`` for a sequence or map, whose element shapes it does not expose.
    """
    head, _, rest = type_str.replace(" ", "").partition("(")
    inner = rest[:-1]
    if head == "seq":
        return TensorSpec.sequence(name, parse_ort_type(name, inner))
    if head == "optional":
        return TensorSpec.optional(name, parse_ort_type(name, inner, shape))
    if head == "map":
        key, _, value = inner.partition(",")
        return TensorSpec.map(name, _ORT_TYPES.get(key, "object"), parse_ort_type(name, value))
    if head == "tensor":
        return TensorSpec(name, shape, _ORT_TYPES.get(inner, "object"))
    return TensorSpec(name, None, "object")  # sparse tensors and kinds this ORT adds later: unchecked


def ort_specs(args, declared=()):
    """TensorSpecs from ORT NodeArgs (symbolic dims kept as strings).

    ``declared`` are the model file's own specs: ORT reports a tensor of unknown rank as shape
    ``[]``, like a scalar, and only the file tells the two apart (a rank-0 check would refuse
    every array such an input accepts).
    """
    unranked = {s.name for s in declared if s.kind == "tensor" and s.shape is None}
    out = []
    for a in args:
        shape = None if a.shape is None else tuple(d if isinstance(d, (int, str)) else None for d in a.shape)
        out.append(parse_ort_type(a.name, a.type, None if shape == () and a.name in unranked else shape))
    return tuple(out)


class OrtRunner(Runner):
    def __init__(self, sess, device, device_of_ep, run_options, declared=()):
        self._sess = sess
        # Failures are raised as BackendError with ORT's message; its own stderr log would say it twice.
        run_options.log_severity_level = 4
        self._run_options = run_options
        self.inputs = ort_specs(sess.get_inputs(), declared)
        self.outputs = ort_specs(sess.get_outputs(), declared)
        self._out_names = [o.name for o in self.outputs]
        nodes = []
        try:
            for sub in sess.get_provider_graph_assignment_info():
                did = device_of_ep.get(sub.ep_name, f"onnxruntime:{sub.ep_name}")
                for n in sub.get_nodes():
                    reason = None if did == device.id else f"{device.details.get('ep')} did not take this node"
                    nodes.append(NodePlacement(n.name, n.op_type, did, reason))
        except Exception as exc:  # older ORT: no assignment record
            log.debug("no graph assignment info: %s", exc)
        self.nodes = tuple(nodes)

    def run(self, feeds, output_names=None):
        names = self._out_names if output_names is None else list(output_names)
        try:
            outs = self._sess.run(names, feeds, self._run_options)
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {exc}") from exc
        return dict(zip(names, outs))

    def close(self):
        self._sess = None


@edgesdk.hookimpl
def edgesdk_backends():
    return [OnnxRuntimeBackend()]
