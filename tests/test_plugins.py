"""Plugin discovery, exactly as a third party would ship a backend, and plugins that misbehave."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from edgesdk._registry import reset_registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry(monkeypatch):
    """Each test builds its own registry; the global one is rebuilt afterwards."""
    for var in ("EDGESDK_DISABLE_PLUGIN_AUTOLOAD", "EDGESDK_PLUGINS", "EDGESDK_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    reset_registry()


@pytest.fixture(scope="module")
def installed_template(tmp_path_factory):
    """pip-install samples/plugin_template into a private directory (the venv is not touched)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(site), str(ROOT / "samples" / "plugin_template")], check=True)
    return site


def _add_dist(site: Path, name: str, entry_points: str, files: dict):
    """Write a minimal installed distribution: package files plus dist-info with entry points."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text))


def test_third_party_plugin_is_discovered_and_used(clean_registry, installed_template, identity_onnx):
    clean_registry.syspath_prepend(str(installed_template))
    reg = reset_registry()
    assert "example" in reg.backend_names
    assert any(d.id == "example:ref" for d in reg.devices())
    s = edgesdk.Session(identity_onnx, require="example")
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    np.testing.assert_array_equal(s.run({"x": x})["y"], x)
    assert s.placement.device.id == "example:ref"
    assert [n.op_type for n in s.placement.nodes] == ["Identity"]
    # Without being asked for, its low score keeps ONNX Runtime first.
    assert edgesdk.Session(identity_onnx).placement.device.id == "onnxruntime:cpu"


def test_broken_plugins_are_reported_not_fatal(clean_registry, tmp_path, identity_onnx):
    _add_dist(tmp_path, "broken_plugins", """
        [edgesdk.backends]
        importboom = importboom_plugin
        probeboom = probeboom_plugin
        oldapi = oldapi_plugin
        hookboom = hookboom_plugin
    """, {
        "importboom_plugin.py": "raise RuntimeError('vendor library libfoo.so not found')\n",
        "probeboom_plugin.py": """
            import edgesdk
            from edgesdk.backend import Backend
            class B(Backend):
                name = "probeboom"
                formats = ("onnx",)
                def probe(self):
                    raise OSError("driver crashed")
            @edgesdk.hookimpl
            def edgesdk_backends():
                return [B()]
        """,
        "oldapi_plugin.py": """
            import edgesdk
            from edgesdk.backend import Backend
            class B(Backend):
                name = "oldapi"
                api_version = 0
            @edgesdk.hookimpl
            def edgesdk_backends():
                return [B()]
        """,
        "hookboom_plugin.py": """
            import edgesdk
            @edgesdk.hookimpl
            def edgesdk_backends():
                raise ValueError("bad config")
        """,
    })
    clean_registry.syspath_prepend(str(tmp_path))
    reg = reset_registry()
    errors = {p.name: p.error for p in reg.plugins if not p.loaded}
    assert "libfoo.so" in errors["importboom"]
    assert "bad config" in errors["hookboom"]
    st = {s.name: s for s in reg.statuses()}
    assert not st["probeboom"].available and "driver crashed" in st["probeboom"].reason
    assert "API version 0" in st["oldapi"].reason and "expects 1" in st["oldapi"].reason
    s = edgesdk.Session(identity_onnx)  # the good backends still work
    assert s.placement.device.id == "onnxruntime:cpu"
    assert any(r.backend == "probeboom" and "driver crashed" in r.reason for r in s.placement.refusals)
    out = subprocess.run([sys.executable, "-m", "edgesdk.cli", "devices"], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0
    assert "libfoo.so" in out.stdout and "driver crashed" in out.stdout and "API version 0" in out.stdout


def test_autoload_switch_and_block_list(clean_registry, identity_onnx):
    clean_registry.setenv("EDGESDK_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = reset_registry()
    assert reg.backend_names == []
    with pytest.raises(edgesdk.PlacementError):
        edgesdk.Session(identity_onnx)
    clean_registry.setenv("EDGESDK_PLUGINS", "onnxruntime")
    assert reset_registry().backend_names == ["onnxruntime"]
    clean_registry.delenv("EDGESDK_DISABLE_PLUGIN_AUTOLOAD")
    clean_registry.delenv("EDGESDK_PLUGINS")
    clean_registry.setenv("EDGESDK_BLOCK_PLUGINS", "tflite")
    reg = reset_registry()
    assert "tflite" not in reg.backend_names and "onnxruntime" in reg.backend_names
    assert any(p.name == "tflite" and "blocked" in p.error for p in reg.plugins)


def test_register_plugin_object_and_observer_hook(clean_registry, identity_onnx):
    seen, sniffed = [], []

    class Observer:
        @edgesdk.hookimpl
        def edgesdk_session_created(self, session):
            seen.append(session.placement.device.id)

        @edgesdk.hookimpl
        def edgesdk_detect_format(self, path, head):
            sniffed.append(path.name)
            return "onnx" if path.suffix == ".mymodel" else None

    class Raising:
        @edgesdk.hookimpl
        def edgesdk_session_created(self, session):
            raise RuntimeError("telemetry down")

    reset_registry([Observer(), Raising()])
    edgesdk.Session(identity_onnx)
    assert seen == ["onnxruntime:cpu"]
    renamed = Path(identity_onnx).with_suffix(".mymodel")
    renamed.write_bytes(Path(identity_onnx).read_bytes())
    assert edgesdk.Session(renamed).model.format == "onnx"
    assert sniffed == [renamed.name]
