"""Qualcomm NPU backend: the onnxruntime-qnn plugin EP on the Hexagon NPU (HTP).

On x86-64 hosts the HTP backend is Qualcomm's simulator: the device is reported ``simulated`` so
placement uses it only when asked by name or kind and nobody reads its timings as a phone's.

QDQ quantization for the HTP (:func:`quantize_for_npu`, ``edgesdk quantize --for npu``) lives here
too (:mod:`._quant`, :mod:`._cli`): it is this backend's tooling, not the core's.

Compilation is the expensive part of a QNN session, so compiled context binaries are cached
(:mod:`._cache`). Placement is never silent: every node QNN does not take is listed with the EP's
own reason, and ``require=`` turns on ORT's ``session.disable_cpu_ep_fallback``.

``SessionOptions(profile=True)`` turns on both profilers: ORT's (per node ORT runs; the whole QNN
partition is one fused node there) and the QNN EP's own (``profiling_level="detailed"``, a CSV with
the HTP's cycles per QNN op, which the HTP simulator writes too). ``op_times()`` reports the QNN ops
and the nodes ORT ran elsewhere (see :meth:`QnnRunner.op_times`).
"""

from __future__ import annotations

import csv
import logging
import os
import platform
import re
import shutil
import tempfile
import threading
import time

import attrs

import edgesdk
from edgesdk.backend import Backend, Device, NodePlacement, OpTime, OrtRunner, Support, model_sha256
from edgesdk.errors import BackendError, BackendUnavailable

from ._cache import CTX_MODEL, ContextCache, cache_root
from ._options import PERFORMANCE_MODES, PRECISIONS, PROFILING_LEVELS, SOC_MODELS, QnnOptions
from ._quant import NpuQuantReport, load_calibration, quantize_for_npu

__all__ = [
    "QnnBackend",
    "QnnOptions",
    "QnnRunner",
    "PERFORMANCE_MODES",
    "PRECISIONS",
    "PROFILING_LEVELS",
    "SOC_MODELS",
    "NpuQuantReport",
    "load_calibration",
    "quantize_for_npu",
]

log = logging.getLogger("edgesdk.backends.qnn")

EP_NAME = "QNNExecutionProvider"
_REGISTER_LOCK = threading.Lock()
_HTP_LOADED = False  # the HTP library prints a banner to stdout when first loaded in a process
_FALLBACK_DISABLED = "fallback to CPU EP has been explicitly disabled"


def _host_is_simulator() -> bool:
    # The HTP backend library only reaches real Hexagon hardware on ARM SoCs; on x86 hosts it simulates.
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _register(ort):
    """Register the QNN EP library once per process (or find it registered by the app) -> its EpDevices."""
    import onnxruntime_qnn

    with _REGISTER_LOCK:
        devs = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
        if not devs:
            ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
            devs = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    return devs


class _Profile:
    """Where a profiled QNN session writes: a private folder (ORT's JSON, and the QNN CSV unless the
    app named its own ``profiling_file``) and the provider options that turn QNN's profiler on."""

    def __init__(self, po, profiling_file=None):
        self.dir = tempfile.mkdtemp(prefix="edgesdk-qnnprof-")
        # An app's own profiling_level/profiling_file win (its file is left in place); "basic" has no
        # per-op events (ORT's per-partition numbers then).
        self.csv = po.get("profiling_file_path") or profiling_file or os.path.join(self.dir, "qnn.csv")
        try:  # QNN appends to an existing file: only what this session adds is its profile
            self.start = os.path.getsize(self.csv)
        except OSError:
            self.start = 0
        self.provider_options = {**po, "profiling_level": po.get("profiling_level", "detailed"), "profiling_file_path": self.csv}


def _cache_key_options(po):
    # Profiling changes what a run records, not the compiled context binary (a binary compiled without
    # it profiles per op when loaded with it), so profiling options stay out of the cache key.
    return {k: v for k, v in po.items() if not k.startswith("profiling_")}


