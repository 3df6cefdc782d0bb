"""cffi build script for ``edgesdk._ckernels`` (out-of-line API mode).

Used by setup.py (``cffi_modules``), so ``pip install .`` / ``pip install -e .`` build it.
Flags never include -march=native: ISA-specific code is compiled per function with
target attributes and picked at run time.  EDGESDK_CFLAGS adds flags (e.g. the
AddressSanitizer build in scripts/asan_kernels.sh).
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
SOURCES = ["ekern.c", "ek_x86.c", "ek_neon.c"]
HEADERS = ["ekern.h", "ek_internal.h", "ek_tile_f32.h", "ek_tile_i8.h", "ek_tile256.h"]


def _compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-O3", "-std=gnu11", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    args += shlex.split(os.environ.get("EDGESDK_CFLAGS", ""))
    return args


def _paths(names: list[str]) -> list[str]:
    # setuptools wants paths relative to setup.py; the standalone build needs absolute ones
    if Path.cwd() == HERE.parent:  # setup.py's directory
        return [f"{HERE.name}/{s}" for s in names]
    return [str(HERE / s) for s in names]


ffibuilder = FFI()
ffibuilder.cdef(cdef_from_header(HERE / "ekern.h"))
ffibuilder.set_source(
    "edgesdk._ckernels",
    '#include "ekern.h"\n',
    sources=_paths(SOURCES),
    depends=_paths(HEADERS),  # rebuild on header edits; ships the headers in the sdist
    include_dirs=[str(HERE)],
    extra_compile_args=_compile_args(),
    extra_link_args=["-pthread"] + shlex.split(os.environ.get("EDGESDK_LDFLAGS", "")),
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE / "_build"), verbose=True)
