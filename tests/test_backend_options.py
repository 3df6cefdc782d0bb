"""Generic SessionOptions fields and the built-in backends' typed options (issue 18)."""

import importlib
import sys

import pytest

import edgesdk
from edgesdk._errors import PlacementError


def test_generic_fields_are_validated():
    o = edgesdk.SessionOptions(n_ctx=64, kv_dtype="f16", artifact_cache=False)
    assert (o.n_ctx, o.kv_dtype, o.artifact_cache) == (64, "f16", False)
    for bad in ({"n_ctx": 0}, {"kv_dtype": ""}, {"artifact_cache": "no"}):
        with pytest.raises((ValueError, TypeError)):
            edgesdk.SessionOptions(**bad)


def test_cpu_and_onnxruntime_options_are_typed():
    from edgesdk_backends.cpu import CpuOptions
    from edgesdk_backends.onnxruntime import OrtOptions

    assert CpuOptions.from_value({"n_ctx": 32, "kv_dtype": "q8_0"}).to_dict() == {"n_ctx": 32, "impl": None, "activations": "int8", "kv_dtype": "q8_0"}
    assert OrtOptions.from_value({"provider_options": {"a": 1}}).provider_options == {"a": "1"}
    for cls in (CpuOptions, OrtOptions):
        with pytest.raises(ValueError, match="unknown .* option"):
            cls.from_value({"no_such_option": 1})


def test_misspelt_onnxruntime_option_is_refused(identity_onnx):
    with pytest.raises(PlacementError, match="provider_option"):
        edgesdk.Session(identity_onnx, require="onnxruntime:cpu", backend_options={"onnxruntime": {"provider_option": {}}})


def test_npu_quant_is_a_deprecated_alias():
    sys.modules.pop("edgesdk.npu_quant", None)
    with pytest.warns(DeprecationWarning, match="edgesdk_backends.qnn"):
        alias = importlib.import_module("edgesdk.npu_quant")
    from edgesdk_backends.qnn import quantize_for_npu

    assert alias.quantize_for_npu is quantize_for_npu