class QnnBackend(Backend):
    name = "qnn"
    formats = ("onnx",)
    caches_artifacts = True  # context binaries (._cache), unless SessionOptions(artifact_cache=False)

    def __init__(self):
        self.notes: list[str] = []
        self._ep_devices: dict[str, object] = {}
        self.versions: dict[str, str] = {}

    def probe(self):
        try:
            import onnxruntime as ort
        except Exception as exc:
            raise BackendUnavailable(f"onnxruntime is not importable: {exc} (pip install edgesdk[qnn])") from exc
        try:
            import onnxruntime_qnn
            from onnxruntime_qnn import build_and_package_info as pkg
        except ImportError:
            raise BackendUnavailable("onnxruntime-qnn is not installed: pip install edgesdk[qnn]") from None
        if not hasattr(ort, "register_execution_provider_library"):
            raise BackendUnavailable(f"onnxruntime {ort.__version__} has no plugin-EP API; onnxruntime-qnn needs onnxruntime >= 1.23")
        try:
            devs = _register(ort)
        except Exception as exc:
            raise BackendUnavailable(f"the QNN EP library failed to register: {exc}") from exc
        if not devs:
            raise BackendUnavailable("onnxruntime-qnn is installed but its EP reports no device")
        self.versions = {"ort": ort.__version__, "qnn_ep": onnxruntime_qnn.__version__, "qnn_sdk": getattr(pkg, "qnn_version", "?")}
        self.version = f"{self.versions['qnn_ep']} (QNN SDK {self.versions['qnn_sdk']})"
        simulated = _host_is_simulator()
        out = []
        for i, ep_dev in enumerate(devs):
            did = "qnn:htp" if i == 0 else f"qnn:htp{i}"
            hw = ep_dev.device
            where = f"HTP simulator on the {platform.machine()} host" if simulated else f"{hw.vendor} NPU"
            name = f"Qualcomm Hexagon NPU (QNN HTP) - {where}"
            details = {"ep": EP_NAME, "backend_type": "htp", "hardware": str(hw.type).rsplit(".", 1)[-1], "vendor": hw.vendor, **self.versions}
            self._ep_devices[did] = ep_dev
            out.append(
                Device(
                    self.name, did, "npu", name, None, 90, simulated=simulated, capabilities={"fp16", "int8", "int16", "qdq", "context-cache"}, details=details
                )
            )
        if simulated:
            self.notes.append("x86-64 host: the HTP backend is Qualcomm's simulator - outputs are real, timings are not a phone's")
        return out

    # -- placement ------------------------------------------------------------------------------

    def _options(self, options) -> QnnOptions:
        try:
            qo = QnnOptions.from_value(options.options_for(self.name) or None)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"invalid qnn backend options: {exc}") from exc
        generic = getattr(options, "input_shapes", None)
        if generic and not qo.input_shapes:  # the backend's own option, when given, is the more specific ask
            qo = attrs.evolve(qo, input_shapes=generic)
        return qo

    def check(self, model, device, options):
        if model.format != "onnx":
            return Support.refuse(f"format {model.format!r} not supported")
        try:
            qo = self._options(options)
        except BackendError as exc:
            return Support.refuse(str(exc))
        if model.info.get("external_data"):
            return Support.refuse("models with external data files are not supported by the QNN backend yet")
        structured = [s for s in (*model.info.get("inputs", ()), *model.info.get("outputs", ())) if s.kind != "tensor"]
        if structured:
            # HTP graphs carry tensors only; ORT would run every node touching these on the CPU EP.
            values = ", ".join(str(s) for s in structured)
            return Support.refuse(
                f"HTP runs tensors only and the model's signature has {values}; ONNX sequence/optional/map values run on the onnxruntime backend"
            )
        from edgesdk.backend import dynamic_inputs, is_qdq

        missing = [s for s in dynamic_inputs(model.info.get("inputs", ())) if s.name not in qo.input_shapes]
        if missing:
            shapes = ", ".join(str(s) for s in missing)
            return Support.refuse(
                f"HTP compiles static shapes only and input(s) {shapes} are dynamic; give them with "
                f"SessionOptions(input_shapes={{name: [dims]}}) (edgesdk bench: --dim or --input)"
            )
        if qo.precision == "quantized" and not is_qdq(model.info.get("op_types", ())):
            return Support.refuse(
                "precision='quantized' but the model has no QuantizeLinear/DequantizeLinear nodes; quantize it first: edgesdk quantize --for npu"
            )
        return Support(ok=True)

    # -- loading --------------------------------------------------------------------------------

    def _session_options(self, ort, device, provider_options, options, strict, extra=(), profile=None):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if profile is not None:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile.dir, "ort")
            provider_options = profile.provider_options
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if strict:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        for k, v in extra:
            so.add_session_config_entry(k, v)
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        so.add_provider_for_devices([self._ep_devices[device.id]], provider_options)
        return so

    def _create(self, ort, source, so):
        # enable_fallback=0: ORT's Python wrapper would otherwise retry on the CPU EP after a QNN
        # error and print to stdout - the silent fallback this backend exists to prevent.
        global _HTP_LOADED
        if _HTP_LOADED:
            sess = ort.InferenceSession(source, sess_options=so, enable_fallback=0)
        else:
            from ._diagnose import capture_fd, without_banner

            with capture_fd(1, without_banner):
                sess = ort.InferenceSession(source, sess_options=so, enable_fallback=0)
            _HTP_LOADED = True
        if EP_NAME not in sess.get_providers():
            raise BackendError(f"the QNN EP was not attached (providers: {sess.get_providers()})")
        return sess

    def load(self, model, device, options):
        import onnxruntime as ort

        qo = self._options(options)
        precision = qo.resolved_precision(model.info.get("op_types", ()))
        po = qo.provider_options_for(precision)
        strict = options.require is not None
        source, shaped = self._model_source(model, qo)
        profile = runner = None
        # SessionOptions.artifact_cache=False (a throwaway model) overrides the backend's default.
        use_cache = qo.context_cache and getattr(options, "artifact_cache", True)
        cache = ContextCache(cache_root(qo.cache_dir)) if use_cache else None
        key = None
        t0 = time.perf_counter()
        try:
            if getattr(options, "profile", False):
                profile = _Profile(po, qo.profiling_file)
            if cache is not None:
                key = cache.make_key(
                    {
                        "model_sha256": model_sha256(model.path),
                        "input_shapes": {k: list(v) for k, v in qo.input_shapes.items()},
                        "provider_options": _cache_key_options(po),
                        "device": device.id,
                        "simulated": device.simulated,
                        **self.versions,
                    }
                )
                entry = cache.lookup(key)
                if entry is not None and strict and any(n[2] != device.id for n in entry.nodes):
                    return _Refused(device, tuple(NodePlacement(*n) for n in entry.nodes), precision, po)
                if entry is not None:
                    try:
                        so = self._session_options(ort, device, po, options, strict, profile=profile)
                        sess = self._create(ort, str(entry.model), so)
                    except Exception as exc:
                        # A verified entry that still fails to load (e.g. a driver update changed the
                        # binary format) is as bad as a corrupt one.
                        log.warning("QNN context cache entry %s failed to load (%s); rebuilding it", entry.path, exc)
                        cache.remove(entry.path)
                    else:
                        nodes = tuple(NodePlacement(*n) for n in entry.nodes)
                        runner = QnnRunner(
                            sess, device, nodes, precision, po, cache_hit=True, cache_entry=str(entry.path), create_s=time.perf_counter() - t0, profile=profile
                        )
                        return runner
            runner = self._compile(ort, model, device, options, po, precision, source, strict, cache, key, t0, profile)
            return runner
        finally:
            if shaped is not None:
                shutil.rmtree(shaped, ignore_errors=True)
            if profile is not None and profile.dir and getattr(runner, "_profile_dir", None) != profile.dir:
                shutil.rmtree(profile.dir, ignore_errors=True)  # no runner took the profile (a failure, or a refusal)

    def _model_source(self, model, qo):
        """The model to compile: the file itself, or a static-shape copy when input_shapes are given."""
        if not qo.input_shapes:
            return model.path, None
        from edgesdk.backend import fix_input_shapes, load_onnx

        import onnx

        tmp = tempfile.mkdtemp(prefix="edgesdk-qnn-")
        path = os.path.join(tmp, "model.onnx")
        try:
            onnx.save_model(fix_input_shapes(load_onnx(model.path), qo.input_shapes), path)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path, tmp

    def _compile(self, ort, model, device, options, po, precision, source, strict, cache, key, t0, profile=None):
        staging = cache.staging_dir() if cache is not None else None
        extra = []
        if staging is not None:
            extra = [("ep.context_enable", "1"), ("ep.context_file_path", str(staging / CTX_MODEL)), ("ep.context_embed_mode", "0")]
        try:
            try:
                sess = self._create(ort, source, self._session_options(ort, device, po, options, strict, extra, profile))
            except Exception as exc:
                if strict and _FALLBACK_DISABLED in str(exc):
                    # ORT says only "some node fell back". Compile again with fallback allowed to learn
                    # which nodes and why (cached, so the next strict attempt is refused at once), and
                    # hand that list to placement, which refuses the device naming each node.
                    if staging is not None:
                        ContextCache.remove(staging)
                        staging = None
                    probe = self._compile(ort, model, device, options, po, precision, source, False, cache, key, t0)
                    probe.close()
                    if probe.fallback_nodes():
                        return _Refused(device, probe.nodes, precision, po)
                raise BackendError(f"QNN could not compile {model.path} for {device.id}: {exc}") from exc
            runner = QnnRunner(sess, device, None, precision, po, cache_hit=False, create_s=None, profile=profile)
            if runner.fallback_nodes():
                runner.nodes = self._with_reasons(ort, source, device, po, options, runner.nodes)
            if staging is not None:
                entry = cache.commit(
                    staging, key, [(n.node, n.op_type, n.device_id, n.reason) for n in runner.nodes], {"model": model.path, "precision": precision}
                )
                staging = None
                runner.cache_entry = str(entry.path) if entry else None
            runner.create_s = time.perf_counter() - t0
            return runner
        finally:
            if staging is not None:
                ContextCache.remove(staging)

    def _with_reasons(self, ort, source, device, po, options, nodes):
        from ._diagnose import capture_stderr, parse_reasons

        so = self._session_options(ort, device, po, options, strict=False)
        so.log_severity_level = 0
        try:
            with capture_stderr() as text:
                ort.InferenceSession(source, sess_options=so, enable_fallback=0)
            reasons = parse_reasons("".join(text))
        except Exception as exc:  # the diagnosis is a courtesy; the placement itself is already known
            log.debug("QNN refusal diagnosis failed: %s", exc)
            reasons = {}
        out = []
        for n in nodes:
            if n.device_id == device.id:
                out.append(n)
            else:
                why = reasons.get(n.node) or "the QNN EP did not take this node (it gave no reason)"
                out.append(NodePlacement(n.node, n.op_type, n.device_id, f"QNN: {why}"))
        return tuple(out)


