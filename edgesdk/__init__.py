"""edgesdk: one Session for ONNX, TFLite and GGUF models on whatever processor a device has.

import edgesdk
s = edgesdk.Session("model.onnx")
out = s.run({"input": x})
print(s.placement)
"""

from . import errors
from ._errors import (
    BackendError,
    EdgeSDKError,
    InputDtypeError,
    InputError,
    InputNameError,
    InputShapeError,
    ModelFormatError,
    ModelLoadError,
    ModelNotFoundError,
    PlacementError,
    UnsupportedModelError,
)
from ._options import DEVICE_CLASSES, DeviceClass, SessionOptions
from ._plan import Placement, Refusal
from ._registry import get_registry
from ._session import Session
from .backend import Device, TensorSpec
from .hookspecs import hookimpl

__version__ = "0.1.0"


def devices():
    """Every usable device of every installed backend."""
    return get_registry().devices()


__all__ = [
    "BackendError",
    "DEVICE_CLASSES",
    "Device",
    "DeviceClass",
    "EdgeSDKError",
    "InputDtypeError",
    "InputError",
    "InputNameError",
    "InputShapeError",
    "ModelFormatError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Placement",
    "PlacementError",
    "Refusal",
    "Session",
    "SessionOptions",
    "TensorSpec",
    "UnsupportedModelError",
    "__version__",
    "devices",
    "errors",
    "get_registry",
    "hookimpl",
]
