"""``hf:OWNER/REPO[@REVISION][/PATH]``: files from the local Hugging Face hub cache, never downloaded.

Each test builds a cache in tmp_path laid out as huggingface_hub writes it (blobs named by their hash,
snapshot entries linking to them, ``refs/<branch>`` holding a commit) and points ``HF_HUB_CACHE`` at it.
Where huggingface_hub is installed, its own readers (``try_to_load_from_cache``, ``scan_cache_dir``,
``constants.HF_HUB_CACHE``) are checked to agree with edgesdk's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk import cli, hub

REPO = "test-org/tiny-models"
C1 = "1" * 40
C2 = "2a" * 20
C3 = "3b" * 20


def _add(cache: Path, repo_id: str, commit: str, files: dict, refs: dict = ()) -> Path:
    """Put ``files`` (repo path -> bytes) into ``cache`` as snapshot ``commit`` of ``repo_id``: each a relative
    link into ``blobs/`` (named by sha256, as for LFS files), and ``refs`` (name -> commit) as ref files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, target in dict(refs).items():
        f = repo / "refs" / ref
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(target)  # huggingface_hub writes the bare hash, no newline
    return repo


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, identity_onnx, add_onnx):
    """A cache with REPO at three commits: main -> C2 (identity model), v1 -> C1 (add model), refs/pr/1 -> C3."""
    cache = tmp_path / "hf-hub"
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    ident, add = Path(identity_onnx).read_bytes(), Path(add_onnx).read_bytes()
    repo = _add(cache, REPO, C1, {"onnx/model.onnx": add, "README.md": b"v1"}, {"v1": C1})
    _add(cache, REPO, C2, {"onnx/model.onnx": ident, "README.md": b"main"}, {"main": C2})
    _add(cache, REPO, C3, {"onnx/model.onnx": ident}, {"refs/pr/1": C3})
    (repo / ".no_exist" / C2).mkdir(parents=True)
    (repo / ".no_exist" / C2 / "model.gguf").write_bytes(b"")  # huggingface_hub's record of a 404
    return cache


def test_session_loads_a_cached_file_and_runs_it(hf_cache):
    ref = f"hf:{REPO}/onnx/model.onnx"
    expected = hf_cache / "models--test-org--tiny-models" / "snapshots" / C2 / "onnx" / "model.onnx"
    assert hub.hf_path(ref) == expected and hub.resolve(ref) == str(expected)
    with edgesdk.Session(ref) as s:
        assert s.model.path == str(expected)
        x = np.arange(16, dtype=np.float32).reshape(1, 16)
        np.testing.assert_array_equal(s.run({"x": x})["y"], x)


def test_refs_main_decides_the_default_revision(hf_cache):
    repo = hf_cache / "models--test-org--tiny-models"
    assert hub.hf_path(f"hf:{REPO}/README.md").read_bytes() == b"main"
    (repo / "refs" / "main").write_text(C1)  # a later download moved main
    assert hub.hf_path(f"hf:{REPO}/README.md").read_bytes() == b"v1"
    assert hub.hf_path(f"hf:{REPO}") == repo / "snapshots" / C1  # no path: the whole snapshot directory
    assert hub.hf_path(f"hf:{REPO}/") == repo / "snapshots" / C1
    assert hub.hf_path(f"hf:{REPO}/onnx") == repo / "snapshots" / C1 / "onnx"


def test_revision_by_branch_tag_commit_and_encoded_ref(hf_cache):
    snaps = hf_cache / "models--test-org--tiny-models" / "snapshots"
    assert hub.hf_path(f"hf:{REPO}@v1/README.md") == snaps / C1 / "README.md"
    assert hub.hf_path(f"hf:{REPO}@{C2}/README.md") == snaps / C2 / "README.md"  # a commit names its snapshot
    assert hub.hf_path(f"hf:{REPO}@main/README.md") == snaps / C2 / "README.md"
    assert hub.hf_path(f"hf:{REPO}@refs%2Fpr%2F1/onnx/model.onnx") == snaps / C3 / "onnx" / "model.onnx"
    with edgesdk.Session(f"hf:{REPO}@v1/onnx/model.onnx") as s:  # the add model lives at v1 only
        assert {i.name for i in s.inputs} == {"a", "b", "n"}
    assert hub.parse_hf(f"hf:{REPO}@v1/a/b.gguf") == hub.HFRef(REPO, "v1", "a/b.gguf")


