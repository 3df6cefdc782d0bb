"""Models and inputs shared by the QNN, NPU-quantization and diff tests."""

from __future__ import annotations

import functools
import tempfile

import numpy as np

from conftest import make_onnx

CLS_SHAPE = (1, 3, 48, 192)
_TMP = tempfile.TemporaryDirectory(prefix="edgesdk-qnn-tests-")  # lives as long as the test process


def conv_mlp(path, seed=0):
    """Conv -> Relu -> Reshape -> MatMul -> Add -> Sigmoid: the op mix of a small vision head."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "B"),
        numpy_helper.from_array((rng.standard_normal((8 * 16 * 16, 10)) * 0.02).astype(np.float32), "M"),
        numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "C"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu0"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten0"),
        helper.make_node("MatMul", ["f", "M"], ["m"], name="matmul0"),
        helper.make_node("Add", ["m", "C"], ["a"], name="bias0"),
        helper.make_node("Sigmoid", ["a"], ["y"], name="sigmoid0"),
    ]
    return make_onnx(
        path,
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializers=inits,
    )


def text_crops(n, seed=0):
    """PP-OCR cls inputs: rendered text lines cropped to 48x192, every other one upside down."""
    from PIL import Image

    from model_cases import ppocr_normalize, text_image

    words = ["EDGE SDK 2026", "hello world", "NPU 123", "Qualcomm HTP", "on-device AI"]
    out = []
    for i in range(n):
        img, box = text_image(words[(i + seed) % len(words)])
        crop = Image.fromarray(img).crop((box[0] - 5, box[1] - 5, box[2] + 5, box[3] + 5)).resize((CLS_SHAPE[3], CLS_SHAPE[2]))
        a = np.asarray(crop)
        if i % 2:
            a = a[::-1, ::-1]
        out.append({"x": ppocr_normalize(np.ascontiguousarray(a))})
    return out


@functools.cache
def cls_qdq():
    """PP-OCR cls QDQ-quantized for the HTP (uint8), and its report; built once per test process."""
    from conftest import hub_path
    from edgesdk_backends.qnn import quantize_for_npu

    out = f"{_TMP.name}/cls.qdq.onnx"
    report = quantize_for_npu(hub_path("ppocr-cls"), out, text_crops(6), eval_data=text_crops(4, seed=2))
    return out, report
