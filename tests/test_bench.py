"""``edgesdk bench`` and edgesdk.bench.bench: every accepting device measured through placement's own
checks, the table / --json / --plot outputs, --profile's op breakdown, a language model's speeds, and
bad arguments refused by name."""

import json

import numpy as np
import pytest

import edgesdk
from edgesdk import cli
from edgesdk._registry import reset_registry
from edgesdk.bench import bench

from paced import Paced


class Cached(Paced):
    """A backend with an artifact cache: it records the artifact_cache option of every load."""

    caches_artifacts = True

    def load(self, relu_onnx, device, options):
        self.seen = getattr(self, "seen", []) + [options.artifact_cache]
        return super().load(relu_onnx, device, options)


class OnDevice(Paced):
    """A backend whose runner says how much device memory the model holds."""

    def load(self, model, device, options):
        runner = super().load(model, device, options)
        runner.device_memory = lambda: 5 << 20
        return runner


class TfliteOnly(Paced):
    formats = ("tflite",)


def test_every_accepting_real_device_is_measured(paced_backends, relu_onnx):
    fast, cached, _, sim = paced_backends(Paced("fast", 0.001, kind="gpu"), Cached("npu1", 0.001), TfliteOnly("tfl", 0.0), Paced("sim", 0.0, simulated=True))
    rep = bench(relu_onnx, runs=4, warmup=2)
    by = {d.device: d for d in rep.devices}
    assert set(by) == {"fast:0", "npu1:0", "onnxruntime:cpu"}  # tflite-only and simulated left out
    for d in by.values():
        assert d.error is None and len(d.timing.samples) == 4 and d.timing.first_s > 0
        assert d.peak_rss_bytes > 0 and d.rss_increase_bytes >= 0 and d.load_s > 0
        assert d.timing.percentile_s(99) >= d.timing.median_s
    assert fast.runs == 6  # two warm-ups, four timed
    assert by["npu1:0"].load_cached_s is not None and by["fast:0"].load_cached_s is None
    assert cached.seen == [False, True, True]  # cold (no cache), fill, from the cache
    assert by["onnxruntime:cpu"].nodes == {"onnxruntime:cpu": 1}
    assert {d.device for d in bench(relu_onnx, runs=1, all_devices=True).devices} >= {"sim:0"}


def test_named_devices_and_a_refusal_reported_with_its_reason(paced_backends, relu_onnx):
    paced_backends(Paced("fast", 0.0, kind="gpu"), TfliteOnly("tfl", 0.0))
    rep = bench(relu_onnx, devices=["tfl:0", "fast:0"], runs=2)
    tfl, fast = rep.devices
    assert tfl.error == "does not read onnx models (reads tflite)" and fast.error is None
    with pytest.raises(edgesdk.EdgeSDKError, match="no device nope:0; devices here: .*fast:0"):
        bench(relu_onnx, devices=["nope:0"])


def test_a_device_whose_runs_fail_is_reported_not_fatal(paced_backends, relu_onnx):
    paced_backends(Paced("broken", 0.0, fail="device lost"))
    rep = bench(relu_onnx, devices=["broken:0", "onnxruntime:cpu"], runs=2)
    assert rep.devices[0].error == "run failed: RuntimeError: device lost" and rep.devices[1].error is None


@pytest.mark.parametrize(
    "kw, match",
    [(dict(runs=0), "runs must be"), (dict(warmup=0), "warmup must be"), (dict(runs=True), "runs must be"), (dict(gen_tokens=1), "gen_tokens must be")],
)
def test_bad_arguments(paced_backends, relu_onnx, kw, match):
    paced_backends()
    with pytest.raises(ValueError, match=match):
        bench(relu_onnx, **kw)


def test_cli_table_json_and_plot(paced_backends, relu_onnx, tmp_path, capsys):
    paced_backends(OnDevice("fast", 0.001, kind="gpu"))
    png = tmp_path / "bench.png"
    assert cli.main(["bench", str(relu_onnx), "--runs", "5", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("DEVICE"))
    for col in ("LOAD ms", "FIRST ms", "P50 ms", "P90 ms", "P99 ms", "RUNS/S", "PEAK RSS MiB", "DEV MEM MiB", "NODES"):
        assert col in header
    assert "CACHED ms" in header  # shown ("-") with the other timing columns even when no backend caches
    assert "fast:0" in out and "onnxruntime:cpu" in out and f"plot: {png}" in out
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500
    assert cli.main(["bench", str(relu_onnx), "--runs", "3", "--json", "--device", "fast:0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [d] = doc["devices"]
    assert d["device"] == "fast:0" and len(d["timing"]["samples_s"]) == 3 and d["device_memory_bytes"] == 5 << 20
    assert d["timing"]["p90_s"] >= d["timing"]["median_s"] and doc["runs"] == 3


def test_cli_inputs_from_files_and_bad_ones(paced_backends, relu_onnx, tmp_path, capsys):
    paced_backends()
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 8), np.float32))
    assert cli.main(["bench", str(relu_onnx), "--runs", "2", "-i", f"x={x}"]) == 0
    assert "given: x" in capsys.readouterr().out
    np.save(x, np.ones((1, 9), np.float32))
    assert cli.main(["bench", str(relu_onnx), "--runs", "2", "-i", f"x={x}"]) == 1
    assert "not benchmarked" in capsys.readouterr().out
    assert cli.main(["bench", str(relu_onnx), "--plot", str(tmp_path / "x.jpg")]) == 1
    assert "ending in .png" in capsys.readouterr().err