class QnnRunner(OrtRunner):
    """An ORT session with the QNN EP. ``cache_hit``, ``cache_entry``, ``create_s`` describe its creation."""

    _qnn_csv = None
    _qnn_csv_text = None

    def __init__(self, sess, device, nodes, precision, provider_options, cache_hit=False, cache_entry=None, create_s=None, profile=None):
        import onnxruntime as ort

        super().__init__(
            sess,
            device,
            {EP_NAME: device.id, "CPUExecutionProvider": "onnxruntime:cpu"},
            ort.RunOptions(),
            profile_dir=None if profile is None else profile.dir,
        )
        self.device_id = device.id
        if nodes is not None:
            self.nodes = tuple(nodes)
        self.precision = precision
        self.provider_options = dict(provider_options)
        self.cache_hit = cache_hit
        self.cache_entry = cache_entry
        self.create_s = create_s
        self._qnn_csv = None if profile is None else profile.csv
        self._qnn_csv_start = 0 if profile is None else profile.start
        self._qnn_times = None

    def fallback_nodes(self):
        return [n for n in self.nodes if n.device_id != self.device_id]

    def op_times(self):
        """Per-op times over every run since load (warm-ups included), or None without ``profile=True``.

        Nodes ORT ran outside the NPU come from ORT's profiler. The NPU part comes from the QNN EP's
        CSV when it has per-op events (``profiling_level="detailed"``, the default under
        ``profile=True``; the HTP simulator writes them too): one entry per QNN op with
        ``device_id`` = this device. QNN counts HTP cycles per op, so an op's ``total_s`` is its
        share of the cycles times the accelerator's execute time QNN reports beside them. QNN names
        an op after the node of ORT's graph it was built from (``relu0``, ``conv0_token_1``,
        ``matmul0/MatMulAddFusion_2`` from ``matmul0/MatMulAddFusion``); ``op_type`` is that node's
        (see ``nodes``), else the QNN op's own name (the graph's ``Input``/``Output`` staging).
        Without per-op events (``profiling_level="basic"``, or a CSV that cannot be read, logged)
        the NPU part is ORT's: one fused node per QNN partition.

        As with :meth:`OrtRunner.op_times`, the first call ends the profile and later calls return
        the same totals.
        """
        ort_times = super().op_times()
        if ort_times is None:
            return None
        with self._profile_lock:
            if self._qnn_times is None:
                self._qnn_times = self._merge(ort_times)
            return self._qnn_times

    def _profile_ended(self):
        # Read with ORT's profile, before its folder (which holds the CSV) is removed; QNN keeps
        # appending for later runs, which op_times() no longer counts.
        try:
            with open(self._qnn_csv, "rb") as f:
                data = f.read()
            self._qnn_csv_text = (data[self._qnn_csv_start :] if len(data) >= self._qnn_csv_start else data).decode("utf-8", "replace")
        except OSError as exc:
            self._qnn_csv_text = None
            log.warning("the QNN profile %s could not be read (%s); reporting ORT's per-partition times", self._qnn_csv, exc)

    def _merge(self, ort_times):
        ops = None
        if self._qnn_csv_text:
            try:
                ops = parse_qnn_profile(self._qnn_csv_text.splitlines(), self.device_id, {n.node: n.op_type for n in self.nodes})
            except csv.Error as exc:
                log.warning("the QNN profile %s could not be parsed (%s); reporting ORT's per-partition times", self._qnn_csv, exc)
        if not ops:
            return ort_times
        out, placed = [], False
        for t in ort_times:
            if t.device_id != self.device_id:
                out.append(t)
            elif not placed:  # the QNN ops take the place of the first fused QNN partition
                out.extend(ops)
                placed = True
        if not placed:
            out.extend(ops)
        return tuple(out)


