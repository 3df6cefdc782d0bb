"""cffi build script for ``edgesdk._ckernels`` (out-of-line API mode).

Used by setup.py (``cffi_modules``), so ``pip install .`` / ``pip install -e .`` build it.
``python bindings/build_kernels.py`` builds into bindings/_build only, to check that it compiles.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # setuptools runs this file by path: make its sibling importable
from cffi_common import cdef_from_header, compile_args, link_args, source_paths  # noqa: E402

# The kernel module is every bindings/ek*.c (scripts/neon_selftest.sh builds the same set).
SOURCES = sorted(p.name for p in HERE.glob("ek*.c"))
HEADERS = sorted(p.name for p in HERE.glob("ek*.h"))

ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header("ekern.h", "ek_cpu_api.h"))
ffibuilder.set_source(
    "edgesdk._ckernels",
    '#include "ekern.h"\n#include "ek_cpu_api.h"\n',
    sources=source_paths(SOURCES),
    depends=source_paths(HEADERS),  # rebuild on header edits; ships the headers in the sdist
    include_dirs=[str(HERE)],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE / "_build"), verbose=True)
