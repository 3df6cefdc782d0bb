"""Measured placement (SessionOptions(select="measured")): the faster device wins, the decision is
cached and invalidated by what changes it, a failing device is refused with its reason, energy is
read from a RAPL tree, and the real devices here are measured the same way.

In-test backends delegate to ONNX Runtime's CPU EP and add a known delay (and energy) per run, so the
expected winner is known without trusting this machine's timing beyond a 10x margin.
"""

import json
import logging

import numpy as np
import pytest

import edgesdk
from edgesdk import _measured, _timing
from edgesdk._io import cache_dir
from edgesdk._registry import reset_registry

from conftest import make_onnx
from paced import Paced


# Trials are capped at 0.3 s per device: a 60 ms device then runs ~5 times, a 2 ms one 10 times.
# ORT's own CPU device (no delay) is kept out, so the in-test devices decide.
MEASURED = dict(select="measured", trial_s=0.3, prefer=("npu", "gpu", "cpu"), avoid={"onnxruntime": "not under test"})


def test_faster_device_wins_over_the_preferred_one(paced_backends, relu_onnx):
    slow, fast = paced_backends(Paced("slow", 0.06, kind="npu"), Paced("fast", 0.002, kind="gpu"))
    assert edgesdk.Session(relu_onnx).placement.device.id == "slow:0"  # preference alone: the npu
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        p = s.placement
        assert (p.device.id, p.selection) == ("fast:0", "measured")
        assert "lowest median run time" in p.reason and "slow:0" in p.reason
        trials = {t.device: t for t in p.trials}
        assert set(trials) == {"slow:0", "fast:0"}
        assert trials["slow:0"].median_s > 10 * trials["fast:0"].median_s
        assert all(t.runs >= 1 and t.first_s > 0 and t.p90_s >= t.median_s for t in trials.values())
        text = str(p)
        assert "chosen by measurement: lowest median" in text and "* fast:0: median" in text
        np.testing.assert_array_equal(s.run({"x": -np.ones((1, 8), np.float32)})["y"], 0)
    assert slow.runs <= 1 + 10  # one warm-up, then the time cap stopped it


def test_the_decision_is_cached_and_reused_without_a_trial(paced_backends, relu_onnx):
    slow, fast = paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu"))
    edgesdk.Session(relu_onnx, **MEASURED).close()
    runs, loads = (slow.runs, fast.runs), (slow.loads, fast.loads)
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        assert (s.placement.device.id, s.placement.selection) == ("fast:0", "measured (cached)")
        assert "(measured 20" in s.placement.reason and "read from the placement cache" in s.placement.reason
        assert {t.device for t in s.placement.trials} >= {"slow:0", "fast:0"}
    assert (slow.runs, fast.runs) == runs  # no trial ran
    assert (slow.loads, fast.loads) == (loads[0], loads[1] + 1)  # only the winner was loaded
    [entry] = _measured.cached_decisions()
    assert entry["winner"] == "fast:0" and entry["model"] == "m.onnx"


@pytest.mark.parametrize("change", ["options", "model", "runtime version", "devices"])
def test_a_change_of_key_measures_again(paced_backends, relu_onnx, change):
    slow, fast = paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu"))
    edgesdk.Session(relu_onnx, **MEASURED).close()
    kw = dict(MEASURED)
    if change == "options":
        kw["threads"] = 1
    elif change == "model":
        from onnx import TensorProto, helper

        make_onnx(
            relu_onnx,
            [helper.make_node("Sigmoid", ["x"], ["y"], name="sig0")],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        )
    elif change == "runtime version":
        slow, fast = paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu", version="2.0"))
    else:
        paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu"), Paced("third", 0.03, kind="gpu"))
    with edgesdk.Session(relu_onnx, **kw) as s:
        assert s.placement.selection == "measured"
    assert len(_measured.cached_decisions()) == 2  # the old decision stays for its own key


