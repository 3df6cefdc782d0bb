"""Native CPU backend: runs GGUF LLMs with numpy and the cffi INT4/INT8 kernels (edgesdk.llm).

Backend options (``SessionOptions(backend_options={"cpu": {...}})``): ``n_ctx`` (KV-cache length,
default: the model's training context; pages are committed only as the cache fills), ``impl``
("kernels" or "numpy"; default follows ``EDGESDK_KERNELS``) and ``activations`` ("int8", the
default, quantizes activations per 32-block like llama.cpp; "f32" is exact and slower).
"""

from __future__ import annotations

import logging

import numpy as np

import edgesdk
from edgesdk._errors import BackendUnavailable, GenerationError
from edgesdk._sysinfo import cpu_count, cpu_name, total_memory
from edgesdk.backend import Backend, Device, Runner, Support, TensorSpec

log = logging.getLogger("edgesdk.backends.cpu")

_OPTIONS = ("n_ctx", "impl", "activations")


class CpuLlmRunner(Runner):
    """A GGUF language model on the CPU.

    ``run({"input_ids": int64[1, n]})`` returns ``{"logits": float32[1, n, vocab]}`` computed in a
    scratch KV cache (the conversation cache used by ``generate`` is untouched).
    ``generate``/``generate_stream`` take :class:`edgesdk.llm.GenerationConfig` fields as keywords.
    """

    def __init__(self, llm, device_id: str):
        self.llm = llm
        vocab = llm.tokenizer.vocab_size
        self.inputs = (TensorSpec("input_ids", (1, "sequence"), np.int64),)
        self.outputs = (TensorSpec("logits", (1, "sequence", vocab), np.float32),)
        self.device_id = device_id

    def run(self, feeds, output_names=None):
        ids = np.asarray(feeds["input_ids"])
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise GenerationError(f"input_ids must have shape [1, n], got {list(ids.shape)}")
        return {"logits": self.llm.logits(ids[0])[None]}

    def generate(self, prompt, **kwargs) -> str:
        return self.llm.generate(prompt, **kwargs)

    def generate_stream(self, prompt, **kwargs):
        return self.llm.generate_stream(prompt, **kwargs)

    def perplexity(self, text: str, n_ctx: int = 512, max_chunks: int | None = None):
        return self.llm.perplexity(text, n_ctx=n_ctx, max_chunks=max_chunks)

    @property
    def tokenizer(self):
        return self.llm.tokenizer

    @property
    def last_stats(self):
        """:class:`edgesdk.llm.GenerationStats` of the latest generation (None before the first)."""
        return self.llm.last_stats

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        return self.llm.apply_chat_template(messages, add_generation_prompt)

    def reset(self) -> None:
        self.llm.reset()

    def close(self) -> None:
        self.llm.close()


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
        from edgesdk.llm._gguf import ARCHITECTURES, SUPPORTED_TENSOR_TYPES

        arch = model.info.get("architecture")
        if arch is not None and arch not in ARCHITECTURES:
            return Support.refuse(f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
        bad = sorted(set(model.info.get("tensor_types", ())) - set(SUPPORTED_TENSOR_TYPES))
        if bad:
            return Support.refuse(f"tensor types {', '.join(bad)} are not supported (supported: {', '.join(SUPPORTED_TENSOR_TYPES)})")
        return Support(ok=True)

    def load(self, model, device, options):
        from edgesdk.llm import LLM

        opts = options.options_for(self.name) if options is not None else {}
        unknown = sorted(set(opts) - set(_OPTIONS))
        if unknown:
            raise GenerationError(f"unknown cpu backend option(s) {', '.join(unknown)}; valid: {', '.join(_OPTIONS)}")
        threads = getattr(options, "threads", None)
        llm = LLM(model.path, n_ctx=opts.get("n_ctx"), threads=threads, impl=opts.get("impl"), activations=opts.get("activations", "int8"))
        log.info("loaded %s (%s, %d layers) with impl=%s", model.path, llm.config.arch.name, llm.config.n_layer, llm.impl)
        return CpuLlmRunner(llm, device.id)


@edgesdk.hookimpl
def edgesdk_backends():
    return [CpuBackend()]
