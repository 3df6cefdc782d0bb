"""Atomic writes: the file appears whole or not at all, with the mode a plain write would give."""

import multiprocessing
import os
import signal
import stat
import time

import pytest

from edgesdk._io import atomic_open, atomic_write_bytes


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_file_gets_the_plain_write_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "plain.bin") == 0o640


def test_existing_file_keeps_its_mode(tmp_path):
    p = tmp_path / "keep.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o604)
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new" and _mode(p) == 0o604


def test_an_error_in_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "out.gguf"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.gguf"]


def _slow_writer(path, started):
    with atomic_open(path) as f:
        f.write(b"partial")
        f.flush()
        started.set()
        time.sleep(60)


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    p = tmp_path / "cache.bin"
    p.write_bytes(b"old")
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    child = ctx.Process(target=_slow_writer, args=(p, started))
    child.start()
    assert started.wait(30)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert p.read_bytes() == b"old"  # only a stray temporary may be left, never a torn file
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
