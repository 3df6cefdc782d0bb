"""cffi build script for ``edgesdk._cllm``, the fused LLM forward (out-of-line API mode).

Separate from ``build_kernels.py`` on purpose: it has no link-time dependency on the kernels; the
matmul is handed over at run time as a function pointer (``edgesdk._ckernels.ek_matmul``). It
compiles its own copy of the CPU feature detection (ek_cpu.c), so its SIMD code checks the CPU
itself. setup.py builds it with the install (``pip install -e .``); ``python bindings/build_llm.py``
builds into bindings/_build only, to check that it compiles. Without it edgesdk runs the same
model with numpy around the kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # setuptools runs this file by path: make its sibling importable
from cffi_common import cdef_from_header, compile_args, link_args, source_paths  # noqa: E402

ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header("llm_decode.h"))
ffibuilder.set_source(
    "edgesdk._cllm",
    '#include "llm_decode.h"\n',
    sources=source_paths(["llm_decode.c", "ek_cpu.c"]),
    depends=source_paths(["llm_decode.h", "ek_cpu.h", "ek_cpu_api.h"]),
    include_dirs=[str(HERE)],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    # Not into edgesdk/: a version-tagged .so there would shadow the abi3 one setup.py builds.
    print(ffibuilder.compile(tmpdir=str(HERE / "_build"), verbose=True))
