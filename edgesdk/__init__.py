"""edgesdk: one Session for ONNX, TFLite and GGUF models on whatever processor a device has."""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
