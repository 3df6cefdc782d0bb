"""Typed exceptions. Every failure an app can see is an EdgeSDKError naming its cause.

Each class also derives from the closest builtin (ValueError, FileNotFoundError, ...) so code
written against plain Python exceptions keeps working.
"""

from __future__ import annotations

__all__ = [
    "EdgeSDKError",
    "HubError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelFormatError",
    "UnsupportedModelError",
    "InputError",
    "InputNameError",
    "InputShapeError",
    "InputDtypeError",
    "PlacementError",
    "BackendError",
    "BackendUnavailable",
    "PluginError",
    "KernelError",
    "QuantizationError",
    "GenerationError",
    "ContextLengthError",
    "StructuredOutputError",
    "MissingDependencyError",
    "PipelineError",
    "ImageLoadError",
    "ImageNotFoundError",
]


class EdgeSDKError(Exception):
    """Base of every edgesdk error."""


class ModelLoadError(EdgeSDKError, ValueError):
    """A model file could not be loaded; ``path`` and ``cause`` say which and why."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot load model {self.path!r}: {cause}")


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist or is not a readable file."""


class ModelFormatError(ModelLoadError):
    """The file is empty, truncated, has the wrong magic, or does not parse."""


class UnsupportedModelError(ModelLoadError):
    """The file parses but uses something no installed backend supports (opset, op, architecture)."""


class InputError(EdgeSDKError, ValueError):
    """Inputs given to ``Session.run`` do not match the model's signature."""


class InputNameError(InputError, KeyError):
    """An input name is unknown or a required input is missing."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InputShapeError(InputError):
    """An input has the wrong rank or a dimension that does not match the signature."""


class InputDtypeError(InputError, TypeError):
    """An input has a dtype the model does not accept and that cannot be cast safely."""


class PlacementError(EdgeSDKError, RuntimeError):
    """No backend/device satisfies the session's policy; ``refusals`` lists why each candidate refused."""

    def __init__(self, message: str, refusals=()):
        self.refusals = tuple(refusals)
        lines = [message] + [f"  - {r}" for r in self.refusals]
        super().__init__("\n".join(lines))


class BackendError(EdgeSDKError, RuntimeError):
    """A backend failed while loading or running a model; the message names the backend."""


class BackendUnavailable(EdgeSDKError):
    """Raised by a backend's probe when it cannot run here; the message is the reason shown to users."""


class PluginError(EdgeSDKError):
    """A plugin could not be registered (import error, API version mismatch, bad hook result)."""


class KernelError(EdgeSDKError, ValueError):
    """Bad arguments to a compute kernel (dtype, contiguity, shape, layout)."""


class QuantizationError(EdgeSDKError, ValueError):
    """A tensor cannot be quantized, imported or exported as asked."""


class GenerationError(EdgeSDKError, ValueError):
    """Bad generation request (sampling parameters, prompt, draft model)."""


class ContextLengthError(GenerationError):
    """The prompt plus requested tokens exceed the model's context length.

    ``room`` is how many tokens could be generated after this prompt (None when not known).
    """

    def __init__(self, message: str, room: int | None = None):
        self.room = room
        super().__init__(message)


class StructuredOutputError(GenerationError):
    """Constrained generation ended before its grammar was complete (``max_tokens``, a stop string).

    ``partial`` is the text generated so far; it is not valid output and is never returned as such.
    """

    def __init__(self, message: str, partial: str = ""):
        self.partial = partial
        super().__init__(message)


class MissingDependencyError(EdgeSDKError, ImportError):
    """An optional Python package a feature needs is not installed; ``package`` names what to pip install."""

    def __init__(self, feature: str, package: str, cause: str = ""):
        self.feature = feature
        self.package = package
        detail = f" ({cause})" if cause else ""
        super().__init__(f"{feature} needs the {package!r} package, which is not installed{detail}: pip install {package}")


class PipelineError(EdgeSDKError, RuntimeError):
    """A pipeline stage could not be built, placed or run; ``stage`` names it."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"pipeline stage {stage!r}: {message}")


class ImageLoadError(EdgeSDKError, ValueError):
    """An image file could not be read or decoded; ``path`` and ``cause`` say which and why."""

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot load image {self.path!r}: {cause}")


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image path does not exist or is not a readable file."""


class HubError(EdgeSDKError, LookupError):
    """A hub model is unknown, not installed, or fails verification; an ``hf:`` reference is malformed or
    its file cannot be had."""
