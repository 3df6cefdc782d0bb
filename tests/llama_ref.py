"""llama.cpp (llama-cpp-python) as the reference: the one constructor tests and benchmarks use.

llama.cpp's "extra buffer types" (weights repacked at load for AMX / AVX-512 kernels) crash
llama-cpp-python 0.3.36 with SIGSEGV in ``llama_decode`` on Intel CPUs with AMX (a Sapphire Rapids VM
here): a tiny Q4_K_M test model and Gemma 3 270M Q4_K_M both fault, with or without the OS granting
AMX. A segfault would take the whole test run with it, so they are turned off: the plain CPU buffers
compute the same products. ``Llama()`` has no keyword for it, so the default model parameters are
adjusted while the model loads.
"""

from __future__ import annotations

import threading

__all__ = ["llama"]

_lock = threading.Lock()


def llama(**kw):
    """``llama_cpp.Llama(**kw)`` with llama.cpp's extra (repacked-weight) buffer types off."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def params():
        p = default()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    with _lock:  # the patch is process-wide while it lasts
        low.llama_model_default_params = params
        try:
            return llama_cpp.Llama(**kw)
        finally:
            low.llama_model_default_params = default
