"""Typed options of the OpenCL backend, validated when built (unknown keys are an error)."""

from __future__ import annotations

import os
from typing import Any

import attrs

from edgesdk.backend import typed_backend_options

__all__ = ["OpenCLOptions"]


def _opt_ctx(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise ValueError(f"opencl option n_ctx must be an int >= 2 or None, got {value!r}")


def _chunk(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ValueError(f"opencl option prefill_chunk must be an int in [1, 4096], got {value!r}")


def _device(value):
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"opencl option device must be a device id such as 'opencl:0.0', got {value!r}")
    v = value.strip().lower()
    return v if v.startswith("opencl:") else f"opencl:{v}"


@attrs.frozen
class OpenCLOptions:
    """How the OpenCL backend runs a GGUF model.

    Pass as ``SessionOptions(backend_options={"opencl": {...}})`` with these keys:

    - ``n_ctx``: KV-cache length in tokens, allocated on the device at load (default:
      ``SessionOptions.n_ctx``, else the model's training context, at most :data:`DEFAULT_MAX_CTX`:
      device memory is committed up front).
    - ``device``: only this OpenCL device (``"opencl:0.0"`` or ``"0.0"``, platform.device) may run the
      model; placement refuses the others with the reason.
    - ``prefill_chunk``: prompt rows per GEMM pass (bounds the activation buffers on the device).
    - ``program_cache``: keep compiled program binaries (``cache_dir`` overrides
      ``$EDGESDK_CACHE_DIR/opencl``) so a second Session skips the OpenCL C compiler.
    """

    n_ctx: int | None = attrs.field(default=None, validator=_opt_ctx)
    device: str | None = attrs.field(default=None, converter=_device)
    prefill_chunk: int = attrs.field(default=128, validator=_chunk)
    program_cache: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    cache_dir: str | None = attrs.field(default=None, converter=lambda v: None if v is None else os.fspath(v))

    @classmethod
    def from_value(cls, value) -> "OpenCLOptions":
        """An OpenCLOptions from an OpenCLOptions, a dict of its fields, or None (defaults)."""
        return typed_backend_options(cls, value, "opencl")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


#: Default cap of the KV-cache length: unlike the CPU's lazily committed pages, device buffers are real memory.
DEFAULT_MAX_CTX = 4096
