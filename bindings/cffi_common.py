"""Shared by the cffi build scripts: header text for ``FFI.cdef()``, source paths, compiler flags.

Flags never include -march=native: ISA-specific code is compiled per function with target
attributes and picked at run time by the features each path needs (ek_cpu.h). EDGESDK_CFLAGS
and EDGESDK_LDFLAGS add flags (e.g. the AddressSanitizer build in scripts/asan_kernels.sh).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cdef_from_header(*names: str) -> str:
    """The headers' lines with /* ... */ comments dropped (cdef takes plain declarations)."""
    out, skip = [], False
    for name in names:
        for line in (HERE / name).read_text().splitlines():
            s = line.strip()
            if s.startswith("/*"):
                skip = not s.endswith("*/")
                continue
            if skip:
                skip = not s.endswith("*/")
                continue
            out.append(line.split("/*")[0])
    return "\n".join(out)


def source_paths(names: list[str]) -> list[str]:
    # setuptools wants paths relative to setup.py; the standalone build needs absolute ones
    if Path.cwd() == HERE.parent:  # setup.py's directory
        return [f"{HERE.name}/{s}" for s in names]
    return [str(HERE / s) for s in names]


def compile_args() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    args = ["-O3", "-std=gnu11", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    return args + shlex.split(os.environ.get("EDGESDK_CFLAGS", ""))


def link_args() -> list[str]:
    return [] if sys.platform == "win32" else ["-pthread"] + shlex.split(os.environ.get("EDGESDK_LDFLAGS", ""))