def test_a_corrupt_entry_is_rebuilt(paced_backends, relu_onnx, caplog):
    paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu"))
    edgesdk.Session(relu_onnx, **MEASURED).close()
    [path] = list(cache_dir("placement").glob("*.json"))
    for garbage in (b"{not json", json.dumps({"key": {"other": 1}, "winner": "fast:0", "trials": []}).encode()):
        path.write_bytes(garbage)
        with caplog.at_level(logging.WARNING, logger="edgesdk.plan"):
            with edgesdk.Session(relu_onnx, **MEASURED) as s:
                assert (s.placement.device.id, s.placement.selection) == ("fast:0", "measured")
        assert any("unusable" in r.message for r in caplog.records)
        assert json.loads(path.read_text())["winner"] == "fast:0"


def test_a_device_failing_its_trial_is_refused_with_the_reason(paced_backends, relu_onnx):
    paced_backends(Paced("broken", 0.0, fail="kernel timeout on the accelerator"), Paced("fast", 0.002, kind="gpu"))
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        assert s.placement.device.id == "fast:0"
        [refusal] = [r for r in s.placement.refusals if r.device == "broken:0"]
        assert refusal.reason == "trial failed: RuntimeError: kernel timeout on the accelerator"
        assert "broken:0: trial failed" in str(s.placement)


def test_when_every_trial_fails_the_error_names_each_cause(paced_backends, relu_onnx):
    paced_backends(Paced("broken", 0.0, fail="no"))
    with pytest.raises(edgesdk.PlacementError) as ei:
        edgesdk.Session(relu_onnx, **{**MEASURED, "require": "broken"})
    assert "trial failed: RuntimeError: no" in str(ei.value.refusals)


def test_a_tie_goes_to_the_preferred_device(paced_backends, relu_onnx):
    paced_backends(Paced("a", 0.02, kind="npu"), Paced("b", 0.02, kind="gpu"))
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        assert s.placement.device.id == "a:0"
        assert "earlier in the preference order" in s.placement.reason or "lowest" in s.placement.reason


def test_simulated_devices_are_measured_only_when_named(paced_backends, relu_onnx):
    paced_backends(Paced("sim", 0.0, simulated=True), Paced("real", 0.005, kind="gpu"))
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        assert {t.device for t in s.placement.trials} == {"real:0"}
        assert any(r.device == "sim:0" and "simulated" in r.reason for r in s.placement.refusals)
    with edgesdk.Session(relu_onnx, **{**MEASURED, "prefer": ("sim", "gpu")}) as s:
        assert {t.device for t in s.placement.trials} == {"real:0", "sim:0"}
        assert s.placement.device.id == "sim:0"  # named, and faster
    paced_backends(Paced("sim", 0.0, simulated=True))
    with edgesdk.Session(relu_onnx, **MEASURED) as s:  # the only device that reads the model: measured after all
        assert {t.device for t in s.placement.trials} == {"sim:0"}


def _rapl(tmp_path, packages=1):
    root = tmp_path / "powercap"
    for i in range(packages):
        z = root / f"intel-rapl:{i}"
        (z / f"intel-rapl:{i}:0").mkdir(parents=True)  # a sub-zone: inside the package's count
        (z / "energy_uj").write_text("1000")
        (z / "max_energy_range_uj").write_text("262143328850")
        (z / f"intel-rapl:{i}:0" / "energy_uj").write_text("5")
    return root


def test_energy_objective_picks_the_frugal_device(paced_backends, relu_onnx, tmp_path, monkeypatch):
    root = _rapl(tmp_path)
    monkeypatch.setattr(_timing, "POWERCAP", root)
    counter = root / "intel-rapl:0" / "energy_uj"
    # "hot" is 3x faster but uses 20x the energy per run.
    paced_backends(
        Paced("hot", 0.01, kind="npu", uj_per_run=2_000_000, counter=counter), Paced("frugal", 0.03, kind="gpu", uj_per_run=100_000, counter=counter)
    )
    with edgesdk.Session(relu_onnx, **{**MEASURED, "objective": "energy"}) as s:
        assert s.placement.device.id == "frugal:0"
        assert "lowest energy per run" in s.placement.reason
        trials = {t.device: t for t in s.placement.trials}
        assert trials["hot:0"].energy_j == pytest.approx(2.0, rel=0.01)
        assert trials["frugal:0"].energy_j == pytest.approx(0.1, rel=0.01)
    with edgesdk.Session(relu_onnx, **MEASURED) as s:
        assert s.placement.device.id == "hot:0"  # by latency


