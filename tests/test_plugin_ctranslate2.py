"""plugins/edgesdk-ctranslate2 is found like any third-party plugin: through its installed entry point."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

import edgesdk

pytest.importorskip("edgesdk_ctranslate2", reason="plugins/edgesdk-ctranslate2 is not installed")


def test_entry_point_belongs_to_its_own_distribution():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="edgesdk.backends")}
    ep = eps["ctranslate2"]
    assert ep.value == "edgesdk_ctranslate2" and ep.dist.name == "edgesdk-ctranslate2"
    assert "edgesdk" in " ".join(importlib.metadata.requires("edgesdk-ctranslate2"))


def test_registry_loads_it_from_the_entry_point():
    reg = edgesdk.get_registry()
    plugin = next(p for p in reg.plugins if p.name == "ctranslate2")
    assert plugin.loaded and plugin.source == "entry-point edgesdk-ctranslate2"
    st = reg.status("ctranslate2")
    assert st.available, st.reason
    cpu = next(d for d in st.devices if d.id == "ctranslate2:cpu")
    assert cpu.kind == "cpu" and cpu.backend == "ctranslate2"
    import ctranslate2

    assert sum(d.kind == "gpu" for d in st.devices) == ctranslate2.get_cuda_device_count()


def test_edgesdk_devices_lists_it():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "edgesdk.cli", "devices", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    backend = next(b for b in info["backends"] if b["name"] == "ctranslate2")
    assert backend["available"] and any(d["id"] == "ctranslate2:cpu" and d["kind"] == "cpu" for d in backend["devices"])
    assert any(p["name"] == "ctranslate2" and p["loaded"] and "edgesdk-ctranslate2" in p["source"] for p in info["plugins"])
