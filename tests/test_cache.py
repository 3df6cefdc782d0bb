"""Compiled-artifact caches (:mod:`edgesdk._cache` and its users: QNN context binaries, OpenCL program
binaries, the hub's assembled models): concurrent readers and writers in separate processes, writers
killed with SIGKILL mid-write, corrupt entries, the LRU size bound and how it is reported."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import time
import types
from pathlib import Path

import pytest
from edgesdk_backends.opencl._progcache import ProgramCache
from edgesdk_backends.qnn._cache import CTX_MODEL, MANIFEST, ContextCache
from test_hub_assembled import fake  # noqa: F401 - the fixture

from edgesdk import _cache, cli, hub

# fork: children start at once and inherit the test's environment; spawn where there is no fork.
MP = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
KEY = "ab" * 32
MIB = 1 << 20


@pytest.fixture(autouse=True)
def _fresh_pins(monkeypatch):
    monkeypatch.setattr(_cache, "_pinned", set())
    monkeypatch.delenv(_cache.MAX_MB_ENV, raising=False)


def _blob(seed: int, size: int) -> bytes:
    """Bytes that say which write they came from: a reader can tell a torn or mixed result."""
    unit = seed.to_bytes(8, "little") + bytes(range(256))
    return (unit * (size // len(unit) + 1))[:size]


def _consistent(data: bytes) -> bool:
    return len(data) >= 8 and data == _blob(int.from_bytes(data[:8], "little"), len(data))


def _set_used(path: Path, seconds_ago: float) -> None:
    """Give every file of an entry the same last use, keeping its mtime (as touch does)."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    for f in files:
        os.utime(f, ns=(time.time_ns() - int(seconds_ago * 1e9), f.stat().st_mtime_ns))


def _backdate(path: Path, seconds: float) -> None:
    for f in [path, *(path.rglob("*") if path.is_dir() else ())]:
        t = time.time() - seconds
        os.utime(f, (t, t))


def _qnn_build(cache: ContextCache, seed: int, size: int = 4096):
    """A fake compiled entry: the model and the binary both carry ``seed``."""
    staging = cache.staging_dir()
    (staging / CTX_MODEL).write_bytes(_blob(seed, size))
    (staging / "model_ctx_qnn.bin").write_bytes(_blob(seed, 2 * size))
    return cache.commit(staging, KEY, [(f"n{seed}", "Relu", "qnn:htp", None)], {"seed": seed})


def _run(procs, seconds, out, n) -> list:
    """Start ``procs``, take the ``n`` results they put on ``out`` (before joining: a child exits only
    once its queue is flushed), join them and check they all exited cleanly."""
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=seconds + 30) for _ in range(n)]
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return results


# --- the bound -------------------------------------------------------------------------------------


