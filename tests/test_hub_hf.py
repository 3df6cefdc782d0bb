"""``hf:OWNER/REPO[@REVISION][/PATH]`` and ``hf:OWNER/REPO[@REVISION]:QUANT``: files from the local Hugging
Face hub cache, downloaded into it with huggingface_hub when online.

Each test builds a cache in tmp_path laid out as huggingface_hub writes it (blobs named by their hash,
snapshot entries linking to them, ``refs/<branch>`` holding a commit) and points ``HF_HUB_CACHE`` at it.
Where huggingface_hub is installed, its own readers (``try_to_load_from_cache``, ``scan_cache_dir``,
``constants.HF_HUB_CACHE``) are checked to agree with edgesdk's. Downloads are tested with fakes of
``hf_hub_download`` and ``list_repo_files`` that write the cache as the real ones do (there is no network
here); the real huggingface_hub is only checked to fail cleanly without one.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk import _hf, cli, hub

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
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cache alone; the download tests below switch it off
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


@pytest.mark.parametrize(
    "ref,why",
    [
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
        ("hf:owner/repo:", "':' is not followed by a quant tag"),
        ("hf:owner/repo:Q4_K_M@v1", "the revision goes before the quant tag"),
        ("hf:owner/repo:Q4_K_M/x.gguf", "a quant tag (Q4_K_M) and a path (x.gguf) are exclusive"),
        ("hf:owner/repo:Q4 K", "'Q4 K' is not a quant tag"),
        ("hf:owner/repo:Q4:K", "'Q4:K' is not a quant tag"),
        ("hf:owner/repo:Q4_K_M.gguf", "'Q4_K_M.gguf' is not a quant tag"),
        ("hf:owner:Q4_K_M/repo", "'owner:Q4_K_M' is not a repository owner or name"),
    ],
)
def test_a_malformed_reference_says_what_is_expected(hf_cache, ref, why):
    with pytest.raises(hub.HubError, match="malformed Hugging Face reference") as e:
        hub.resolve(ref)
    assert why in str(e.value) and "hf:OWNER/REPO[@REVISION][/PATH/IN/REPO] or hf:OWNER/REPO[@REVISION]:QUANT" in str(e.value)


@pytest.mark.parametrize(
    "ref",
    [
        "hf:a/b/../../x",
        f"hf:{REPO}/../../models--other--repo/snapshots/{C1}/secret.txt",
        f"hf:{REPO}/onnx/../../{C1}/README.md",
        f"hf:{REPO}/./README.md",
        f"hf:{REPO}@..%2F..%2F..%2Fmodels--other--repo%2Frefs%2Fmain/secret.txt",
        f"hf:{REPO}@../README.md",
    ],
)
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
    cases = [
        (None, "onnx/model.onnx"),
        (None, "README.md"),
        ("v1", "README.md"),
        (C2, "onnx/model.onnx"),
        ("main", "README.md"),
        (None, "onnx/other.onnx"),
        ("v2", "README.md"),
        ("v1", "onnx/missing.onnx"),
        (None, "model.gguf"),
    ]
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


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_HOME": "{tmp}/hfhome", "XDG_CACHE_HOME": "{tmp}/xdg"},
        {"HF_HOME": "~/hf", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy"},
        {"HF_HUB_CACHE": "{tmp}/new", "HUGGINGFACE_HUB_CACHE": "{tmp}/legacy", "HF_HOME": "{tmp}/hfhome"},
    ],
)
def test_huggingface_hub_picks_the_same_cache_folder(tmp_path, env):
    pytest.importorskip("huggingface_hub")
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")}
    env = {**base, "HOME": str(tmp_path / "home"), **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    code = "from huggingface_hub import constants; from edgesdk import hub; print(constants.HF_HUB_CACHE); print(hub.hf_cache_dir()[0])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs, ours = out.stdout.splitlines()
    assert Path(theirs) == Path(ours)


# --- quant tags: hf:OWNER/REPO[@REVISION]:QUANT picks a GGUF file ------------------------------------

GREPO = "test-org/tiny-GGUF"
CG = "4c" * 20
GGUF_FILES = [
    "tiny-q4_k_m.gguf",
    "tiny-Q4_K_M_L.gguf",
    "tiny-Q8_0.gguf",
    "Tiny.IQ4_XS.gguf",
    "tiny-IQ4_K_M.gguf",
    "mmproj-tiny-f16.gguf",
    "tiny-BF16-00001-of-00002.gguf",
    "tiny-BF16-00002-of-00002.gguf",
    "sub/tiny-UD-Q4_K_XL.gguf",
    "imatrix.gguf",
    "README.md",
]


@pytest.fixture
def gguf_cache(hf_cache):
    """GREPO cached at CG (main): a quant per file, an mmproj file, a split BF16 model, an imatrix file."""
    _add(hf_cache, GREPO, CG, {f: f.encode() for f in GGUF_FILES}, {"main": CG})
    return hf_cache / "models--test-org--tiny-GGUF" / "snapshots" / CG


@pytest.mark.parametrize(
    "ref,file",
    [
        (f"hf:{GREPO}:Q8_0", "tiny-Q8_0.gguf"),
        (f"hf:{GREPO}:q8_0", "tiny-Q8_0.gguf"),  # case-insensitive
        (f"hf:{GREPO}:Q4_K_M", "tiny-q4_k_m.gguf"),  # not tiny-Q4_K_M_L, not tiny-IQ4_K_M
        (f"hf:{GREPO}:Q4_K_M_L", "tiny-Q4_K_M_L.gguf"),
        (f"hf:{GREPO}:iq4_xs", "Tiny.IQ4_XS.gguf"),  # '.' separates tokens too
        (f"hf:{GREPO}:UD-Q4_K_XL", "sub/tiny-UD-Q4_K_XL.gguf"),  # in a folder
        (f"hf:{GREPO}:Q4_K_XL", "sub/tiny-UD-Q4_K_XL.gguf"),
        (f"hf:{GREPO}@main:Q8_0", "tiny-Q8_0.gguf"),
        (f"hf:{GREPO}@{CG}:Q8_0", "tiny-Q8_0.gguf"),
        (f"hf:{GREPO}", "tiny-q4_k_m.gguf"),  # the default quant
    ],
)
def test_a_quant_tag_picks_its_gguf_file_from_the_cache(gguf_cache, ref, file):
    assert hub.hf_path(ref) == gguf_cache / file and hub.resolve(ref) == str(gguf_cache / file)


def test_the_grammar_keeps_tags_revisions_and_paths_apart():
    assert hub.parse_hf("hf:o/r:Q4_K_M") == hub.HFRef("o/r", None, "", "Q4_K_M")
    assert hub.parse_hf("hf:o/r@v1:q8_0") == hub.HFRef("o/r", "v1", "", "q8_0")
    assert hub.parse_hf("hf:o/r@refs%2Fpr%2F1:Q4_0") == hub.HFRef("o/r", "refs/pr/1", "", "Q4_0")
    assert hub.parse_hf("hf:o/r/a:b.gguf") == hub.HFRef("o/r", None, "a:b.gguf")  # ':' after the repository is the path's
    assert hub.parse_hf("hf:o/r/") == hub.HFRef("o/r", None, "", whole=True)
    assert hub.parse_hf("hf:o/r") == hub.HFRef("o/r", None, "")
    assert hub.HFRef("o/r", "v1", "", "Q4_K_M").fetch_command == "hf download o/r --include '*[Qq]4_[Kk]_[Mm]*.gguf' --revision v1"


def test_gguf_model_files_skip_projectors_imatrix_and_later_shards():
    assert _hf._gguf_models(GGUF_FILES) == [
        "Tiny.IQ4_XS.gguf",
        "sub/tiny-UD-Q4_K_XL.gguf",
        "tiny-BF16-00001-of-00002.gguf",
        "tiny-IQ4_K_M.gguf",
        "tiny-Q4_K_M_L.gguf",
        "tiny-Q8_0.gguf",
        "tiny-q4_k_m.gguf",
    ]


def test_the_snapshot_directory_and_repositories_without_gguf(gguf_cache, hf_cache):
    assert hub.hf_path(f"hf:{GREPO}/") == gguf_cache  # a trailing '/': the directory, never a pick
    assert hub.hf_path(f"hf:{REPO}") == hf_cache / "models--test-org--tiny-models" / "snapshots" / C2  # no GGUF: the directory
    with pytest.raises(hub.HubError, match=r"no GGUF file matches quant 'Q8_0' among the cached GGUF files of test-org/tiny-models"):
        hub.hf_path(f"hf:{REPO}:Q8_0")


def test_no_match_lists_the_candidates_and_how_to_fetch(gguf_cache):
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(f"hf:{GREPO}:F16")  # mmproj-tiny-f16.gguf is a projector, not the model
    msg = str(e.value)
    assert "no GGUF file matches quant 'F16'" in msg and "tiny-Q8_0.gguf" in msg and "mmproj" not in msg
    assert "nothing is downloaded: $HF_HUB_OFFLINE is '1'" in msg and f"hf download {GREPO} --include '*[Ff]16*.gguf'" in msg


def test_several_matches_are_refused_with_the_candidates(gguf_cache, hub_online):
    _add(gguf_cache.parent.parent.parent, GREPO, CG, {"q8/tiny-Q8_0.gguf": b"another"})
    with pytest.raises(
        hub.HubError,
        match=r"several GGUF files match quant 'q8_0' in .*: q8/tiny-Q8_0\.gguf, tiny-Q8_0\.gguf; "
        rf"name one with its path \(hf:{GREPO}/q8/tiny-Q8_0\.gguf\)",
    ):
        hub.hf_path(f"hf:{GREPO}:q8_0")
    assert hub_online.calls == []  # the hub holds at least these two: no network call can decide


def test_a_split_model_is_refused_with_the_merge_command(gguf_cache):
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(f"hf:{GREPO}:BF16")
    msg = str(e.value)
    assert "tiny-BF16-00001-of-00002.gguf is the first of 2 shards of a split GGUF model" in msg
    assert f"hf download {GREPO} --include 'tiny-BF16-*-of-00002.gguf'" in msg
    assert "llama-gguf-split --merge tiny-BF16-00001-of-00002.gguf merged.gguf" in msg


def test_the_default_without_q4_k_m(hf_cache):
    _add(hf_cache, "o/one", CG, {"m-Q8_0.gguf": b"x", "README.md": b"r"}, {"main": CG})
    assert hub.hf_path("hf:o/one").name == "m-Q8_0.gguf"  # the only GGUF model file
    _add(hf_cache, "o/two", CG, {"m-Q8_0.gguf": b"x", "m-Q6_K.gguf": b"y"}, {"main": CG})
    with pytest.raises(hub.HubError, match=r"no GGUF file is of the default quant Q4_K_M and there are several .*m-Q6_K\.gguf, m-Q8_0\.gguf"):
        hub.hf_path("hf:o/two")


# --- downloads with huggingface_hub (faked: no network here) ----------------------------------------

NREPO = "new-org/new-GGUF"
CN = "5d" * 20


class FakeHub:
    """``hf_hub_download`` and ``list_repo_files`` over ``files`` (repo path -> bytes), writing the cache as
    huggingface_hub does: blobs, a snapshot link, refs/<revision>. ``fail`` (an exception) makes both raise."""

    def __init__(self, files, fail=None):
        self.files, self.fail, self.calls = dict(files), fail, []

    def list_repo_files(self, repo_id, *, revision=None, **kw):
        self.calls.append(("list", repo_id, revision))
        if self.fail:
            raise self.fail
        return sorted(self.files)

    def hf_hub_download(self, repo_id, filename, *, revision=None, cache_dir=None, **kw):
        self.calls.append(("download", repo_id, filename, revision))
        if self.fail:
            raise self.fail
        link = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / CN / filename
        _add(Path(cache_dir), repo_id, CN, {} if link.is_file() else {filename: self.files[filename]}, {revision or "main": CN})
        return str(link)


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub (the installed one, else a stand-in module) with its offline switch off and fake
    download and list functions; returns the FakeHub whose ``files`` the test fills."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    try:
        import huggingface_hub as mod
    except ImportError:
        mod = types.ModuleType("huggingface_hub")
        mod.__spec__ = importlib.machinery.ModuleSpec("huggingface_hub", None)
        monkeypatch.setitem(sys.modules, "huggingface_hub", mod)
    fake = FakeHub({})
    monkeypatch.setattr(_hf, "_hf_probe", lambda r, missing: None)  # the network check: tested on its own below
    monkeypatch.setattr(mod, "hf_hub_download", fake.hf_hub_download, raising=False)
    monkeypatch.setattr(mod, "list_repo_files", fake.list_repo_files, raising=False)
    return fake


def test_a_missing_file_is_downloaded_into_the_cache(hf_cache, hub_online):
    hub_online.files = {"model-Q8_0.gguf": b"weights", "README.md": b"r"}
    expected = hf_cache / "models--new-org--new-GGUF" / "snapshots" / CN / "model-Q8_0.gguf"
    assert hub.hf_path(f"hf:{NREPO}/model-Q8_0.gguf") == expected and expected.read_bytes() == b"weights"
    assert hub_online.calls == [("download", NREPO, "model-Q8_0.gguf", None)]
    assert hub.hf_path(f"hf:{NREPO}/model-Q8_0.gguf") == expected and len(hub_online.calls) == 1  # cached now
    assert hub.hf_path(f"hf:{NREPO}@v2/README.md").read_bytes() == b"r"  # a revision never fetched
    assert hub_online.calls[-1] == ("download", NREPO, "README.md", "v2")
    assert (hf_cache / "models--new-org--new-GGUF" / "refs" / "v2").read_text() == CN
    # a file missing from a cached snapshot, and one the hub once said is not there (the record may be stale)
    hub_online.files.update({"onnx/other.onnx": b"o", "model.gguf": b"g"})
    assert hub.hf_path(f"hf:{REPO}/model.gguf").read_bytes() == b"g"
    assert hub.hf_path(f"hf:{REPO}/onnx/other.onnx").read_bytes() == b"o"


def test_a_quant_tag_lists_the_repository_and_downloads_one_file(hf_cache, hub_online, tiny_llama_gguf, capsys):
    hub_online.files = {
        "new-Q8_0.gguf": Path(tiny_llama_gguf).read_bytes(),
        "new-Q4_K_M.gguf": b"q4",
        "mmproj-new-Q8_0.gguf": b"p",
        "new-F16-00001-of-00002.gguf": b"a",
        "new-F16-00002-of-00002.gguf": b"b",
        "README.md": b"r",
    }
    assert cli.main(["info", f"hf:{NREPO}:q8_0", "--json"]) == 0  # the model commands take the reference
    info = json.loads(capsys.readouterr().out)
    assert info["path"].endswith(f"{CN}/new-Q8_0.gguf") and info["format"] == "gguf"
    assert hub_online.calls == [("list", NREPO, None), ("download", NREPO, "new-Q8_0.gguf", None)]
    assert hub.hf_path(f"hf:{NREPO}:Q8_0").name == "new-Q8_0.gguf" and len(hub_online.calls) == 2  # from the cache now
    assert hub.hf_path(f"hf:{NREPO}").name == "new-Q4_K_M.gguf"  # the default: Q8_0 alone in the cache is no Q4_K_M
    assert hub_online.calls[-2:] == [("list", NREPO, None), ("download", NREPO, "new-Q4_K_M.gguf", None)]
    assert hub.hf_path(f"hf:{NREPO}@v3:Q8_0").name == "new-Q8_0.gguf"
    assert hub_online.calls[-2:] == [("list", NREPO, "v3"), ("download", NREPO, "new-Q8_0.gguf", "v3")]
    n = len(hub_online.calls)
    with pytest.raises(hub.HubError, match=r"new-F16-00001-of-00002\.gguf is the first of 2 shards"):
        hub.hf_path(f"hf:{NREPO}:F16")
    with pytest.raises(hub.HubError, match=rf"no GGUF file matches quant 'IQ2_XS' in {NREPO} on the Hugging Face hub: new-F16-00001"):
        hub.hf_path(f"hf:{NREPO}:IQ2_XS")
    assert [c[0] for c in hub_online.calls[n:]] == ["list", "list"]  # nothing downloaded
    hub_online.files["x/new-Q4_K_M.gguf"] = b"twin"
    with pytest.raises(hub.HubError, match=r"several GGUF files match quant 'Q4_K_M' in new-org/new-GGUF on the Hugging Face hub"):
        hub.hf_path(f"hf:{NREPO}@v4")


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "true"}, {"TRANSFORMERS_OFFLINE": "1"}])
def test_huggingface_hubs_offline_switch_stops_every_download(hf_cache, hub_online, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    hub_online.files = {"model-Q8_0.gguf": b"w"}
    for ref, cmd in (
        (f"hf:{NREPO}/model-Q8_0.gguf", f"hf download {NREPO} model-Q8_0.gguf"),
        (f"hf:{NREPO}:Q8_0", f"hf download {NREPO} --include '*[Qq]8_0*.gguf'"),
    ):
        with pytest.raises(hub.HubError) as e:
            hub.hf_path(ref)
        var = next(iter(env))
        assert f"nothing is downloaded: ${var} is {env[var]!r} (huggingface_hub's offline switch)" in str(e.value) and cmd in str(e.value)
    assert hub_online.calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # read as huggingface_hub reads it: set and not true wins
    assert hub.hf_path(f"hf:{NREPO}:Q8_0").name == "model-Q8_0.gguf"


class _LocalEntryNotFound(FileNotFoundError):
    pass


def _no_network_error():
    try:
        try:
            raise ConnectionError("[Errno -3] Temporary failure in name resolution")
        except ConnectionError as dns:
            raise _LocalEntryNotFound("An error happened while trying to locate the file on the Hub.\nPlease check your connection.") from dns
    except _LocalEntryNotFound as e:
        return e


def test_a_failed_download_is_the_clear_error_with_its_cause(hf_cache, hub_online, capsys):
    hub_online.fail = _no_network_error()
    hub_online.files = {"model-Q8_0.gguf": b"w"}
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(f"hf:{NREPO}/model-Q8_0.gguf")
    msg = str(e.value)
    assert str(hf_cache / "models--new-org--new-GGUF") in msg and "downloading it with huggingface_hub failed" in msg
    assert f"hf download {NREPO} model-Q8_0.gguf (older huggingface_hub: huggingface-cli download {NREPO} model-Q8_0.gguf)" in msg
    assert msg.endswith(
        "cause: _LocalEntryNotFound: An error happened while trying to locate the file on the Hub. Please check your connection. "
        "(caused by ConnectionError: [Errno -3] Temporary failure in name resolution)"
    )
    assert e.value.__cause__ is hub_online.fail
    with pytest.raises(hub.HubError, match=rf"listing the files of {NREPO} with huggingface_hub failed; .* cause: _LocalEntryNotFound: .*name resolution\)$"):
        hub.hf_path(f"hf:{NREPO}:Q8_0")
    assert cli.main(["info", f"hf:{NREPO}:Q8_0"]) == 1  # a one-line error, no traceback
    err = capsys.readouterr().err
    assert err.startswith(f"error: hf:{NREPO}:Q8_0: ") and "Traceback" not in err
    # the default's "only GGUF file" is the repository's to say; when it cannot be asked, the cached one serves
    _add(hf_cache, "o/one", CG, {"m-Q8_0.gguf": b"x"}, {"main": CG})
    assert hub.hf_path("hf:o/one").name == "m-Q8_0.gguf" and hub_online.calls[-1] == ("list", "o/one", None)


def test_without_huggingface_hub_the_error_says_how_to_get_it(hf_cache, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails: as if not installed
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(f"hf:{NREPO}/model-Q8_0.gguf")
    assert "nothing is downloaded: huggingface_hub is not installed (pip install huggingface_hub" in str(e.value)
    assert f"hf download {NREPO} model-Q8_0.gguf" in str(e.value)
    assert hub.hf_path(f"hf:{REPO}/README.md").read_bytes() == b"main"  # the cache needs no huggingface_hub


def test_the_real_huggingface_hub_without_network_fails_cleanly(tmp_path, monkeypatch):
    """No network here: the real hf_hub_download must end in the clear HubError, quickly. (With network,
    the repository does not exist: the same HubError, with the hub's answer as the cause.)"""
    hfh = pytest.importorskip("huggingface_hub")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hfh.constants, "HF_HUB_OFFLINE", False)  # as read when it was imported
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = "hf:edgesdk-test/no-such-repo-4f1c/model-Q8_0.gguf"
    t0 = time.monotonic()
    with pytest.raises(hub.HubError) as e:
        hub.hf_path(ref)
    elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert msg.startswith(f"{ref}: ") and str(tmp_path / "hub" / "models--edgesdk-test--no-such-repo-4f1c") in msg
    assert "hf download edgesdk-test/no-such-repo-4f1c model-Q8_0.gguf" in msg and "; cause: " in msg
    assert elapsed < 15, elapsed  # huggingface_hub alone retries for ~23 s; a DNS failure is immediate
    with pytest.raises(hub.HubError, match=r"edgesdk-test/no-such-repo-4f1c .*; cause: "):
        hub.hf_path("hf:edgesdk-test/no-such-repo-4f1c:Q8_0")  # the listing too
    assert time.monotonic() - t0 < 30


def test_an_unreachable_hub_is_one_quick_clear_error(hf_cache, monkeypatch):
    hfh = pytest.importorskip("huggingface_hub")
    import huggingface_hub.utils

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    asked = []

    class Session:
        def head(self, url, timeout=None):
            asked.append(url)
            raise ConnectionError("[Errno -2] Name or service not known")

    def never(*a, **kw):
        raise AssertionError("no download or listing after the probe failed")

    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: Session())
    monkeypatch.setattr(hfh, "hf_hub_download", never)
    monkeypatch.setattr(hfh, "list_repo_files", never)
    for ref in (f"hf:{NREPO}/model-Q8_0.gguf", f"hf:{NREPO}:Q8_0"):
        with pytest.raises(
            hub.HubError,
            match=r"cannot be reached, so nothing is downloaded; fetch it where there is network: hf download .*"
            r"; cause: ConnectionError: \[Errno -2\] Name or service not known$",
        ):
            hub.hf_path(ref)
    assert asked == [hfh.constants.ENDPOINT] * 2
