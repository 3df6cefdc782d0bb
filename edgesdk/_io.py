"""Atomic file writes: a crash or a full disk leaves the old file or nothing, never half a file."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from . import _env

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_save_npy", "cache_dir"]


def cache_dir(name: str, override=None) -> Path:
    """Where a backend keeps compiled artifacts: ``override``, else ``$EDGESDK_CACHE_DIR/<name>``,
    else ``$XDG_CACHE_HOME/edgesdk/<name>`` (``~/.cache`` when unset)."""
    if override:
        return Path(override).expanduser()
    env = _env.get("EDGESDK_CACHE_DIR")
    if env:
        return Path(env).expanduser() / name
    base = _env.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesdk" / name


def _plain_mode(path: Path) -> int:
    """The mode a plain ``open(path, "wb")`` would leave: the existing file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    try:  # Linux reports the umask without changing it (os.umask would, for every thread at once)
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path) -> Iterator[BinaryIO]:
    """A binary file to write that becomes ``path`` only when the block completes without error.

    The data is written to a temporary file beside ``path``, flushed to disk, given the mode a plain
    write would give (mkstemp's is 0600), then renamed over ``path``; an exception in the block (or a
    crash) leaves the old file, or nothing, and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _plain_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk too (not possible on every OS).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_save_npy(path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