def test_a_file_not_in_the_cache_names_the_path_and_the_fetch_command(hf_cache):
    repo = hf_cache / "models--test-org--tiny-models"
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(f"hf:{REPO}/onnx/other.onnx")
    msg = str(e.value)
    assert str(repo / "snapshots" / C2 / "onnx" / "other.onnx") in msg and "$HF_HUB_CACHE" in msg
    assert f"hf download {REPO} onnx/other.onnx" in msg and "huggingface-cli download" in msg
    assert "nothing is downloaded" in msg

    with pytest.raises(hub.HubError, match=f"hf download {REPO} README.md --revision v2") as e:
        hub.hf_path(f"hf:{REPO}@v2/README.md")  # a branch never fetched
    assert str(repo / "refs" / "v2") in str(e.value)

    with pytest.raises(hub.HubError, match=r"hf download other/repo x\.gguf \(older huggingface_hub: huggingface-cli download other/repo x\.gguf\)$") as e:
        hub.hf_path("hf:other/repo/x.gguf")
    assert str(hf_cache / "models--other--repo") in str(e.value)

    with pytest.raises(hub.HubError, match=r"has no file 'model.gguf' in test-org/tiny-models .*\.no_exist"):
        hub.hf_path(f"hf:{REPO}/model.gguf")

    (repo / "refs" / "main").write_text(C3[:-1] + "f")  # main points at a snapshot that is not there
    with pytest.raises(hub.HubError, match="points at 3b.*f, but .* does not exist"):
        hub.hf_path(f"hf:{REPO}/README.md")


def test_an_interrupted_download_is_a_broken_link_not_a_file(hf_cache):
    repo = hf_cache / "models--test-org--tiny-models"
    target = repo / "snapshots" / C2 / "README.md"
    os.unlink(target.resolve())  # the blob is gone, the snapshot link stays
    with pytest.raises(hub.HubError, match="blob is missing") as e:
        hub.hf_path(f"hf:{REPO}/README.md")
    assert str(target) in str(e.value)