def test_profile_lists_the_slowest_ops_with_their_share(paced_backends, tmp_path, capsys):
    from onnx import TensorProto, helper

    from conftest import make_onnx

    paced_backends()
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm0"),
        helper.make_node("Relu", ["h"], ["r"], name="relu0"),
        helper.make_node("Sigmoid", ["r"], ["y"], name="sig0"),
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], np.ones(256 * 256, np.float32))
    path = make_onnx(
        tmp_path / "mlp.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])],
        initializers=[w],
    )
    rep = bench(path, devices=["onnxruntime:cpu"], runs=5, profile=True)
    [d] = rep.devices
    top = d.top_ops()
    assert {o.node for o, _ in top} == {"mm0", "relu0", "sig0"}
    assert all(o.calls >= 5 for o, _ in top) and sum(s for _, s in top) == pytest.approx(1.0)
    assert top[0][0].op_type == "MatMul"
    assert cli.main(["bench", str(path), "--runs", "3", "--profile", "--device", "onnxruntime:cpu"]) == 0
    assert "slowest ops on onnxruntime:cpu" in capsys.readouterr().out


def test_profile_unsupported_is_said(paced_backends, relu_onnx, capsys):
    paced_backends(Paced("fast", 0.0, kind="gpu"))
    rep = bench(relu_onnx, devices=["fast:0"], runs=1, profile=True)
    assert rep.devices[0].profile_note is None or "per-op" in rep.devices[0].profile_note


def test_language_model_speeds_and_bandwidth(paced_backends, tiny_llama_gguf, capsys):
    paced_backends()
    rep = bench(tiny_llama_gguf, devices=["cpu:0"], runs=2, prompt_tokens=8, gen_tokens=4)
    [d] = rep.devices
    assert d.error is None and d.timing is None
    q = d.llm
    assert q.prompt_tokens == 8 and q.generated_tokens == 4
    assert q.decode_tok_s > 0 and q.prompt_tok_s > 0 and q.ttft_s > 0 and q.weight_bytes > 0
    if edgesdk.kernels.available():
        assert q.dram_gb_s > 0 and q.dram_share == pytest.approx(q.weight_gb_s / q.dram_gb_s)
    assert cli.main(["bench", tiny_llama_gguf, "--device", "cpu:0", "--runs", "1", "--prompt-tokens", "8", "--gen-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "DECODE tok/s" in out and "% OF DRAM" in out


def test_devices_lists_measured_placements(paced_backends, relu_onnx, capsys):
    paced_backends(Paced("fast", 0.001, kind="gpu"))
    edgesdk.Session(relu_onnx, select="measured", trial_s=0.2).close()
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "placement of m.onnx:" in out and "cache placement" in out
    assert cli.main(["devices", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["placements"][0]["model"] == "m.onnx"
    assert cli.main(["bench", str(relu_onnx), "--runs", "1"]) == 0
    assert "measured placement for this model (cached)" in capsys.readouterr().out


def test_dims_fix_the_shapes_a_static_graph_backend_compiles(tmp_path, monkeypatch):
    """--dim / --input give the shapes the runs feed; QNN's HTP compiles exactly those (SessionOptions.input_shapes)."""
    from onnx import TensorProto, helper

    from conftest import make_onnx

    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    reset_registry()
    try:
        if not edgesdk.get_registry().status("qnn").devices:
            pytest.skip(f"no QNN device: {edgesdk.get_registry().status('qnn').reason}")
        path = make_onnx(
            tmp_path / "dyn.onnx",
            [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        )
        [refused] = bench(path, devices=["qnn:htp"], runs=1).devices
        assert "dynamic" in refused.error and "input_shapes" in refused.error
        [d] = bench(path, devices=["qnn:htp"], runs=2, dims={"n": 3}).devices
        assert d.error is None and len(d.timing.samples) == 2 and d.load_cached_s is not None
        [d] = bench(path, devices=["qnn:htp"], runs=1, feeds={"x": np.ones((5, 8), np.float32)}).devices
        assert d.error is None
        with edgesdk.Session(path, require="qnn", input_shapes={"x": [2, 8]}) as s:
            assert s.run({"x": -np.ones((2, 8), np.float32)})["y"].shape == (2, 8)
    finally:
        reset_registry()


@pytest.mark.parametrize("bad", [{"x": [0, 8]}, {"x": "28"}, {"x": [True, 2]}, [("x", [1])], {"x": []}])
def test_bad_input_shapes_are_refused(bad):
    with pytest.raises(ValueError, match="input_shapes"):
        edgesdk.SessionOptions(input_shapes=bad)
