"""Native CPU backend: runs GGUF LLMs with numpy and the cffi INT4/INT8 kernels (edgesdk.llm).

Backend options: :class:`CpuOptions` via ``SessionOptions(backend_options={"cpu": {...}})``.
``SessionOptions.n_ctx`` and ``SessionOptions.kv_dtype`` apply when the cpu options leave them unset.

``SessionOptions.adapters`` (name -> GGUF LoRA file) are loaded beside the model and checked
against it at load; ``generate(..., adapter="name", adapter_scale=1.0)`` picks one per request.
"""

from __future__ import annotations

import logging

import edgesdk
from edgesdk._errors import BackendUnavailable, GenerationError
from edgesdk._sysinfo import cpu_count, cpu_name, total_memory
from edgesdk.backend import Backend, Device, LlmRunner, Support, gguf_refusal

from ._options import CpuOptions

__all__ = ["CpuBackend", "CpuLlmRunner", "CpuOptions"]

log = logging.getLogger("edgesdk.backends.cpu")


class CpuLlmRunner(LlmRunner):
    """A GGUF language model on the CPU (the runner surface is :class:`edgesdk.llm.LlmRunner`'s).

    ``op_times()`` is None: the forward pass (one fused C loop per token, or numpy) records no per-op times.
    """


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

        co = _options(options)
        # The backend's own option is the more specific ask, so it wins over the generic field.
        n_ctx = _given(co.n_ctx, getattr(options, "n_ctx", None))
        kv_dtype = _given(co.kv_dtype, getattr(options, "kv_dtype", None))
        llm = LLM(
            model.path,
            n_ctx=n_ctx,
            threads=getattr(options, "threads", None),
            impl=co.impl,
            activations=co.activations,
            kv_dtype=kv_dtype,
            adapters=getattr(options, "adapters", None),
        )
        log.info(
            "loaded %s (%s, %d layers) with impl=%s, kv_dtype=%s, adapters: %s",
            model.path,
            llm.config.arch.name,
            llm.config.n_layer,
            llm.impl,
            llm.kv_dtype,
            ", ".join(llm.adapters) or "none",
        )
        return CpuLlmRunner(llm, device.id)


def _given(*values):
    return next((v for v in values if v is not None), None)


def _options(options) -> CpuOptions:
    try:
        return CpuOptions.from_value((options.options_for("cpu") or None) if options is not None else None)
    except (TypeError, ValueError) as exc:
        raise GenerationError(f"invalid cpu backend options: {exc}") from exc


@edgesdk.hookimpl
def edgesdk_backends():
    return [CpuBackend()]