_OP_ID = re.compile(r"^(?P<name>.*?)(?::| )OpId_\d+$")
_SUFFIX = re.compile(r"(_token)?_\d+$")


def _qnn_op_type(name: str, onnx_ops) -> str:
    """The op type of a QNN op: that of the ORT node it was built from (QNN names an op after its
    node, at times with a ``_<n>`` suffix), else its own name without suffixes."""
    for candidate in (name, _SUFFIX.sub("", name), name.split("/", 1)[0], _SUFFIX.sub("", name.split("/", 1)[0])):
        if candidate in onnx_ops:
            return onnx_ops[candidate]
    return _SUFFIX.sub("", name.rsplit("/", 1)[-1]) or name


def parse_qnn_profile(lines, device_id: str, onnx_ops=None) -> tuple[OpTime, ...]:
    """Per-op totals from the QNN EP's profiling CSV (``profiling_level="detailed"``).

    Columns: ``Msg Timestamp, Message, Time, Unit of Measurement, Timing Source, Event Level,
    Event Identifier``. Rows with Message ``NODE`` are the ops of an execute (``<name>:OpId_<n>
    (cycles)``, ``Input OpId_<n> (cycles)``); times in cycles are converted with the
    ``Accelerator (execute) time`` the same executes report in microseconds and in cycles. Empty
    when the file has no per-op events (``basic`` level) or no way to turn cycles into time.
    ``onnx_ops`` maps ONNX node names to op types (see :meth:`QnnRunner.op_times`).
    """
    onnx_ops = onnx_ops or {}
    cycles: dict[str, list] = {}
    micros: dict[str, list] = {}
    acc_cycles = acc_us = 0.0
    for row in csv.reader(lines):
        if len(row) < 7 or row[0].startswith("Msg"):
            continue
        message, value, unit, ident = row[1].strip(), row[2].strip(), row[3].strip().upper(), row[6].strip()
        try:
            value = float(value)
        except ValueError:
            continue
        if message == "NODE":
            ident = ident[: -len("(cycles)")].strip() if ident.endswith("(cycles)") else ident
            m = _OP_ID.match(ident)
            name = m.group("name") if m else ident
            bucket = cycles if unit == "CYCLES" else micros if unit == "US" else None
            if bucket is not None:
                slot = bucket.setdefault(name, [0.0, 0])
                slot[0] += value
                slot[1] += 1
        elif ident == "Accelerator (execute) time (cycles)" and unit == "CYCLES":
            acc_cycles += value
        elif ident == "Accelerator (execute) time" and unit == "US":
            acc_us += value
    out = []
    if cycles and acc_cycles > 0 and acc_us > 0:
        s_per_cycle = acc_us * 1e-6 / acc_cycles
        out += [OpTime(n, _qnn_op_type(n, onnx_ops), c * s_per_cycle, k, device_id) for n, (c, k) in cycles.items()]
    out += [OpTime(n, _qnn_op_type(n, onnx_ops), us * 1e-6, k, device_id) for n, (us, k) in micros.items() if n not in cycles]
    return tuple(out)


class _Refused(QnnRunner):
    """What ``load`` returns under ``require=`` when nodes would fall back: no session, only the node list.

    Placement sees the fallback nodes, refuses the device with each node's reason, and closes it.
    """

    def __init__(self, device, nodes, precision, po):
        self._sess = None
        self.device_id = device.id
        self.inputs = self.outputs = ()
        self.nodes = tuple(nodes)
        self.precision = precision
        self.provider_options = dict(po)
        self.cache_hit, self.cache_entry, self.create_s = False, None, None

    def run(self, feeds, output_names=None):
        raise BackendError("this QNN session was refused by placement")


@edgesdk.hookimpl
def edgesdk_backends():
    return [QnnBackend()]


@edgesdk.hookimpl
def edgesdk_quantize_targets():
    from ._cli import NpuQuantizeTarget  # imported here: the quantize CLI is not needed to run models

    return [NpuQuantizeTarget()]
