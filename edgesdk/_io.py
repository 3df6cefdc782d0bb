"""Atomic file writes: a crash or a full disk leaves the old file or nothing, never half a file."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_save_npy", "cache_dir"]


def cache_dir(name: str, override=None) -> Path:
    """Where a backend keeps compiled artifacts: ``override``, else ``$EDGESDK_CACHE_DIR/<name>``,
    else ``$XDG_CACHE_HOME/edgesdk/<name>`` (``~/.cache`` when unset)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("EDGESDK_CACHE_DIR")
    if env:
        return Path(env).expanduser() / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesdk" / name


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_save_npy(path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
