"""Placement rules: preference order, simulated devices, fallback reporting, require= strictness.

A small in-test backend plays an accelerator whose runtime cannot take some nodes, the situation a
real NPU/GPU execution provider produces; the ONNX Runtime CPU EP really runs the model.
"""

import logging

import numpy as np
import pytest

import edgesdk
from edgesdk._plan import candidates
from edgesdk._registry import reset_registry
from edgesdk.backend import Backend, Device, NodePlacement, Support

from conftest import BackendsPlugin, make_onnx


class Accel(Backend):
    """An 'npu' that delegates execution to ORT's CPU EP but reports Relu as not taken."""

    formats = ("onnx",)

    def __init__(self, name="accel", simulated=False, partial=False):
        self.name, self.simulated, self.partial = name, simulated, partial

    def probe(self):
        return [Device(self.name, f"{self.name}:0", "npu", f"{self.name} NPU", None, 100, simulated=self.simulated)]

    def check(self, model, device, options):
        return Support(ok=True, partial=self.partial, reason="Relu unsupported" if self.partial else None)

    def load(self, model, device, options):
        ort_backend = edgesdk.get_registry().backend("onnxruntime")
        cpu = next(d for d in edgesdk.get_registry().devices() if d.id == "onnxruntime:cpu")
        runner = ort_backend.load(model, cpu, options)
        runner.nodes = tuple(
            NodePlacement(
                n.node,
                n.op_type,
                "onnxruntime:cpu" if n.op_type == "Relu" else device.id,
                "Relu is not supported by the accel compiler" if n.op_type == "Relu" else None,
            )
            for n in runner.nodes
        )
        return runner


@pytest.fixture
def relu_add(tmp_path):
    from onnx import TensorProto, helper

    return make_onnx(
        tmp_path / "m.onnx",
        [helper.make_node("Add", ["x", "x"], ["t"], name="add0"), helper.make_node("Relu", ["t"], ["y"], name="relu0")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )


@pytest.fixture
def registry_with(monkeypatch):
    # A real NPU plugin (qnn) would compete with the in-test accelerator; these tests pin the rules.
    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "qnn")

    def make(*backends):
        return reset_registry([BackendsPlugin(*backends)])

    yield make
    monkeypatch.undo()
    reset_registry()


def test_fallback_is_reported_and_warned(registry_with, relu_add, caplog):
    registry_with(Accel())
    with caplog.at_level(logging.WARNING, logger="edgesdk.plan"):
        s = edgesdk.Session(relu_add)
    assert s.placement.device.id == "accel:0"
    fb = s.placement.fallback_nodes
    assert [(n.node, n.device_id) for n in fb] == [("relu0", "onnxruntime:cpu")]
    assert "not supported by the accel compiler" in str(s.placement)
    assert any("relu0" in r.message for r in caplog.records)
    np.testing.assert_array_equal(s.run({"x": np.array([-1, 2], np.float32)})["y"], [0, 4])


def test_require_turns_fallback_into_error(registry_with, relu_add):
    registry_with(Accel())
    with pytest.raises(edgesdk.PlacementError) as ei:
        edgesdk.Session(relu_add, require="npu")
    assert "relu0 (Relu) -> onnxruntime:cpu" in str(ei.value)
    registry_with(Accel(partial=True))
    with pytest.raises(edgesdk.PlacementError, match="can run only part of the model"):
        edgesdk.Session(relu_add, require="accel")


def test_simulated_devices_only_when_named(registry_with, identity_onnx):
    reg = registry_with(Accel("sim", simulated=True))
    opts = edgesdk.SessionOptions()
    pool, _ = candidates(reg.devices(), opts)
    # prefer=npu first, but a simulator is not hardware: it ranks after every real device (with other simulated ones).
    assert all(d.simulated for d in pool[[d.id for d in pool].index("sim:0") :])
    assert edgesdk.Session(identity_onnx).placement.device.id != "sim:0"
    assert edgesdk.Session(identity_onnx, prefer=("sim", "cpu")).placement.device.id == "sim:0"
    assert edgesdk.Session(identity_onnx, require="npu").placement.device.id == "sim:0"


def test_preference_order(registry_with, identity_onnx):
    registry_with(Accel())
    assert edgesdk.Session(identity_onnx).placement.device.id == "accel:0"
    s = edgesdk.Session(identity_onnx, prefer=("cpu",))
    assert s.placement.device.id == "onnxruntime:cpu"
    assert any(r.device == "accel:0" and "lower in preference" in r.reason for r in s.placement.refusals)
