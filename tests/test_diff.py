"""Cross-backend diff: metrics, locating the first diverging node, CLI; real runs on CPU EP vs QNN HTP."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest

import edgesdk
from edgesdk._registry import reset_registry
from edgesdk.backend import Backend, Device
from edgesdk.diff import Tolerance, compare, diff

from conftest import BackendsPlugin


def test_compare_metrics():
    a = np.array([1.0, -2.0, 3.0], np.float32)
    same = compare("t", a, a.copy())
    assert same.ok and same.max_abs == 0 and same.cosine == pytest.approx(1.0)
    off = compare("t", a, a + np.float32([0, 0, 0.5]))
    assert not off.ok and off.max_abs == pytest.approx(0.5) and off.mean_abs == pytest.approx(0.5 / 3)
    assert compare("t", a, a + np.float32([0, 0, 0.5]), Tolerance(atol=0.5, min_cosine=0.9)).ok
    assert not compare("t", a, -a, Tolerance(atol=10, rtol=0, min_cosine=0)).cosine > 0  # opposite direction: cos = -1
    nan = compare("t", a, np.float32([1, np.nan, 3]))
    assert not nan.ok and "non-finite" in nan.note
    assert not compare("t", a, a[:2]).ok
    with pytest.raises(ValueError):
        Tolerance(atol=-1)


class Skew(Backend):
    """A 'backend' whose implementation of one named node is 5% off: ORT's CPU EP on a patched copy."""

    name = "skew"
    formats = ("onnx",)

    def __init__(self, node):
        self.node = node
        self._tmp = tempfile.TemporaryDirectory(prefix="skew-")

    def probe(self):
        return [Device(self.name, "skew:0", "cpu", "skewed CPU", None, 1)]

    def load(self, model, device, options):
        import onnx
        from onnx import helper, numpy_helper

        from edgesdk._modelfile import open_model

        m = onnx.load(model.path)
        for n in m.graph.node:
            if n.name == self.node:
                out = n.output[0]
                n.output[0] = out + "_exact"
                m.graph.initializer.append(numpy_helper.from_array(np.array(1.05, np.float32), "skew_factor"))
                m.graph.node.append(helper.make_node("Mul", [out + "_exact", "skew_factor"], [out], name="skew"))
        # Keep the node list topologically sorted: move the Mul right after the skewed node.
        nodes = list(m.graph.node)
        mul = nodes.pop()
        idx = next(i for i, n in enumerate(nodes) if n.name == self.node)
        nodes.insert(idx + 1, mul)
        del m.graph.node[:]
        m.graph.node.extend(nodes)
        path = os.path.join(self._tmp.name, f"{len(os.listdir(self._tmp.name))}.onnx")
        onnx.save(m, path)
        reg = edgesdk.get_registry()
        cpu = next(d for d in reg.devices() if d.id == "onnxruntime:cpu")
        runner = reg.backend("onnxruntime").load(open_model(path), cpu, options)
        runner.nodes = ()  # it all runs "here"
        return runner


@pytest.fixture
def skewed(monkeypatch):
    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "qnn")

    def make(node):
        reset_registry([BackendsPlugin(Skew(node))])

    yield make
    monkeypatch.undo()
    reset_registry()


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from qnn_helpers import conv_mlp

    return conv_mlp(tmp_path_factory.mktemp("diff") / "conv_mlp.onnx")


def test_first_diverging_node_is_named(skewed, mlp):
    skewed("matmul0")
    r = diff(mlp, "onnxruntime:cpu", "skew")
    assert not r.ok
    d = r.first_divergence
    assert (d.node, d.op_type, d.tensor.name) == ("matmul0", "MatMul", "m")
    assert [i.name for i in d.inputs] == ["f"] and d.inputs[0].ok  # the node's input still agrees
    assert "first diverging node" in r.summary() and "'matmul0' (MatMul)" in r.summary()
    # The same inputs on both sides and no node to find when nothing diverges.
    same = diff(mlp, "onnxruntime:cpu", "onnxruntime:cpu")
    assert same.ok and same.first_divergence is None and same.intermediates_compared == 0


def test_bisection_finds_the_same_node(skewed, mlp):
    from edgesdk.diff import _Graph, _locate_bisect
    from edgesdk._onnxgraph import load_onnx

    skewed("conv0")
    proto = load_onnx(mlp)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    d, n = _locate_bisect(proto, _Graph(proto), "onnxruntime:cpu", "skew", feeds, None, Tolerance())
    assert d.node == "conv0" and n <= 4  # log2 of the 5 candidate tensors, plus one


def test_diff_cli(skewed, mlp, tmp_path, capsys):
    from edgesdk.cli import main

    skewed("bias0")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 3, 16, 16), np.float32))
    assert main(["diff", mlp, "-b", "onnxruntime:cpu", "-b", "skew", "-i", f"x={x}", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["first_divergence"]["node"] == "bias0" and out["outputs"][0]["ok"] is False
    assert main(["diff", mlp, "-b", "onnxruntime:cpu", "-b", "skew", "--atol", "1", "--min-cosine", "0.9"]) == 0
    assert "same within tolerance" in capsys.readouterr().out
    assert main(["diff", mlp, "-b", "onnxruntime:cpu"]) == 1


# -- real: ONNX Runtime CPU EP (fp32) vs the QNN HTP simulator --------------------------------------


@pytest.fixture
def htp():
    pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install edgesdk[qnn])")
    return edgesdk.SessionOptions(backend_options={"qnn": {"context_cache": False, "input_shapes": {"x": [1, 3, 48, 192]}}})


def test_real_model_cpu_vs_htp_fp16(htp):
    """PP-OCR cls in float: HTP computes in fp16, so within default tolerance; a tight one names the first Conv."""
    from qnn_helpers import text_crops

    feeds = text_crops(1)[0]
    model = str(edgesdk.hub.path("ppocr-cls"))
    r = diff(model, "onnxruntime:cpu", "qnn", feeds, options=htp)
    assert r.ok, r.summary()
    assert r.b == "qnn:htp" and any("simulated" in n for n in r.notes)
    tight = diff(model, "onnxruntime:cpu", "qnn", feeds, options=htp, atol=1e-6, rtol=1e-5, min_cosine=1.0)
    assert not tight.ok
    first_conv = next(i for i, n in enumerate(edgesdk._onnxgraph.load_onnx(model).graph.node) if n.op_type == "Conv")
    assert tight.first_divergence.op_type == "Conv" and tight.first_divergence.index == first_conv, tight.summary()


def test_real_qdq_model_cpu_vs_htp(htp):
    """PP-OCR cls QDQ: CPU EP and HTP agree within output LSBs; strictly, bisection names where they part."""
    from qnn_helpers import cls_qdq, text_crops

    path, _ = cls_qdq()
    feeds = text_crops(1, seed=1)[0]
    r = diff(path, "onnxruntime:cpu", "qnn", feeds, options=htp)
    assert r.ok, r.summary()
    strict = diff(path, "onnxruntime:cpu", "qnn", feeds, options=htp, atol=0, rtol=0, min_cosine=1.0, locate=True)
    d = strict.first_divergence
    assert d is not None and not d.tensor.ok and d.op_type != "DequantizeLinear", strict.summary()
    assert d.tensor.name.endswith("_DequantizeLinear_Output")  # compared at QDQ unit boundaries
    assert all(i.ok for i in d.inputs)  # the boundary before it still agreed
