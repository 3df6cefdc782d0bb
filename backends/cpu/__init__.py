"""Native CPU backend: runs GGUF LLMs with numpy and the cffi INT4/INT8 kernels (edgesdk.llm).

Backend options (``SessionOptions(backend_options={"cpu": {...}})``): ``n_ctx`` (KV-cache length,
default: the model's training context; pages are committed only as the cache fills), ``impl``
("kernels" or "numpy"; default follows ``EDGESDK_KERNELS``), ``activations`` ("int8", the
default, quantizes activations per 32-block like llama.cpp; "f32" is exact and slower) and
``kv_dtype`` (how the KV cache stores keys/values: "f32", the default; "f16", half the memory;
"q8_0", llama.cpp's 8-bit blocks, 0.27x; LLM validates it).

``SessionOptions.adapters`` (name -> GGUF LoRA file) are loaded beside the model and checked
against it at load; ``generate(..., adapter="name", adapter_scale=1.0)`` picks one per request.
"""

from __future__ import annotations

import logging

import edgesdk
from edgesdk._errors import BackendUnavailable, GenerationError
from edgesdk._sysinfo import cpu_count, cpu_name, total_memory
from edgesdk.backend import Backend, Device, Support
from edgesdk.llm._runner import LlmRunner, gguf_refusal

log = logging.getLogger("edgesdk.backends.cpu")

_OPTIONS = ("n_ctx", "impl", "activations", "kv_dtype")


class CpuLlmRunner(LlmRunner):
    """A GGUF language model on the CPU (the runner surface is :class:`edgesdk.llm.LlmRunner`'s)."""


class CpuBackend(Backend):
    name = "cpu"
    formats = ("gguf",)
    version = edgesdk.__version__

    def probe(self):
        try:
            import gguf  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"the cpu backend needs the gguf and tokenizers packages: {exc}") from exc
        from edgesdk.llm._weights import kernel_impl

        impl = kernel_impl()
        return [
            Device(
                self.name,
                "cpu:0",
                "cpu",
                cpu_name(),
                total_memory(),
                score=40,
                capabilities={"fp32", "int8", "int4", "llm"},
                details={"threads": str(cpu_count()), "impl": impl},
            )
        ]

    def check(self, model, device, options):
        if model.format not in self.formats:
            return Support.refuse(f"format {model.format!r} not supported (cpu backend runs GGUF)")
        why = gguf_refusal(model)
        if why:
            return Support.refuse(why)
        return Support(ok=True)

    def load(self, model, device, options):
        from edgesdk.llm import LLM

        opts = options.options_for(self.name) if options is not None else {}
        unknown = sorted(set(opts) - set(_OPTIONS))
        if unknown:
            raise GenerationError(f"unknown cpu backend option(s) {', '.join(unknown)}; valid: {', '.join(_OPTIONS)}")
        threads = getattr(options, "threads", None)
        llm = LLM(model.path, n_ctx=opts.get("n_ctx"), threads=threads, impl=opts.get("impl"), activations=opts.get("activations", "int8"),
                  kv_dtype=opts.get("kv_dtype", "f32"), adapters=getattr(options, "adapters", None))
        log.info("loaded %s (%s, %d layers) with impl=%s, kv_dtype=%s, adapters: %s", model.path, llm.config.arch.name, llm.config.n_layer,
                 llm.impl, llm.kv_dtype, ", ".join(llm.adapters) or "none")
        return CpuLlmRunner(llm, device.id)


@edgesdk.hookimpl
def edgesdk_backends():
    return [CpuBackend()]
