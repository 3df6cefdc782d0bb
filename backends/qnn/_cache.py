"""Compiled-artifact cache for QNN context binaries (ONNX Runtime EPContext models).

An entry is a directory named by the key (model sha256 + ORT/EP/QNN SDK versions + provider options +
input shapes + device) holding the EPContext model, its ``*_qnn.bin`` context binary and a manifest
with the sha256 of both. An entry is used only when the manifest parses, names the same key and
every file hashes to the recorded value; otherwise it is deleted and rebuilt. Entries are built in a
temporary directory beside the final one and renamed into place, so a crash leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import attrs

from edgesdk._io import atomic_write_bytes, cache_dir

__all__ = ["ContextCache", "CacheEntry", "cache_root", "sha256_file"]

log = logging.getLogger("edgesdk.backends.qnn.cache")

MANIFEST = "manifest.json"
CTX_MODEL = "model_ctx.onnx"
_FORMAT = 1


def cache_root(override: str | None = None) -> Path:
    """``override``, else ``$EDGESDK_CACHE_DIR/qnn``, else ``$XDG_CACHE_HOME/edgesdk/qnn`` (``~/.cache``)."""
    return cache_dir("qnn", override)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@attrs.frozen
class CacheEntry:
    """A verified cache entry: the EPContext model to load and what was recorded when it was built."""

    path: Path
    model: Path
    nodes: tuple[tuple[str, str, str, str | None], ...]  # (node, op_type, device_id, reason)
    meta: Mapping[str, Any] = attrs.field(factory=dict, eq=False)


class ContextCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def make_key(parts: Mapping[str, Any]) -> str:
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:40]

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None (missing; a bad entry is removed and logged)."""
        d = self.entry_dir(key)
        if not d.exists():
            return None
        problem = self._verify(d, key)
        if problem is None:
            man = json.loads((d / MANIFEST).read_text())
            nodes = tuple(tuple(n) for n in man.get("nodes", ()))
            return CacheEntry(d, d / CTX_MODEL, nodes, man.get("meta", {}))
        log.warning("QNN context cache entry %s is unusable (%s); rebuilding it", d, problem)
        self.remove(d)
        return None

    def _verify(self, d: Path, key: str) -> str | None:
        try:
            man = json.loads((d / MANIFEST).read_text())
        except FileNotFoundError:
            return "no manifest"
        except (OSError, ValueError) as exc:
            return f"manifest unreadable: {exc}"
        if not isinstance(man, dict) or man.get("format") != _FORMAT or man.get("key") != key:
            return "manifest is for another key or format"
        files = man.get("files")
        if not isinstance(files, dict) or CTX_MODEL not in files:
            return "manifest lists no context model"
        for name, digest in files.items():
            f = d / name
            if Path(name).name != name or not f.is_file():
                return f"{name} is missing"
            if sha256_file(f) != digest:
                return f"{name} does not match its recorded sha256 (corrupt or modified)"
        return None

    def staging_dir(self) -> Path:
        """A fresh directory, on the same filesystem as the entries, to build a new entry in."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))

    def commit(self, staging: Path, key: str, nodes, meta: Mapping[str, Any]) -> CacheEntry | None:
        """Hash the built files, write the manifest and move ``staging`` into place as the entry."""
        files = {f.name: sha256_file(f) for f in sorted(staging.iterdir()) if f.is_file() and f.name != MANIFEST}
        if CTX_MODEL not in files:
            self.remove(staging)
            return None
        man = {"format": _FORMAT, "key": key, "files": files, "nodes": [list(n) for n in nodes], "meta": dict(meta)}
        atomic_write_bytes(staging / MANIFEST, json.dumps(man, indent=1, default=str).encode())
        final = self.entry_dir(key)
        if final.exists():  # another process built it meanwhile; a verified entry of the same key is equivalent
            self.remove(final)
        try:
            os.replace(staging, final)
        except OSError as exc:
            log.warning("could not store QNN context cache entry %s: %s", final, exc)
            self.remove(staging)
            return None
        return CacheEntry(final, final / CTX_MODEL, tuple(tuple(n) for n in nodes), meta)

    @staticmethod
    def remove(d: Path) -> None:
        shutil.rmtree(d, ignore_errors=True)