def test_the_error_reaches_every_model_command(hf_cache, capsys):
    assert cli.main(["info", f"hf:{REPO}/onnx/model.onnx", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"].endswith(f"{C2}/onnx/model.onnx") and info["format"] == "onnx"
    assert cli.main(["run", f"hf:{REPO}@v1/onnx/model.onnx", "--random", "--dim", "batch=2", "--json"]) == 0
    assert cli.main(["info", f"hf:{REPO}/onnx/nope.onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: hf:test-org/tiny-models/onnx/nope.onnx: ") and f"hf download {REPO} onnx/nope.onnx" in err


@pytest.mark.parametrize("ref,why", [
    ("hf:", "needs OWNER/REPO"),
    ("hf:gpt2", "needs OWNER/REPO"),
    ("hf:gpt2/", "needs OWNER/REPO"),
    ("hf:/owner/repo/x", "needs OWNER/REPO"),
    ("hf:own--er/repo/x", "'own--er' is not a repository owner or name"),
    ("hf:owner/-repo/x", "'-repo' is not"),
    ("hf:owner/repo.git/x", "'repo.git' is not"),
    ("hf:owner/re po/x", "'re po' is not"),
    ("hf:owner/repo@/x", "'@' is not followed by a revision"),
    ("hf:owner/repo//x", "empty component"),
    ("hf:owner/repo/a\\b", "backslash"),
])
def test_a_malformed_reference_says_what_is_expected(hf_cache, ref, why):
    with pytest.raises(hub.HubError, match="malformed Hugging Face reference") as e:
        hub.resolve(ref)
    assert why in str(e.value) and "hf:OWNER/REPO[@REVISION][/PATH/IN/REPO]" in str(e.value)


@pytest.mark.parametrize("ref", [
    "hf:a/b/../../x",
    f"hf:{REPO}/../../models--other--repo/snapshots/{C1}/secret.txt",
    f"hf:{REPO}/onnx/../../{C1}/README.md",
    f"hf:{REPO}/./README.md",
    f"hf:{REPO}@..%2F..%2F..%2Fmodels--other--repo%2Frefs%2Fmain/secret.txt",
    f"hf:{REPO}@../README.md",
])
def test_path_traversal_is_refused_before_any_file_is_read(hf_cache, ref):
    _add(hf_cache, "other/repo", C1, {"secret.txt": b"not yours"}, {"main": C1})
    (hf_cache / "x").write_bytes(b"outside every repository")
    with pytest.raises(hub.HubError, match=r"'\.' or '\.\.' component, which is refused"):
        hub.hf_path(ref)
    with pytest.raises(hub.HubError, match="refused"):
        edgesdk.Session(ref)


def test_a_corrupt_ref_file_is_not_followed(hf_cache):
    (hf_cache / "models--test-org--tiny-models" / "refs" / "main").write_text("../../../../x")
    with pytest.raises(hub.HubError, match="not a commit hash"):
        hub.hf_path(f"hf:{REPO}/README.md")


def test_the_cache_folder_follows_huggingface_hubs_settings(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.hf_cache_dir()[0] == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hf_cache_dir() == (tmp_path / "xdg" / "huggingface" / "hub", "$XDG_CACHE_HOME/huggingface/hub")
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert hub.hf_cache_dir() == (tmp_path / "home" / "hf" / "hub", "$HF_HOME/hub")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub.hf_cache_dir()[0] == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", " ")  # blank: unset
    assert hub.hf_cache_dir()[0] == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hub.hf_cache_dir() == (tmp_path / "new", "$HF_HUB_CACHE")


# --- agreement with huggingface_hub, where it is installed ------------------------------------------


def test_huggingface_hub_finds_the_same_files(hf_cache):
    hfh = pytest.importorskip("huggingface_hub")
    cases = [(None, "onnx/model.onnx"), (None, "README.md"), ("v1", "README.md"), (C2, "onnx/model.onnx"), ("main", "README.md"),
             (None, "onnx/other.onnx"), ("v2", "README.md"), ("v1", "onnx/missing.onnx"), (None, "model.gguf")]
    for revision, filename in cases:
        theirs = hfh.try_to_load_from_cache(REPO, filename, cache_dir=hf_cache, revision=revision)
        try:
            ours = str(hub.hf_path(f"hf:{REPO}" + (f"@{revision}" if revision else "") + f"/{filename}"))
        except hub.HubError:
            ours = None
        assert ours == (theirs if isinstance(theirs, str) else None), (revision, filename, theirs)
    theirs = hfh.try_to_load_from_cache(REPO, "onnx/model.onnx", cache_dir=hf_cache, revision="refs/pr/1")
    assert str(hub.hf_path(f"hf:{REPO}@refs%2Fpr%2F1/onnx/model.onnx")) == theirs
    # and it reads the fake cache as a healthy one: three revisions, every file found, no warnings
    info = hfh.scan_cache_dir(hf_cache)
    assert info.warnings == [] and [r.repo_id for r in info.repos] == [REPO]
    revs = {r.commit_hash: r for r in next(iter(info.repos)).revisions}
    assert set(revs) == {C1, C2, C3} and revs[C2].refs == frozenset({"main"})
    assert {f.file_name for f in revs[C1].files} == {"model.onnx", "README.md"}


@pytest.mark.parametrize("env", [
    {},
    {"XDG_CACHE_HOME": "{tmp}/xdg"},
    {"HF_HOME": "{tmp}/hfhome", "XDG_CACHE_HOME": "{tmp}/xdg"},
    {"HF_HOME": "~/hf", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy"},
    {"HF_HUB_CACHE": "{tmp}/new", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HOME": "{tmp}/hfhome"},
])
def test_huggingface_hub_picks_the_same_cache_folder(tmp_path, env):
    pytest.importorskip("huggingface_hub")
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")}
    env = {**base, "HOME": str(tmp_path / "home"), **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    code = "from huggingface_hub import constants; from edgesdk import hub; print(constants.HF_HUB_CACHE); print(hub.hf_cache_dir()[0])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs, ours = out.stdout.splitlines()
    assert Path(theirs) == Path(ours)
