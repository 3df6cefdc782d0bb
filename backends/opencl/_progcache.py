"""Compiled OpenCL program binaries, cached on disk so a second Session skips the OpenCL C compiler.

Key: sha256 of (device name and vendor, device/driver/platform versions, build options, kernel source).
An entry is one file: a header line (format, key, size and sha256 of the binary) then the binary.
It is used only when the header names the same key and the binary hashes to the recorded digest,
and only if the driver then accepts it (``clBuildProgram`` on a binary can still fail, e.g. after a
driver update that kept its version string); otherwise it is deleted and the program rebuilt from
source. Entries are written to a temporary file and renamed into place (:func:`edgesdk._cache.writing`),
so a reader gets one whole file, old or new; the folder's size bound, LRU order and the sweep of what
killed writers left are :mod:`edgesdk._cache`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import attrs

from edgesdk._cache import EntryStore, discard, same_entry, touch, writing
from edgesdk._errors import BackendError
from edgesdk._io import cache_dir

__all__ = ["BuildInfo", "ProgramCache", "build_program", "program_key"]

log = logging.getLogger("edgesdk.backends.opencl.cache")

_MAGIC = b"EDGESDK-CLBIN 1\n"


@attrs.frozen
class BuildInfo:
    """How a program was obtained: ``source`` (compiled now), ``cache`` (binary loaded) and how long it took."""

    how: str
    seconds: float
    key: str
    entry: str | None = None
    note: str | None = None


def program_key(device, options: str, source: str) -> str:
    plat = device.platform
    parts = {
        "device": device.name,
        "vendor": device.vendor,
        "device_version": device.version,
        "driver": device.driver_version,
        "platform": plat.name,
        "platform_version": plat.version,
        "options": options,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ProgramCache:
    def __init__(self, root: Path | str | None = None):
        self.root = cache_dir("opencl", root)
        self._store = EntryStore(self.root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.clbin"

    def load(self, key: str) -> bytes | None:
        """The verified binary for ``key``, or None (missing; an unusable entry is removed and logged)."""
        p = self.path(key)
        try:
            with open(p, "rb") as f:
                seen = os.fstat(f.fileno())
                blob = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("OpenCL program cache entry %s is unreadable (%s); rebuilding it", p, exc)
            return None
        problem, binary = _parse(blob, key)
        if problem is None:
            touch(p)
            return binary
        if same_entry(p, seen):  # else a writer replaced it meanwhile; the new file is checked when read
            log.warning("OpenCL program cache entry %s is unusable (%s); rebuilding it", p, problem)
            discard(p, expect=seen)
        return None

    def store(self, key: str, binary: bytes) -> Path | None:
        head = json.dumps({"key": key, "size": len(binary), "sha256": hashlib.sha256(binary).hexdigest()}).encode()
        p = self.path(key)
        try:
            with writing(p) as f:
                f.write(_MAGIC + head + b"\n" + binary)
        except OSError as exc:  # a read-only or full cache disk costs speed, not correctness
            log.warning("could not store OpenCL program binary %s: %s", p, exc)
            return None
        self._store.committed(p)
        return p

    def remove(self, key: str) -> None:
        discard(self.path(key))


def _parse(blob: bytes, key: str) -> tuple[str | None, bytes]:
    if not blob.startswith(_MAGIC):
        return "not a program cache file", b""
    head, sep, binary = blob[len(_MAGIC) :].partition(b"\n")
    try:
        meta = json.loads(head) if sep else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        return "header unreadable", b""
    if meta.get("key") != key:
        return "entry is for another key", b""
    if meta.get("size") != len(binary) or meta.get("sha256") != hashlib.sha256(binary).hexdigest():
        return "binary does not match its recorded size/sha256 (truncated or corrupt)", b""
    return None, binary


def build_program(ctx, device, source: str, options: str, cache: ProgramCache | None):
    """A built ``pyopencl.Program`` for ``device``, from the cache when a valid binary is there."""
    import pyopencl as cl

    key = program_key(device, options, source)
    t0 = time.perf_counter()
    binary = cache.load(key) if cache is not None else None
    note = None
    if binary is not None:
        try:
            prg = cl.Program(ctx, [device], [binary]).build(options=options)
            return prg, BuildInfo("cache", time.perf_counter() - t0, key, str(cache.path(key)))
        except Exception as exc:
            note = f"cached binary rejected by the driver ({type(exc).__name__}); rebuilt from source"
            log.warning("OpenCL program cache entry %s: %s", cache.path(key), note)
            cache.remove(key)
    # pyopencl's own source cache is bypassed: this cache is the one keyed and verified as documented.
    raw = cl._cl._Program(ctx, source)
    try:
        raw.build(options.encode(), [device])
    except Exception as exc:
        try:
            blog = raw.get_build_info(device, cl.program_build_info.LOG)
        except Exception:
            blog = ""
        raise BackendError(f"OpenCL C build failed on {device.name}: {exc}\n{blog}".strip()) from exc
    prg = cl.Program(raw)
    entry = None
    if cache is not None:
        binaries = raw.get_info(cl.program_info.BINARIES)
        if binaries and binaries[0]:
            entry = cache.store(key, bytes(binaries[0]))
    return prg, BuildInfo("source", time.perf_counter() - t0, key, str(entry) if entry else None, note)