def test_energy_objective_without_a_counter_says_it_chose_by_latency(paced_backends, relu_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(_timing, "POWERCAP", tmp_path / "absent")
    paced_backends(Paced("slow", 0.06), Paced("fast", 0.002, kind="gpu"))
    with edgesdk.Session(relu_onnx, **{**MEASURED, "objective": "energy"}) as s:
        assert s.placement.device.id == "fast:0"
        assert "chosen by latency, as no energy counter is readable (no RAPL package counters under" in s.placement.reason


def test_energy_meter_sums_packages_and_handles_wraparound(tmp_path):
    root = _rapl(tmp_path, packages=2)
    m = _timing.EnergyMeter(root)
    assert len(m.zones) == 2
    (root / "intel-rapl:0" / "energy_uj").write_text("3000")  # +2000 uJ
    (root / "intel-rapl:1" / "max_energy_range_uj").write_text("10000")
    m2 = _timing.EnergyMeter(root)
    (root / "intel-rapl:1" / "energy_uj").write_text("500")  # wrapped: 1000 -> 10000 -> 500 = +9500
    assert m2.joules() == pytest.approx(9500e-6)
    assert m.joules() == pytest.approx(2000e-6 + (500 - 1000 + 262143328850) * 1e-6)


def test_an_unreadable_counter_is_named(tmp_path, monkeypatch):
    root = _rapl(tmp_path)
    real_read = type(root).read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read(self, *a, **k)

    monkeypatch.setattr(type(root), "read_text", deny)
    with pytest.raises(_timing.EnergyUnavailable, match="not readable by this user"):
        _timing.EnergyMeter(root)


@pytest.mark.parametrize("bad", [dict(select="fastest"), dict(objective="power"), dict(trial_s=0), dict(trial_s=True), dict(trial_s=1e4)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        edgesdk.SessionOptions(**bad)


def test_real_devices_are_measured_and_cached(relu_onnx, monkeypatch, tmp_path):
    """The devices this machine really has: every real ONNX device is measured, the decision cached."""
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    reset_registry()
    try:
        with edgesdk.Session(relu_onnx, select="measured", trial_s=0.2) as s:
            real = [d.id for d in edgesdk.devices() if not d.simulated and "onnx" in edgesdk.get_registry().backend(d.backend).formats]
            assert {t.device for t in s.placement.trials} == set(real)
            assert s.placement.device.id in real
        with edgesdk.Session(relu_onnx, select="measured", trial_s=0.2) as s:
            assert s.placement.selection == "measured (cached)"
    finally:
        reset_registry()


def test_real_gguf_devices_cpu_and_opencl(tiny_llama_gguf, monkeypatch, tmp_path):
    """A language model's trial is one forward pass; OpenCL (simulated here by PoCL) is measured when named."""
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path / "cache"))
    reset_registry()
    try:
        reg = edgesdk.get_registry()
        if not reg.status("opencl").devices:
            pytest.skip(f"no OpenCL device: {reg.status('opencl').reason}")
        with edgesdk.Session(tiny_llama_gguf, select="measured", trial_s=0.3, prefer=("opencl", "cpu")) as s:
            measured = {t.device: t for t in s.placement.trials}
            assert any(d.startswith("opencl:") for d in measured) and "cpu:0" in measured
            assert all(t.error is None and t.runs >= 1 for t in measured.values())
            assert s.generate("Hello", max_tokens=3, temperature=0) is not None
    finally:
        reset_registry()
