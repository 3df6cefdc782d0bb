"""cffi build script for ``edgesdk._cllm``, the fused LLM forward (out-of-line API mode).

Separate from ``build_kernels.py`` on purpose: it has no link-time dependency on the kernels; the
matmul is handed over at run time as a function pointer (``edgesdk._ckernels.ek_matmul``).
setup.py builds it with the install (``pip install -e .``); ``python bindings/build_llm.py`` builds
into bindings/_build only, to check that it compiles. Without it edgesdk runs the same model with
numpy around the kernels.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # setuptools runs this file by path: make its sibling importable
from cdef_header import cdef_from_header  # noqa: E402


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    return ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall"] + shlex.split(os.environ.get("EDGESDK_CFLAGS", ""))


def _source() -> str:
    src = HERE / "llm_decode.c"
    cwd = Path.cwd()
    return str(src.relative_to(cwd)) if src.is_relative_to(cwd) and __name__ != "__main__" else str(src)


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(HERE / "llm_decode.h"))
ffibuilder.set_source(
    "edgesdk._cllm",
    '#include "llm_decode.h"\n',
    sources=[_source()],
    include_dirs=[str(HERE)],
    extra_compile_args=_compile_args(),
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    # Not into edgesdk/: a version-tagged .so there would shadow the abi3 one setup.py builds.
    print(ffibuilder.compile(tmpdir=str(HERE / "_build"), verbose=True))
