"""Entries of the compiled-artifact caches (QNN context binaries, OpenCL program binaries, the hub's
assembled models, measured placement decisions): atomic commits, readers that never take a torn entry, temporaries of killed
writers cleaned up later, and a least-recently-used size bound.

Layout of a cache folder (``edgesdk._io.cache_dir(name)``):

- an *entry* is a top-level file or directory whose name does not start with ``.``; a file named
  ``<entry>.<suffix>`` beside it (the hub's ``.verified`` sidecar) belongs to that entry;
- names starting with ``.`` are temporaries: ``.<name>.<random>.tmp`` (a file being written, see
  :func:`writing`), ``.build-<random>`` (a directory entry being built, see
  :meth:`EntryStore.staging_dir`) and ``.trash-<random>`` (an entry being deleted).

Commits are renames, so a reader sees the old entry, the new one or none, never half of one. Each
cache also validates what it reads (magic, key, size, sha256) and treats a bad entry as a miss that
is rebuilt. A writer holds an ``flock`` on its temporary while it works; :meth:`EntryStore.sweep`
removes a temporary only when nobody holds that lock *and* it is older than :data:`STALE_AFTER_S`
(the age covers the instant between creating a temporary and locking it, and systems without flock).

The bound: ``EDGESDK_CACHE_MAX_MB`` (MiB, default :data:`DEFAULT_MAX_MB`, ``0`` for none) applies to
each cache folder on its own. After a commit, least-recently-used entries are deleted until the
folder fits; the entry just committed and every entry this process has loaded (:func:`pin`) are kept,
even if that leaves the folder over the bound. Use is recorded by setting an entry's access time
(its modification time is left alone: the hub's sidecar checks it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import attrs

from . import _env
from ._io import _fsync_dir, atomic_open, cache_dir

try:
    import fcntl
except ImportError:  # Windows: temporaries are told apart from live ones by age alone
    fcntl = None

__all__ = [
    "CacheConfigError",
    "CacheReport",
    "DirView",
    "EntryStore",
    "discard",
    "max_bytes",
    "open_dir",
    "pin",
    "report",
    "reports",
    "same_entry",
    "touch",
    "writing",
]

log = logging.getLogger("edgesdk.cache")

MAX_MB_ENV = "EDGESDK_CACHE_MAX_MB"
DEFAULT_MAX_MB = int(_env.VARIABLES[MAX_MB_ENV].default)
STALE_AFTER_S = 3600.0
BUILTIN_CACHES = ("hub", "opencl", "placement", "qnn")
_BUILD = ".build-"
_TRASH = ".trash-"
_MIB = 1 << 20


class CacheConfigError(_env.EnvError):
    """The cache configuration (``EDGESDK_CACHE_MAX_MB``) is not valid."""


def max_bytes() -> int | None:
    """The per-folder size bound from ``EDGESDK_CACHE_MAX_MB``, in bytes; None when it is ``0`` (no bound)."""
    mb = _env.get(MAX_MB_ENV, error=CacheConfigError)
    return None if mb == 0 else int(mb * _MIB)


# --- reading -------------------------------------------------------------------------------------

_pinned: set[str] = set()


def _key(path) -> str:
    return os.path.realpath(path)


def pin(path) -> None:
    """Keep the entry at ``path`` out of this process's evictions until it exits: a QNN session or a
    memory-mapped GGUF may still read it, and neither says when it is done."""
    _pinned.add(_key(path))


def touch(path) -> None:
    """Record a use of ``path`` for the LRU order: access time = now, modification time unchanged."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        # Through the descriptor, so a file renamed over ``path`` meanwhile keeps its own mtime.
        target = fd if os.utime in os.supports_fd else path
        os.utime(target, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError:  # not the owner of a shared cache: the order is only less exact
        pass
    finally:
        os.close(fd)


def same_entry(path, seen: os.stat_result) -> bool:
    """``path`` is still the file or directory that was ``seen`` (not replaced or removed since)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino)


class DirView:
    """A directory entry opened once: every file is read relative to that directory, so a concurrent
    replace (a rename) cannot mix files of two generations into what one reader sees."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = None
        if os.open in os.supports_dir_fd:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            self.stat = os.fstat(self._fd)
        else:
            self.stat = os.stat(self.path)
            if not stat.S_ISDIR(self.stat.st_mode):
                raise NotADirectoryError(f"{self.path} is not a directory")

    def open(self, name: str) -> BinaryIO:
        if self._fd is None:
            return open(self.path / name, "rb")
        return open(name, "rb", opener=lambda n, flags: os.open(n, flags, dir_fd=self._fd))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirView:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dir(path) -> DirView:
    """A :class:`DirView` of ``path``; FileNotFoundError when it is missing, another OSError when it is
    not a readable directory."""
    return DirView(path)


# --- writing -------------------------------------------------------------------------------------

_held: dict[str, int] = {}  # staging directory -> the descriptor holding its lock


def _lock(fd: int) -> bool:
    """Take the exclusive flock on ``fd`` without waiting; False only when someone else holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without flock: age alone decides
        pass
    return True


@contextlib.contextmanager
def writing(path) -> Iterator[BinaryIO]:
    """:func:`edgesdk._io.atomic_open` whose temporary is flock'ed while written, so that a sweep in
    another process never removes a live writer's temporary."""
    with atomic_open(path) as f:
        _lock(f.fileno())
        yield f


def release(staging) -> None:
    """Drop the lock this process holds on a staging directory (done by commit and discard)."""
    fd = _held.pop(_key(staging), None)
    if fd is not None:
        os.close(fd)


def discard(path, expect: os.stat_result | None = None) -> None:
    """Delete an entry, a temporary or a staging directory. A directory is first renamed aside, so a
    reader finds the whole entry or none of it. With ``expect``, only if ``path`` is still that file
    (an unusable entry that a writer has meanwhile replaced with a good one stays)."""
    path = Path(path)
    release(path)
    if expect is not None and not same_entry(path, expect):
        return
    try:
        is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return
    try:
        if not is_dir:
            path.unlink(missing_ok=True)
            return
        aside = path if path.name.startswith(_TRASH) else path.with_name(f"{_TRASH}{uuid.uuid4().hex[:12]}")
        if aside != path:
            os.rename(path, aside)
    except FileNotFoundError:  # another process deleted it first
        return
    except OSError as exc:  # e.g. Windows refuses to delete a file in use; a later sweep or eviction retries
        log.debug("cache: cannot remove %s: %s", path, exc)
        return
    shutil.rmtree(aside, ignore_errors=True)


# --- a cache folder ------------------------------------------------------------------------------


@attrs.frozen
class Entry:
    """One entry of a cache folder: its top-level paths (the entry, then its companions), the bytes of
    all their files and the last recorded use (newest access time among those files)."""

    name: str
    paths: tuple[Path, ...]
    size: int
    used_ns: int


@attrs.frozen
class CacheReport:
    """What a cache folder holds, for ``edgesdk devices`` / ``edgesdk hub list``."""

    name: str
    folder: str
    entries: int
    size_bytes: int
    max_bytes: int | None  # None: no bound


def _files(path: Path) -> Iterator[os.stat_result]:
    """The stat of every file at or under ``path`` (symlinks not followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        yield st
        return
    try:
        children = list(os.scandir(path))
    except OSError:
        return
    for child in children:
        yield from _files(Path(child.path))


def _group(names: list[str]) -> dict[str, list[str]]:
    """Entry name -> its names, the entry first: ``x.gguf.verified`` joins ``x.gguf`` (the shortest
    present dotted prefix, so a companion of a companion joins the same entry)."""
    present = set(names)
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        parts = name.split(".")
        base = next((b for i in range(1, len(parts)) if (b := ".".join(parts[:i])) in present), name)
        groups.setdefault(base, []).append(name)
    return groups


class EntryStore:
    """A cache folder: staging and committing entries, its LRU bound, the sweep of old temporaries.
    The bound is read from the environment when the store is made (a bad value raises here)."""

    def __init__(self, root):
        self.root = Path(root)
        self.limit = max_bytes()

    # -- directories

    def staging_dir(self) -> Path:
        """A fresh hidden directory, on the same filesystem as the entries, to build an entry in; locked
        until :meth:`commit_dir` or :func:`discard`."""
        self.root.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=_BUILD, dir=self.root))
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:  # Windows cannot open a directory; age alone protects it
            return d
        _lock(fd)
        _held[_key(d)] = fd
        return d

    def commit_dir(self, staging: Path, final: Path, usable: Callable[[Path], bool]) -> Path | None:
        """Rename ``staging`` to ``final``. When ``final`` exists and ``usable(final)`` says it is good,
        that entry stays (another writer got there first, with an equivalent entry) and ``staging`` is
        dropped; a bad one is moved aside first. Returns ``final``, or None when the rename failed."""
        try:
            for attempt in range(3):
                try:
                    os.rename(staging, final)  # never replaces a non-empty directory: no clobbering a reader
                    break
                except OSError as exc:
                    if final.exists() and usable(final):
                        discard(staging)
                        return final
                    if attempt == 2:
                        log.warning("cache: could not store %s: %s", final, exc)
                        discard(staging)
                        return None
                    discard(final)  # unusable: moved aside whole, then the rename is retried
        finally:
            release(staging)
        _fsync_dir(self.root)
        return final

    # -- after a commit

    def committed(self, path) -> None:
        """Housekeeping after ``path`` was committed: sweep old temporaries, then evict to the bound.
        Never fails the commit: the new entry is already in place."""
        try:
            self.sweep()
            self.evict(keep=(path,))
        except OSError as exc:
            log.warning("cache: housekeeping of %s failed: %s", self.root, exc)

    def entries(self) -> list[Entry]:
        try:
            names = [n for n in os.listdir(self.root) if not n.startswith(".")]
        except OSError:
            return []
        out = []
        for base, members in _group(names).items():
            stats = [st for m in members for st in _files(self.root / m)]
            out.append(Entry(base, tuple(self.root / m for m in members), sum(st.st_size for st in stats), max((st.st_atime_ns for st in stats), default=0)))
        return out

    def evict(self, keep: Iterable = ()) -> list[str]:
        """Delete least-recently-used entries until the folder fits the bound; returns their names.
        Entries in ``keep`` or pinned by this process stay."""
        if self.limit is None:
            return []
        entries = self.entries()
        total = sum(e.size for e in entries)
        protected = _pinned | {_key(p) for p in keep}
        evicted = []
        for e in sorted(entries, key=lambda e: e.used_ns):
            if total <= self.limit:
                break
            if any(_key(p) in protected for p in e.paths):
                continue
            for p in e.paths:
                discard(p)
            total -= e.size
            evicted.append(e.name)
        if evicted:
            log.info("cache: evicted %d least-recently-used entries from %s: %s", len(evicted), self.root, ", ".join(evicted))
        if total > self.limit:
            log.info("cache: %s holds %d bytes, over its bound of %d, in entries that are in use", self.root, total, self.limit)
        return evicted

    def sweep(self, now: float | None = None) -> list[str]:
        """Remove temporaries left by killed writers (unlocked and older than STALE_AFTER_S) and
        half-deleted entries; returns their names."""
        now = time.time() if now is None else now
        try:
            names = [n for n in os.listdir(self.root) if n.startswith(".")]
        except OSError:
            return []
        removed = []
        for name in names:
            p = self.root / name
            if name.startswith(_TRASH) or (_is_temporary(name) and _abandoned(p, now)):
                discard(p)
                removed.append(name)
        if removed:
            log.info("cache: removed %d leftover temporaries from %s", len(removed), self.root)
        return removed

    def report(self, name: str) -> CacheReport:
        entries = self.entries()
        return CacheReport(name, str(self.root), len(entries), sum(e.size for e in entries), self.limit)


def _is_temporary(name: str) -> bool:
    return name.startswith(_BUILD) or (name.startswith(".") and name.endswith(".tmp"))


def _abandoned(p: Path, now: float) -> bool:
    """Nobody writes ``p`` any more: untouched for STALE_AFTER_S and its flock free."""
    own = _lstat(p)
    if own is None:
        return False
    newest = max((st.st_mtime for st in _files(p)), default=own.st_mtime)
    if now - max(newest, own.st_mtime) < STALE_AFTER_S:  # a live writer's files are fresh
        return False
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:  # cannot be opened to test the lock (a Windows directory): age decides
        return True
    try:
        # Only testing: a dead writer never comes back for its temporary, so the lock can go at once.
        return _lock(fd)
    finally:
        os.close(fd)


def _lstat(p: Path) -> os.stat_result | None:
    try:
        return os.lstat(p)
    except OSError:
        return None


def report(name: str) -> CacheReport:
    """Entry count, size and bound of the cache folder ``cache_dir(name)``."""
    return EntryStore(cache_dir(name)).report(name)


def reports() -> list[CacheReport]:
    """:func:`report` of the built-in caches and of any other folder beside them (a plugin's)."""
    base = cache_dir("-").parent
    try:
        found = {d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")}
    except OSError:
        found = set()
    return [report(name) for name in sorted(set(BUILTIN_CACHES) | found)]