def test_bound_comes_from_the_environment(monkeypatch, tmp_path):
    assert _cache.max_bytes() == 2048 * MIB
    for raw, want in (("512", 512 * MIB), (" 0.5 ", MIB // 2), ("0", None)):
        monkeypatch.setenv(_cache.MAX_MB_ENV, raw)
        assert _cache.max_bytes() == want
    for bad in ("lots", "-1", "inf", "nan", "1e400", "2GB"):
        monkeypatch.setenv(_cache.MAX_MB_ENV, bad)
        with pytest.raises(_cache.CacheConfigError, match=f"EDGESDK_CACHE_MAX_MB={bad!r} is not a size in MiB"):
            _cache.max_bytes()
        with pytest.raises(_cache.CacheConfigError):  # before anything is built or loaded
            ProgramCache(tmp_path)


# --- corrupt entries are misses --------------------------------------------------------------------


def test_corrupt_program_binaries_are_misses_and_rebuilt(tmp_path, caplog):
    cache = ProgramCache(tmp_path)
    good = _blob(1, 5000)
    p = cache.store(KEY, good)
    blob = p.read_bytes()
    cache.store("cd" * 32, _blob(2, 5000))
    foreign = cache.path("cd" * 32).read_bytes()
    for bad in (blob[: len(blob) // 2], blob[:-1] + bytes([blob[-1] ^ 1]), blob.replace(b'"size": 5000', b'"size": 5001'), foreign, b"", b"garbage"):
        p.write_bytes(bad)
        with caplog.at_level(logging.WARNING, "edgesdk.backends.opencl.cache"):
            assert cache.load(KEY) is None
        assert "unusable" in caplog.text and not p.exists()
        caplog.clear()
        cache.store(KEY, good)
        assert cache.load(KEY) == good


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "foreign-manifest", "no-manifest", "file-missing", "plain-file", "junk-manifest"])
def test_corrupt_context_entries_are_misses_and_rebuilt(tmp_path, damage):
    cache = ContextCache(tmp_path)
    entry = _qnn_build(cache, 7)
    binary = entry.path / "model_ctx_qnn.bin"
    if damage == "truncated":
        binary.write_bytes(binary.read_bytes()[:100])
    elif damage == "bit-flip":
        data = bytearray(binary.read_bytes())
        data[len(data) // 2] ^= 0x10
        binary.write_bytes(bytes(data))
    elif damage == "foreign-manifest":
        man = json.loads((entry.path / MANIFEST).read_text())
        (entry.path / MANIFEST).write_text(json.dumps({**man, "key": "cd" * 20}))
    elif damage == "no-manifest":
        (entry.path / MANIFEST).unlink()
    elif damage == "file-missing":
        binary.unlink()
    elif damage == "plain-file":
        _cache.discard(entry.path)
        entry.path.write_bytes(b"not a directory")
    else:
        (entry.path / MANIFEST).write_bytes(b"\x00{")
    assert cache.lookup(KEY) is None and not entry.path.exists()
    assert _qnn_build(cache, 8).meta == {"seed": 8}
    assert cache.lookup(KEY).meta == {"seed": 8}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # nothing half-built or half-deleted left


# --- concurrent readers and writers on one key -----------------------------------------------------


def _program_writer(root, seconds, seed0):
    cache, seed, end = ProgramCache(root), seed0, time.time() + seconds
    while time.time() < end:
        cache.store(KEY, _blob(seed, 20_000 + (seed * 7919) % 400_000))
        seed += 2


def _program_reader(root, seconds, out):
    cache, warnings, hits, misses, torn = ProgramCache(root), [], 0, 0, 0
    logging.getLogger("edgesdk.backends.opencl.cache").addHandler(_Collect(warnings, logging.WARNING))
    end = time.time() + seconds
    while time.time() < end:
        got = cache.load(KEY)
        if got is None:
            misses += 1
        elif _consistent(got):
            hits += 1
        else:
            torn += 1
    out.put({"hits": hits, "misses": misses, "torn": torn, "warnings": warnings})


class _Collect(logging.Handler):
    def __init__(self, into, level):
        super().__init__(level)
        self.into = into

    def emit(self, record):
        self.into.append(record.getMessage())


def test_program_readers_never_get_a_torn_binary_while_two_writers_commit(tmp_path):
    out, seconds = MP.Queue(), 1.5
    procs = [MP.Process(target=_program_writer, args=(tmp_path, seconds, s)) for s in (0, 1)]
    procs += [MP.Process(target=_program_reader, args=(tmp_path, seconds, out)) for _ in range(2)]
    results = _run(procs, seconds, out, 2)
    assert all(r["torn"] == 0 and r["warnings"] == [] for r in results), results
    assert sum(r["hits"] for r in results) > 0
    assert _consistent(ProgramCache(tmp_path).load(KEY))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # every temporary renamed or removed


def _context_writer(root, seconds, seed0):
    cache, seed, end = ContextCache(root), seed0, time.time() + seconds
    while time.time() < end:
        entry = _qnn_build(cache, seed)
        if entry is not None and seed % 3:  # as an eviction or a driver rejecting the binary would
            cache.remove(entry.path)
        seed += 2


def _context_reader(root, seconds, out):
    cache, problems, hits, misses, torn = ContextCache(root), [], 0, 0, 0
    log = logging.getLogger("edgesdk.backends.qnn.cache")
    log.setLevel(logging.DEBUG)
    log.addHandler(_Collect(problems, logging.DEBUG))
    end = time.time() + seconds
    while time.time() < end:
        entry = cache.lookup(KEY)
        if entry is None:
            misses += 1
        elif entry.nodes == ((f"n{entry.meta['seed']}", "Relu", "qnn:htp", None),):
            hits += 1
        else:
            torn += 1
    bad = [m for m in problems if "sha256" in m or "unusable" in m]
    out.put({"hits": hits, "misses": misses, "torn": torn, "problems": bad[:5], "changed_while_read": len(problems) - len(bad)})


def test_context_readers_never_get_a_torn_entry_while_writers_commit_and_evict(tmp_path):
    out, seconds = MP.Queue(), 1.5
    procs = [MP.Process(target=_context_writer, args=(tmp_path, seconds, s)) for s in (0, 1)]
    procs += [MP.Process(target=_context_reader, args=(tmp_path, seconds, out)) for _ in range(2)]
    results = _run(procs, seconds, out, 2)
    # A reader may find an entry being deleted (a miss), never one whose files disagree with its manifest.
    assert all(r["torn"] == 0 and r["problems"] == [] for r in results), results
    assert sum(r["hits"] for r in results) > 0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# --- a writer killed mid-write ---------------------------------------------------------------------


def _half_written_program(root, ready):
    with _cache.writing(ProgramCache(root).path(KEY)) as f:
        f.write(b'EDGESDK-CLBIN 1\n{"key": ')
        f.flush()
        ready.set()
        time.sleep(60)


def _half_built_context(root, ready):
    staging = ContextCache(root).staging_dir()
    (staging / CTX_MODEL).write_bytes(_blob(9, 1000))
    ready.set()
    time.sleep(60)


def _kill_mid_write(target, root) -> list[str]:
    """Start ``target`` and, once it is mid-write, check a stale-looking temporary of a live writer
    survives a sweep; then SIGKILL it. Returns the temporaries it left."""
    ready = MP.Event()
    p = MP.Process(target=target, args=(root, ready))
    p.start()
    try:
        assert ready.wait(30)
        left = [n for n in os.listdir(root) if n.startswith(".")]
        assert len(left) == 1
        _backdate(root / left[0], 2 * _cache.STALE_AFTER_S)
        assert _cache.EntryStore(root).sweep() == []  # its writer holds the lock: never removed
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    assert p.exitcode == -signal.SIGKILL
    return left


def test_program_writer_killed_mid_write_leaves_the_old_entry(tmp_path):
    cache = ProgramCache(tmp_path)
    old = _blob(3, 10_000)
    cache.store(KEY, old)
    left = _kill_mid_write(_half_written_program, tmp_path)
    assert cache.load(KEY) == old  # the old entry, whole
    store = _cache.EntryStore(tmp_path)
    assert [e.name for e in store.entries()] == [f"{KEY}.clbin"]  # the temporary is not an entry
    assert store.sweep() == left  # stale and unlocked now: removed
    new = _blob(4, 10_000)
    cache.store(KEY, new)
    assert cache.load(KEY) == new
    assert os.listdir(tmp_path) == [f"{KEY}.clbin"]


def test_context_writer_killed_mid_build_leaves_a_usable_cache(tmp_path):
    cache = ContextCache(tmp_path)
    left = _kill_mid_write(_half_built_context, tmp_path)
    assert cache.lookup(KEY) is None  # a miss, so the entry is built again
    assert _cache.EntryStore(tmp_path).entries() == []  # the half-built directory is no entry
    assert _qnn_build(cache, 5).meta == {"seed": 5}
    assert cache.lookup(KEY).meta == {"seed": 5}
    assert os.listdir(tmp_path) == [KEY]  # the commit's housekeeping removed what the killed writer left
    assert (tmp_path / left[0]).exists() is False


def test_fresh_temporaries_are_left_alone(tmp_path):
    (tmp_path / ".x.clbin.abc.tmp").write_bytes(b"partial")
    (tmp_path / ".build-abc").mkdir()
    (tmp_path / ".trash-abc").mkdir()  # a half-deleted entry: removed whatever its age
    (tmp_path / ".something-else").write_bytes(b"")  # not ours: never touched
    store = _cache.EntryStore(tmp_path)
    assert store.sweep() == [".trash-abc"]
    assert sorted(store.sweep(now=time.time() + 2 * _cache.STALE_AFTER_S)) == [".build-abc", ".x.clbin.abc.tmp"]
    assert os.listdir(tmp_path) == [".something-else"]


# --- the LRU bound ---------------------------------------------------------------------------------


def test_least_recently_used_programs_are_evicted_to_the_bound(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.MAX_MB_ENV, str(350_000 / MIB))
    cache = ProgramCache(tmp_path)
    size = 100_000
    keys = {name: name * 64 for name in "abcdef"}

    def store(name, seconds_ago=0.0):
        p = cache.store(keys[name], _blob(ord(name), size))
        _set_used(p, seconds_ago)

    def present():
        return sorted(n for n, k in keys.items() if cache.path(k).exists())

    store("a", 30), store("b", 20), store("c", 10)
    assert present() == ["a", "b", "c"]
    assert cache.load(keys["a"]) is not None  # a hit is a use: a is now the most recent
    store("d")
    assert present() == ["a", "c", "d"]  # b was the least recently used
    _set_used(cache.path(keys["c"]), 100)
    _cache.pin(cache.path(keys["c"]))  # loaded by this process: kept although the oldest
    _set_used(cache.path(keys["a"]), 50)
    store("e")
    assert present() == ["c", "d", "e"]
    assert sum(e.size for e in _cache.EntryStore(tmp_path).entries()) <= 350_000
    monkeypatch.setenv(_cache.MAX_MB_ENV, str(50_000 / MIB))  # smaller than one entry
    cache = ProgramCache(tmp_path)
    store("f")
    assert present() == ["c", "f"]  # the new entry and the pinned one stay, over the bound


def test_context_entries_are_evicted_whole(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.MAX_MB_ENV, str(40_000 / MIB))
    cache = ContextCache(tmp_path)
    staging = cache.staging_dir()
    (staging / CTX_MODEL).write_bytes(_blob(1, 30_000))
    old = cache.commit(staging, "11" * 20, [], {})
    _set_used(old.path, 60)
    _cache._pinned.clear()  # as if committed by another process
    new = _qnn_build(cache, 2, size=5_000)
    assert not old.path.exists() and new.path.exists()
    assert sorted(os.listdir(tmp_path)) == [KEY]


def test_hub_assembled_model_counts_as_one_entry_and_evicts_older_ones(fake, monkeypatch):  # noqa: F811
    fake.dir.mkdir(parents=True)
    stale = fake.dir / "older-model.gguf"
    stale.write_bytes(b"x" * 200_000)
    _set_used(stale, 3600)
    monkeypatch.setenv(_cache.MAX_MB_ENV, str(100_000 / MIB))
    assert hub.path("fake-chunked") == fake.target
    assert not stale.exists()
    r = _cache.report("hub")
    assert (r.entries, r.folder, r.max_bytes) == (1, str(fake.dir), 100_000)
    assert r.size_bytes == len(fake.whole) + hub._sidecar(fake.target).stat().st_size  # the sidecar is part of it
    _set_used(fake.target, 100)
    before, t = fake.target.stat(), time.time_ns()
    assert hub.path("fake-chunked") == fake.target
    after = fake.target.stat()
    assert after.st_atime_ns >= t and after.st_mtime_ns == before.st_mtime_ns  # the use is recorded, the mtime kept
    assert hub._trusted(fake.target, fake.m.sha256)  # so the sidecar still vouches for the file


# --- the report ------------------------------------------------------------------------------------


def _no_backends(monkeypatch):
    import edgesdk._registry as registry

    reg = types.SimpleNamespace(statuses=list, plugins=[], _backends={}, collect=lambda *a, **k: [], call_observers=lambda *a, **k: None)
    monkeypatch.setattr(registry, "get_registry", lambda: reg)


def test_devices_reports_every_cache_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(_cache.MAX_MB_ENV, "64")
    _no_backends(monkeypatch)
    ProgramCache().store(KEY, _blob(1, 1000))
    ProgramCache().store("cd" * 32, _blob(2, 3000))
    assert cli.main(["devices", "--json"]) == 0
    caches = {c["name"]: c for c in json.loads(capsys.readouterr().out)["caches"]}
    assert set(caches) == {"hub", "opencl", "placement", "qnn"}
    assert caches["opencl"]["entries"] == 2 and caches["opencl"]["folder"] == str(tmp_path / "opencl")
    assert caches["opencl"]["size_bytes"] > 4000 and caches["opencl"]["max_bytes"] == 64 * MIB
    assert caches["qnn"]["entries"] == 0
    assert cli.main(["devices"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cache ")]
    assert len(lines) == 4 and "opencl" in lines[1] and "2 entries" in lines[1]
    assert "bound 64.0 MiB" in lines[1] and str(tmp_path / "opencl") in lines[1]
    monkeypatch.setenv(_cache.MAX_MB_ENV, "lots")
    assert cli.main(["devices"]) == 1
    assert "EDGESDK_CACHE_MAX_MB='lots' is not a size in MiB" in capsys.readouterr().err


def test_hub_list_reports_the_hub_cache(fake, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(hub, "CATALOG", {fake.m.name: fake.m})
    monkeypatch.setenv(_cache.MAX_MB_ENV, "0")
    assert cli.main(["hub", "list"]) == 0
    out = capsys.readouterr().out
    assert str(fake.target) in out
    line = next(ln for ln in out.splitlines() if ln.startswith("cache hub"))
    assert "1 entries" in line and "bound none" in line and str(fake.dir) in line
