"""llama.cpp (llama-cpp-python) as the reference: the one constructor tests and benchmarks use, and
the llama.cpp server the hybrid tests start (``python tests/llama_ref.py --model ...`` runs
``llama_cpp.server`` with the same setting).

llama.cpp's "extra buffer types" (weights repacked at load for AMX / AVX-512 kernels) crash
llama-cpp-python 0.3.36 with SIGSEGV in ``llama_decode`` on Intel CPUs with AMX (a Sapphire Rapids VM
here): SmolLM2 Q4_1, Gemma 3 270M Q4_K_M and a tiny Q4_K_M test model all fault. A segfault takes the
whole test run (or the server) with it, so they are turned off: the plain CPU buffers compute the same
products. ``Llama()`` has no keyword for it, so the default model parameters are adjusted while a
model loads.
"""

from __future__ import annotations

import contextlib
import runpy
import sys
import threading

__all__ = ["extra_buffer_types_off", "llama"]

_lock = threading.RLock()


@contextlib.contextmanager
def extra_buffer_types_off():
    """While inside, every llama.cpp model loaded in this process uses plain CPU buffers."""
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
            yield
        finally:
            low.llama_model_default_params = default


def llama(**kw):
    """``llama_cpp.Llama(**kw)`` with llama.cpp's extra (repacked-weight) buffer types off."""
    import llama_cpp

    with extra_buffer_types_off():
        return llama_cpp.Llama(**kw)


if __name__ == "__main__":  # llama_cpp.server, its arguments unchanged
    sys.argv[0] = "llama_cpp.server"
    with extra_buffer_types_off():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
