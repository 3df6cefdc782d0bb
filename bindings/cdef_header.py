"""Shared by the cffi build scripts: a C header as text that ``FFI.cdef()`` accepts."""

from pathlib import Path


def cdef_from_header(path: Path) -> str:
    """The header's lines with /* ... */ comments dropped (cdef takes plain declarations)."""
    out, skip = [], False
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if s.startswith("/*"):
            skip = not s.endswith("*/")
            continue
        if skip:
            skip = not s.endswith("*/")
            continue
        out.append(line.split("/*")[0])
    return "\n".join(out)
