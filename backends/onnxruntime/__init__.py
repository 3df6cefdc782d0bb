"""ONNX Runtime backend: the CPU execution provider always, plus every other local EP installed.

Per-node placement comes from ORT's own graph-assignment record, so a node that falls back to the
CPU EP is listed, never hidden. ``SessionOptions(profile=True)`` turns on ORT's profiler; the runner's
``op_times()`` sums its per-node kernel times (see :meth:`OrtRunner.op_times`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import weakref
from typing import Any, Mapping

import attrs

import edgesdk
from edgesdk._errors import BackendError, BackendUnavailable
from edgesdk._sysinfo import cpu_name, total_memory
from edgesdk.backend import Backend, Device, NodePlacement, OpTime, Runner, TensorSpec, typed_backend_options

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
            Device(
                self.name,
                "onnxruntime:cpu",
                "cpu",
                f"{cpu_name()} (CPU EP)",
                total_memory(),
                _SCORES["cpu"],
                capabilities={"fp32", "fp16", "int8", "int4"},
                details={"ep": "CPUExecutionProvider", "ort": ort.__version__},
            )
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
        profile_dir = OrtRunner.enable_profiling(so) if getattr(options, "profile", False) else None
        try:
            sess = ort.InferenceSession(model.path, sess_options=so, providers=[p for p, _ in providers], provider_options=[o for _, o in providers])
        except Exception as exc:
            _remove_dir(profile_dir)
            raise BackendError(f"onnxruntime could not load {model.path} on {ep}: {exc}") from exc
        declared = model.info.get("inputs", ()) + model.info.get("outputs", ())
        return OrtRunner(sess, device, {v: k for k, v in self._ep_of.items()}, ort.RunOptions(), declared, profile_dir=profile_dir)


_ORT_TYPES = {
    "float": "float32",
    "float16": "float16",
    "double": "float64",
    "bfloat16": "object",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "object",
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


#: Session-level events of ORT's profile: not operators, so never reported by op_times().
_SESSION_EVENTS = frozenset(
    {"model_loading_uri", "model_loading_array", "model_loading_from_saved_proto", "session_initialization", "SequentialExecutor::Execute", "model_run"}
)
_KERNEL_SUFFIX = "_kernel_time"


def _remove_dir(path) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def parse_ort_profile(events, device_of_ep) -> tuple[OpTime, ...]:
    """Per-node totals from ORT's chrome-trace profile (a list of events), in order of first appearance.

    Only ``cat == "Node"`` events named ``<node>_kernel_time`` are operators: their ``dur`` is in
    microseconds and ``args`` carry ``op_name`` (the op type) and ``provider`` (the EP, mapped to a
    device id through ``device_of_ep``). Session-level events are left out. A node the model left
    unnamed is reported as ``<op_type>_<node_index>``.
    """
    totals: dict[tuple[str, str, str | None], list] = {}
    for ev in events:
        if not isinstance(ev, dict) or ev.get("cat") != "Node":
            continue
        name = ev.get("name")
        if not isinstance(name, str) or not name.endswith(_KERNEL_SUFFIX) or name in _SESSION_EVENTS:
            continue
        args = ev.get("args") or {}
        op_type = str(args.get("op_name", "?"))
        node = name[: -len(_KERNEL_SUFFIX)] or f"{op_type}_{args.get('node_index', '?')}"
        provider = args.get("provider")
        did = device_of_ep.get(provider, f"onnxruntime:{provider}") if provider else None
        slot = totals.setdefault((node, op_type, did), [0.0, 0])
        slot[0] += float(ev.get("dur") or 0) * 1e-6
        slot[1] += 1
    return tuple(OpTime(node, op_type, total, calls, did) for (node, op_type, did), (total, calls) in totals.items())


class OrtRunner(Runner):
    """A model in an ``onnxruntime.InferenceSession``; shared by every backend built on ORT.

    A backend that profiles calls :meth:`enable_profiling` on its ``onnxruntime.SessionOptions``
    before creating the session and passes the folder it returns as ``profile_dir``: the runner owns
    it from then on (removed by :meth:`close`, or when the runner is collected).
    """

    _sess = None
    _profile_dir = None  # set when the session was created with enable_profiling()

    def __init__(self, sess, device, device_of_ep, run_options, declared=(), profile_dir=None):
        self._sess = sess
        self._device_of_ep = dict(device_of_ep)
        # Failures are raised as BackendError with ORT's message; its own stderr log would say it twice.
        run_options.log_severity_level = 4
        self._run_options = run_options
        self._profile_dir = profile_dir
        self._profile_lock = threading.Lock()
        self._profile_events = None  # the profile once ended (ORT ends it for good): a list of events
        self._profile_error = None  # why ending or reading it failed, raised again by later calls
        self._op_times = None
        if profile_dir is not None:
            # A runner dropped without close() must not leave its profile behind.
            self._profile_cleanup = weakref.finalize(self, _remove_dir, profile_dir)
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

    @staticmethod
    def enable_profiling(so) -> str:
        """Turn on ORT's profiler in ``so`` (an ``onnxruntime.SessionOptions``), writing into a new
        private temporary folder, whose path is returned (hand it to the runner as ``profile_dir``;
        remove it yourself if the session is never created)."""
        path = tempfile.mkdtemp(prefix="edgesdk-ortprof-")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(path, "ort")
        return path

    def run(self, feeds, output_names=None):
        names = self._out_names if output_names is None else list(output_names)
        try:
            outs = self._sess.run(names, feeds, self._run_options)
        except Exception as exc:
            raise BackendError(f"onnxruntime run failed: {exc}") from exc
        return dict(zip(names, outs))

    def _end_profile(self):
        """ORT's profile as a list of events: ended and read on the first call, the same list after.

        ORT writes its profile only when profiling ends, and ``end_profiling`` ends it for the
        session for good (a later run is not recorded, a second call returns no file). The file is
        read into memory and removed with its folder at once.
        """
        with self._profile_lock:
            if self._profile_events is not None:
                return self._profile_events
            if self._profile_error is not None:  # the profile is ended: a second try cannot do better
                raise BackendError(self._profile_error)
            sess = self._sess
            if sess is None:
                raise BackendError("the onnxruntime session is closed; its profile is gone")
            try:
                path = sess.end_profiling()
                if not path:
                    raise BackendError("onnxruntime wrote no profile file (profiling was already ended by someone else)")
                with open(path, encoding="utf-8") as f:
                    events = json.load(f)
                if not isinstance(events, list):
                    raise BackendError(f"onnxruntime's profile is not a list of trace events (got {type(events).__name__})")
                self._profile_ended()
            except BackendError as exc:
                self._profile_error = str(exc)
                raise
            except (OSError, ValueError) as exc:
                self._profile_error = f"onnxruntime's profile could not be read: {exc}"
                raise BackendError(self._profile_error) from exc
            except Exception as exc:  # ORT's own failure to end profiling
                self._profile_error = f"onnxruntime could not end profiling: {exc}"
                raise BackendError(self._profile_error) from exc
            finally:
                _remove_dir(self._profile_dir)
            self._profile_events = events
            return events

    def _profile_ended(self) -> None:
        """Called once, under the profile lock, after ORT's profile was read and before the profile
        folder is removed: a subclass reads what else its runtime wrote there (QNN's CSV)."""

    def op_times(self):
        """Per-node kernel times from ORT's profiler, summed over every run since load, or None
        when the model was loaded without ``SessionOptions(profile=True)``.

        Every run counts: warm-up runs (``edgesdk bench``'s, a measured placement's trial on this
        runner) included, and runs from every thread. ORT writes its profile only when profiling
        ends and cannot restart it, so **the first call ends the profile**: it and every later call
        return the totals of the runs finished before it, and later runs are no longer profiled (nor
        slowed by the profiler). A run in flight on another thread at that moment may be counted
        in part. ORT keeps a bounded number of events (about a million: node count + 2 per run);
        runs past that bound are not recorded. Nodes are those of the graph ORT ran, after its
        optimizations: a fusion renames nodes (``fused matmul0/MatMulAddFusion``, op ``FusedGemm``)
        and layout nodes are added (``ReorderOutput``). ``device_id`` maps ORT's execution provider
        to this backend's device ids.
        Raises :class:`edgesdk.errors.BackendError` when the profile cannot be ended or read.
        """
        if self._profile_dir is None:
            return None
        events = self._end_profile()
        with self._profile_lock:
            if self._op_times is None:
                self._op_times = parse_ort_profile(events, self._device_of_ep)
            return self._op_times

    def close(self):
        sess, self._sess = self._sess, None
        if self._profile_dir is not None:
            with self._profile_lock:
                if self._profile_events is None and sess is not None:
                    try:
                        sess.end_profiling()  # flush it now, into the folder removed just below
                    except Exception as exc:
                        log.debug("ending the unread onnxruntime profile failed: %s", exc)
                _remove_dir(self._profile_dir)


@edgesdk.hookimpl
def edgesdk_backends():
    return [OnnxRuntimeBackend()]
