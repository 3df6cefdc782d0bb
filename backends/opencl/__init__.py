"""OpenCL GPU backend: GGUF language models on any OpenCL device (Adreno, Mali, Intel, NVIDIA, AMD).

Every platform/device pyopencl finds is listed with its real OpenCL type, driver, platform and memory.
GPU-type devices are ``kind="gpu"``; a CPU-type device (PoCL, which gives CPU-only machines and CI a
real OpenCL implementation) is reported as the CPU it is and ``simulated``: placement uses it only
when asked by name (``prefer=("opencl",)``, ``require="opencl:0.0"``), so it never displaces the
native CPU backend and its timings are never read as a GPU's.

The LLM runs through :class:`edgesdk.llm.LLM` with this backend's forward pass
(:class:`._model.ClTransformer`): weights uploaded once as quantized blocks, activations and KV cache
in device buffers, only logits read back. Compiled programs are cached (:mod:`._progcache`) unless
``SessionOptions(artifact_cache=False)``. ``op_times()`` is None: per-kernel OpenCL event profiling
would need an event kept per launch of the fire-and-forget in-order queue, not wired yet.
Options: :class:`OpenCLOptions` via ``SessionOptions(backend_options={"opencl": {...}})``;
``SessionOptions.n_ctx`` applies when ``n_ctx`` is not given there, and ``SessionOptions.kv_dtype``
other than "f32" is refused (the device KV cache is f32).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading

import edgesdk
from edgesdk._errors import BackendError, BackendUnavailable
from edgesdk.backend import Backend, Device, LlmRunner, Support, gguf_refusal

from ._options import DEFAULT_MAX_CTX, OpenCLOptions
from ._probe import discover
from ._progcache import BuildInfo, ProgramCache

__all__ = ["OpenCLBackend", "OpenCLOptions", "OpenCLRunner", "BuildInfo"]

log = logging.getLogger("edgesdk.backends.opencl")

# OpenCL device type -> edgesdk kind. An accelerator-type device (DSPs such as TI's C66x) is the nearest kind.
_KINDS = {"GPU": "gpu", "CPU": "cpu", "ACCELERATOR": "dsp", "CUSTOM": "dsp"}
_SCORES = {"gpu": 60, "dsp": 20, "cpu": 10}


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class OpenCLRunner(LlmRunner):
    """A GGUF language model on an OpenCL device. ``build`` says how its program was obtained
    (compiled now or loaded from the program cache, and how long that took)."""

    def __init__(self, llm, device_id: str, build: BuildInfo):
        super().__init__(llm, device_id)
        self.build = build

    def device_memory(self) -> int:
        """The device buffers this model allocated: quantized weights and the KV cache."""
        return self.llm.model.weight_bytes + self.llm.cache.nbytes


class OpenCLBackend(Backend):
    name = "opencl"
    formats = ("gguf",)
    caches_artifacts = True  # program binaries (._progcache), unless SessionOptions(artifact_cache=False)

    def __init__(self):
        self.notes: list[str] = []
        self._probed: dict[str, dict] = {}  # device id -> what discovery reported
        self._cl_devices: dict[str, object] = {}
        self._runtimes: dict[tuple, object] = {}
        self._lock = threading.RLock()  # runtime() holds it while _cl_device() enumerates

    def probe(self):
        # Presence checks without importing: pyopencl (and the drivers it loads) stay out of this
        # process until a model is loaded on an OpenCL device (see _probe).
        for mod, why in (
            ("pyopencl", "pyopencl is not installed: pip install edgesdk[opencl]"),
            ("gguf", "the opencl backend needs the gguf package"),
            ("tokenizers", "the opencl backend needs the tokenizers package"),
        ):
            if not _importable(mod):
                raise BackendUnavailable(why)
        answer = discover()
        self.notes.extend(answer.get("notes", ()))
        if "unavailable" in answer:
            raise BackendUnavailable(answer["unavailable"])
        self.version = answer["version"]
        out = []
        for d in answer["devices"]:
            did = f"opencl:{d['platform_index']}.{d['device_index']}"
            ctype = d["opencl_type"]
            kind = _KINDS.get(ctype, "gpu")
            simulated = ctype == "CPU"
            details = {
                k: str(d[k])
                for k in ("opencl_type", "platform", "platform_version", "vendor", "driver", "opencl", "compute_units", "max_work_group", "local_mem")
            }
            name = f"{d['device_name']} ({d['platform'].strip()}, OpenCL {ctype})"
            self._probed[did] = d
            out.append(
                Device(
                    self.name,
                    did,
                    kind,
                    name,
                    d["global_mem"],
                    _SCORES[kind],
                    simulated=simulated,
                    capabilities={"fp32", "int8", "int4", "llm"},
                    details=details,
                )
            )
            if simulated:
                self.notes.append(
                    f"{did} is an OpenCL implementation on the CPU ({d['platform'].strip()}): outputs are real, timings are not a GPU's; used only when named"
                )
        return out

    def _cl_device(self, device_id: str):
        """The pyopencl device of ``device_id``, enumerated in this process on first use and checked to be
        the one the probe reported (a driver changed meanwhile is an error, not a different device)."""
        with self._lock:
            if device_id not in self._cl_devices:
                import pyopencl as cl

                want = self._probed[device_id]
                try:
                    dev = cl.get_platforms()[want["platform_index"]].get_devices()[want["device_index"]]
                except (IndexError, cl.Error) as exc:
                    raise BackendError(f"{device_id} is gone since the device probe ({exc}); restart the process") from exc
                if dev.name.strip() != want["device_name"] or dev.driver_version != want["driver"]:
                    raise BackendError(
                        f"{device_id} is now {dev.name.strip()!r} (driver {dev.driver_version}), not the probed "
                        f"{want['device_name']!r} (driver {want['driver']}); restart the process"
                    )
                self._cl_devices[device_id] = dev
            return self._cl_devices[device_id]

    def _options(self, options) -> OpenCLOptions:
        try:
            return OpenCLOptions.from_value(options.options_for(self.name) or None if options is not None else None)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"invalid opencl backend options: {exc}") from exc

    def check(self, model, device, options):
        if model.format not in self.formats:
            return Support.refuse(f"format {model.format!r} not supported (opencl backend runs GGUF)")
        try:
            oo = self._options(options)
        except BackendError as exc:
            return Support.refuse(str(exc))
        if oo.device is not None and oo.device != device.id:
            return Support.refuse(f"backend option device={oo.device!r} names another OpenCL device")
        kv_dtype = getattr(options, "kv_dtype", None)
        if kv_dtype not in (None, "f32"):
            # Refused, so placement falls back to a backend that stores the KV cache as asked.
            return Support.refuse(f"kv_dtype={kv_dtype!r}: the opencl KV cache is f32 only")
        if getattr(options, "adapters", None):
            # Refused, so placement falls back to the cpu backend, whose forward pass applies them.
            return Support.refuse("LoRA adapters are not implemented by the opencl forward pass (the cpu backend applies them)")
        from ._transformer import IMPLEMENTS
        from ._runtime import FORMATS

        why = gguf_refusal(model, computes=FORMATS, implements=IMPLEMENTS)
        return Support.refuse(why) if why else Support(ok=True)

    def runtime(self, device_id: str, oo: OpenCLOptions):
        """The shared context/queue/program of a device (built once per process and cache setting)."""
        from ._runtime import ClRuntime

        key = (device_id, oo.program_cache, oo.cache_dir)
        with self._lock:
            rt = self._runtimes.get(key)
            if rt is None:
                rt = ClRuntime(self._cl_device(device_id), ProgramCache(oo.cache_dir) if oo.program_cache else None)
                self._runtimes[key] = rt
        return rt

    def runtime_for(self, device_id: str, oo: OpenCLOptions, options=None):
        """The runtime a load with ``options`` uses: the shared one of :meth:`runtime`, or under
        ``SessionOptions(artifact_cache=False)`` a private one compiled from source, so that the
        program cache is neither read nor written and nothing compiled is kept, in this process or
        on disk (a cold load, as ``edgesdk bench`` measures it). A backend option cannot turn the
        cache back on: the session-wide ask wins."""
        if getattr(options, "artifact_cache", True):
            return self.runtime(device_id, oo)
        from ._runtime import ClRuntime

        return ClRuntime(self._cl_device(device_id), None)

    def load(self, model, device, options):
        from edgesdk.llm import LLM

        from ._transformer import ClTransformer

        oo = self._options(options)
        rt = self.runtime_for(device.id, oo, options)
        # The backend's own option is the more specific ask, so it wins over SessionOptions.n_ctx.
        n_ctx = oo.n_ctx if oo.n_ctx is not None else getattr(options, "n_ctx", None)
        llm = LLM(
            model.path, n_ctx=n_ctx, model_factory=lambda g: ClTransformer(g, rt, prefill_chunk=oo.prefill_chunk, max_ctx=None if n_ctx else DEFAULT_MAX_CTX)
        )
        log.info(
            "loaded %s on %s (%s): %.1f MiB of weights, %.1f MiB KV cache; program %s in %.3f s",
            model.path,
            device.id,
            device.name,
            llm.model.weight_bytes / 2**20,
            llm.cache.nbytes / 2**20,
            rt.build_info.how,
            rt.build_info.seconds,
        )
        return OpenCLRunner(llm, device.id, rt.build_info)


@edgesdk.hookimpl
def edgesdk_backends():
    return [OpenCLBackend()]
