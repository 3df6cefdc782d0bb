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

import logging
import threading

import edgesdk
from edgesdk._errors import BackendError, BackendUnavailable
from edgesdk.backend import Backend, Device, LlmRunner, Support, gguf_refusal

from ._options import DEFAULT_MAX_CTX, OpenCLOptions
from ._progcache import BuildInfo, ProgramCache

__all__ = ["OpenCLBackend", "OpenCLOptions", "OpenCLRunner", "BuildInfo"]

log = logging.getLogger("edgesdk.backends.opencl")

# OpenCL device type -> edgesdk kind. An accelerator-type device (DSPs such as TI's C66x) is the nearest kind.
_KINDS = {"GPU": "gpu", "CPU": "cpu", "ACCELERATOR": "dsp", "CUSTOM": "dsp"}
_SCORES = {"gpu": 60, "dsp": 20, "cpu": 10}


def _type_name(cl, dev_type: int) -> str:
    for name in ("GPU", "CPU", "ACCELERATOR", "CUSTOM"):
        if dev_type & getattr(cl.device_type, name):
            return name
    return cl.device_type.to_string(dev_type)


class OpenCLRunner(LlmRunner):
    """A GGUF language model on an OpenCL device. ``build`` says how its program was obtained
    (compiled now or loaded from the program cache, and how long that took)."""

    def __init__(self, llm, device_id: str, build: BuildInfo):
        super().__init__(llm, device_id)
        self.build = build


class OpenCLBackend(Backend):
    name = "opencl"
    formats = ("gguf",)
    caches_artifacts = True  # program binaries (._progcache), unless SessionOptions(artifact_cache=False)

    def __init__(self):
        self.notes: list[str] = []
        self._cl_devices: dict[str, object] = {}
        self._runtimes: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def probe(self):
        try:
            import pyopencl as cl
        except ImportError as exc:
            raise BackendUnavailable(f"pyopencl is not installed ({exc}): pip install edgesdk[opencl]") from exc
        for mod in ("gguf", "tokenizers"):
            try:
                __import__(mod)
            except ImportError as exc:
                raise BackendUnavailable(f"the opencl backend needs the {mod} package: {exc}") from exc
        try:
            platforms = cl.get_platforms()
        except Exception as exc:  # the ICD loader raises PLATFORM_NOT_FOUND_KHR when no driver is registered
            raise BackendUnavailable(f"no OpenCL platform: {exc} (install a GPU driver's OpenCL ICD, or PoCL: pip install edgesdk[opencl])") from exc
        if not platforms:
            raise BackendUnavailable("no OpenCL platform is registered with the ICD loader")
        self.version = cl.VERSION_TEXT
        out = []
        for pi, plat in enumerate(platforms):
            try:
                devices = plat.get_devices()
            except Exception as exc:
                self.notes.append(f"platform {pi} ({plat.name}) lists no devices: {exc}")
                continue
            for di, dev in enumerate(devices):
                did = f"opencl:{pi}.{di}"
                ctype = _type_name(cl, dev.type)
                kind = _KINDS.get(ctype, "gpu")
                simulated = ctype == "CPU"
                details = {
                    "opencl_type": ctype, "platform": plat.name, "platform_version": plat.version, "vendor": dev.vendor,
                    "driver": dev.driver_version, "opencl": dev.version, "compute_units": str(dev.max_compute_units),
                    "max_work_group": str(dev.max_work_group_size), "local_mem": str(dev.local_mem_size),
                }
                name = f"{dev.name.strip()} ({plat.name.strip()}, OpenCL {ctype})"
                self._cl_devices[did] = dev
                out.append(Device(self.name, did, kind, name, int(dev.global_mem_size), _SCORES[kind], simulated=simulated,
                                  capabilities={"fp32", "int8", "int4", "llm"}, details=details))
                if simulated:
                    self.notes.append(f"{did} is an OpenCL implementation on the CPU ({plat.name.strip()}): outputs are real, "
                                      "timings are not a GPU's; used only when named")
        if not out:
            raise BackendUnavailable(f"{len(platforms)} OpenCL platform(s) but no device")
        return out

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
                rt = ClRuntime(self._cl_devices[device_id], ProgramCache(oo.cache_dir) if oo.program_cache else None)
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

        return ClRuntime(self._cl_devices[device_id], None)

    def load(self, model, device, options):
        from edgesdk.llm import LLM

        from ._transformer import ClTransformer

        oo = self._options(options)
        rt = self.runtime_for(device.id, oo, options)
        # The backend's own option is the more specific ask, so it wins over SessionOptions.n_ctx.
        n_ctx = oo.n_ctx if oo.n_ctx is not None else getattr(options, "n_ctx", None)
        llm = LLM(model.path, n_ctx=n_ctx, model_factory=lambda g: ClTransformer(
            g, rt, prefill_chunk=oo.prefill_chunk, max_ctx=None if n_ctx else DEFAULT_MAX_CTX))
        log.info("loaded %s on %s (%s): %.1f MiB of weights, %.1f MiB KV cache; program %s in %.3f s", model.path, device.id,
                 device.name, llm.model.weight_bytes / 2**20, llm.cache.nbytes / 2**20, rt.build_info.how, rt.build_info.seconds)
        return OpenCLRunner(llm, device.id, rt.build_info)


@edgesdk.hookimpl
def edgesdk_backends():
    return [OpenCLBackend()]
