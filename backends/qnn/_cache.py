"""Compiled-artifact cache for QNN context binaries (ONNX Runtime EPContext models).

An entry is a directory named by the key (model sha256 + ORT/EP/QNN SDK versions + provider options +
input shapes + device) holding the EPContext model, its ``*_qnn.bin`` context binary and a manifest
with the sha256 of both. An entry is used only when the manifest parses, names the same key and
every file hashes to the recorded value; otherwise it is deleted and rebuilt. Entries are built in a
staging directory beside the final one and renamed into place, and a lookup reads every file through
one open directory, so neither a crash nor a concurrent commit shows a reader half an entry (see
:mod:`edgesdk._cache`, which also bounds the folder's size and sweeps what killed writers left).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import attrs

from edgesdk._cache import EntryStore, discard, open_dir, pin, same_entry, touch
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
    with open(path, "rb") as f:
        return _sha256(f, chunk)


def _sha256(f, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
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
        self._store = EntryStore(self.root)

    @staticmethod
    def make_key(parts: Mapping[str, Any]) -> str:
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:40]

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None (missing; a bad entry is removed and logged)."""
        d = self.entry_dir(key)
        try:
            view = open_dir(d)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._unusable(d, None, f"not a readable entry directory ({exc})")
            return None
        with view:
            entry, problem = self._read(view, key)
        if entry is None:
            self._unusable(d, view.stat, problem)
            return None
        touch(d / MANIFEST)
        pin(d)  # the caller loads it after this returns
        return entry

    @staticmethod
    def _unusable(d: Path, seen, problem: str) -> None:
        if seen is not None and not same_entry(d, seen):
            # Replaced or evicted by another process while read: a miss, and the new entry stays.
            log.debug("QNN context cache entry %s changed while read (%s)", d, problem)
            return
        log.warning("QNN context cache entry %s is unusable (%s); rebuilding it", d, problem)
        discard(d, expect=seen)

    @staticmethod
    def _read(view, key: str) -> tuple[CacheEntry | None, str | None]:
        """(entry, None) when the manifest names ``key`` and every file matches its sha256, else (None, why)."""
        try:
            with view.open(MANIFEST) as f:
                man = json.loads(f.read())
        except FileNotFoundError:
            return None, "no manifest"
        except (OSError, ValueError) as exc:
            return None, f"manifest unreadable: {exc}"
        if not isinstance(man, dict) or man.get("format") != _FORMAT or man.get("key") != key:
            return None, "manifest is for another key or format"
        files = man.get("files")
        if not isinstance(files, dict) or CTX_MODEL not in files:
            return None, "manifest lists no context model"
        for name, digest in files.items():
            if Path(name).name != name:
                return None, f"{name} is missing"
            try:
                with view.open(name) as f:
                    got = _sha256(f)
            except OSError:
                return None, f"{name} is missing"
            if got != digest:
                return None, f"{name} does not match its recorded sha256 (corrupt or modified)"
        d = view.path
        return CacheEntry(d, d / CTX_MODEL, tuple(tuple(n) for n in man.get("nodes", ())), man.get("meta", {})), None

    def staging_dir(self) -> Path:
        """A fresh directory, on the same filesystem as the entries, to build a new entry in."""
        return self._store.staging_dir()

    def commit(self, staging: Path, key: str, nodes, meta: Mapping[str, Any]) -> CacheEntry | None:
        """Hash the built files, write the manifest and move ``staging`` into place as the entry. When
        another process committed a good entry for ``key`` first, that one is kept and returned."""
        files = {f.name: sha256_file(f) for f in sorted(staging.iterdir()) if f.is_file() and f.name != MANIFEST}
        if CTX_MODEL not in files:
            self.remove(staging)
            return None
        man = {"format": _FORMAT, "key": key, "files": files, "nodes": [list(n) for n in nodes], "meta": dict(meta)}
        atomic_write_bytes(staging / MANIFEST, json.dumps(man, indent=1, default=str).encode())
        theirs: list[CacheEntry] = []

        def usable(final: Path) -> bool:
            try:
                with open_dir(final) as view:
                    entry = self._read(view, key)[0]
            except OSError:
                return False
            if entry is not None:
                theirs.append(entry)
            return entry is not None

        final = self._store.commit_dir(staging, self.entry_dir(key), usable)
        if final is None:
            return None
        pin(final)
        self._store.committed(final)
        return theirs[0] if theirs else CacheEntry(final, final / CTX_MODEL, tuple(tuple(n) for n in nodes), meta)

    @staticmethod
    def remove(d: Path) -> None:
        """Delete an entry or a staging directory (renamed aside first: readers see all of it or none)."""
        discard(d)
