"""Plugin discovery, exactly as a third party would ship a backend, and plugins that misbehave."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgesdk
from conftest import BackendsPlugin
from edgesdk import cli
from edgesdk._registry import reset_registry
from edgesdk.backend import Backend, Device, Runner

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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(site),
            str(ROOT / "samples" / "plugin_template"),
        ],
        check=True,
    )
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
    _add_dist(
        tmp_path,
        "broken_plugins",
        """
        [edgesdk.backends]
        importboom = importboom_plugin
        probeboom = probeboom_plugin
        oldapi = oldapi_plugin
        hookboom = hookboom_plugin
    """,
        {
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
        },
    )
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
    out = subprocess.run(
        [sys.executable, "-m", "edgesdk.cli", "devices"], capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    )
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


class _Probed(Backend):
    """A backend with one device, for plugins built inside a test."""

    formats = ("onnx",)

    def __init__(self, name):
        self.name = name

    def probe(self):
        return [Device(self.name, f"{self.name}:0", "cpu", "test device")]


def test_misspelt_hook_skips_that_plugin_only_and_devices_reports_it(clean_registry, capsys):
    class Misspelt:
        @edgesdk.hookimpl
        def edgesdk_backend(self):  # the hook is edgesdk_backends: pluggy's check_pending catches it
            return [_Probed("misspelt")]

    reg = reset_registry([Misspelt(), BackendsPlugin(_Probed("good"))])
    assert "good" in reg.backend_names and "misspelt" not in reg.backend_names
    bad = next(p for p in reg.plugins if p.name == "Misspelt")
    assert not bad.loaded and "unknown hook 'edgesdk_backend'" in bad.error and "edgesdk_backends" in bad.error
    assert any(p.loaded and p.name == "BackendsPlugin" for p in reg.plugins)

    assert cli.main(["devices"]) == 0
    text = capsys.readouterr().out
    assert "plugin Misspelt (register()) skipped" in text and "unknown hook 'edgesdk_backend'" in text
    assert "good:0" in text
    assert cli.main(["devices", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert not plugins["Misspelt"]["loaded"] and "edgesdk_backend'" in plugins["Misspelt"]["error"]


class _PartlyGenerative(Runner):
    def generate(self, prompt, **kwargs):
        return ""


class _Loads(_Probed):
    def __init__(self, name, runner_cls):
        super().__init__(name)
        self.runner_cls, self.closed = runner_cls, []

    def load(self, model, device, options):
        runner = self.runner_cls()
        runner.inputs, runner.outputs = model.info["inputs"], model.info["outputs"]
        runner.close = lambda: self.closed.append(True)
        return runner


def test_generative_runner_contract_is_checked_at_load(clean_registry, identity_onnx):
    half = _Loads("half", _PartlyGenerative)
    reset_registry([BackendsPlugin(half, _Loads("plain", Runner))])
    with pytest.raises(edgesdk.errors.PluginError, match="lacking generate_stream, perplexity.*GenerativeRunner"):
        edgesdk.Session(identity_onnx, require="half")
    assert half.closed == [True]  # nothing leaks from the refused load
    with pytest.raises(edgesdk.EdgeSDKError, match="not a generative model on backend 'plain'; use run()"):
        edgesdk.Session(identity_onnx, require="plain").generate("hi")


def test_backend_author_helpers_are_public():
    from edgesdk import backend
    from edgesdk._options import typed_backend_options
    from edgesdk.llm._runner import LlmRunner, gguf_refusal

    assert backend.gguf_refusal is gguf_refusal and backend.LlmRunner is LlmRunner
    assert backend.typed_backend_options is typed_backend_options
    assert backend.OrtRunner.__module__ == "edgesdk_backends.onnxruntime"
    assert set(backend.__all__) >= {"GenerativeRunner", "gguf_refusal", "typed_backend_options", "OrtRunner"}
    assert backend.missing_generative(LlmRunner.__new__(LlmRunner)) == ()
    with pytest.raises(AttributeError):
        _ = backend.no_such_helper


def test_plugin_cli_commands_and_quantize_targets(clean_registry, capsys):
    """A plugin adds a sub-command and an ``edgesdk quantize --for`` mode; one that raises or takes a
    built-in name loses only its own contribution."""
    from edgesdk._errors import InputError
    from edgesdk.quant.cli import QuantizeTarget

    ran = []

    class Toy(QuantizeTarget):
        name, title, formats = "toy", "a toy format", ("toy",)

        def add_arguments(self, group):
            group.add_argument("--toy-level", type=int)

        def run(self, args, output, options_fn):
            if output is None:
                raise InputError("--for toy needs an output")
            ran.append((args.model, output, args.toy_level, options_fn(args).threads))
            return 0

    class Clashing(QuantizeTarget):
        name = "clash"

        def add_arguments(self, group):
            group.add_argument("--eval-text")  # the --to mode's option: this target is skipped

    class Plugin:
        @edgesdk.hookimpl
        def edgesdk_cli_commands(self, subparsers, add_placement_args, options_fn):
            p = subparsers.add_parser("hello", help="say hello")
            add_placement_args(p)
            p.set_defaults(fn=lambda a: print(f"hello threads={options_fn(a).threads}") or 0)

        @edgesdk.hookimpl
        def edgesdk_quantize_targets(self):
            return [Toy(), Clashing()]

    class Broken:
        @edgesdk.hookimpl
        def edgesdk_cli_commands(self, subparsers, add_placement_args, options_fn):
            subparsers.add_parser("run")  # a built-in name: argparse refuses it, the CLI keeps working

        @edgesdk.hookimpl
        def edgesdk_quantize_targets(self):
            raise RuntimeError("no targets today")

    reset_registry([Plugin(), Broken()])
    assert cli.main(["hello", "--threads", "3"]) == 0
    assert capsys.readouterr().out == "hello threads=3\n"
    assert cli.main(["quantize", "--for", "toy", "m.toy", "o.toy", "--toy-level", "2", "--threads", "2"]) == 0
    assert ran == [("m.toy", "o.toy", 2, 2)]
    assert cli.main(["quantize", "--for", "toy", "m.toy"]) == 1
    assert "--for toy needs an output" in capsys.readouterr().err
    assert cli.main(["quantize", "--to", "Q4_K_M", "m.gguf", "o.gguf", "--toy-level", "1"]) == 1
    assert "--toy-level apply to --for toy, not GGUF quantization (--to TYPE)" in capsys.readouterr().err
    assert cli.main(["quantize", "--to", "Q4_K_M", "m.toy", "o.gguf"]) == 1
    assert "for TOY models use --for toy" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # skipped: its option clashes with another mode's
        cli.main(["quantize", "--for", "clash", "m.toy", "o.toy"])
